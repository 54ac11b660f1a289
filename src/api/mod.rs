//! The HTTP API (docs/api.md): one resource per file — native triage (`/v1`),
//! models and admin, the Open Inference Protocol (`/v2`), the FHIR outbox
//! (admin), operations (metrics, OpenAPI) — plus the middleware every route
//! shares: request metrics, and a guarantee that every error leaves as
//! `application/problem+json`, and a 405 with `Allow` for a known path asked
//! with a method it does not serve; [`guards`] refuses cross-site and non-JSON
//! state-changing requests and bodies that outlive the request deadline;
//! [`request_log`] gives every request an id, a span and one access-log line. The reviewer console (`/console/`) is a page
//! over this same public API.

pub mod bench;
pub mod blind;
pub mod caller;
pub mod console;
pub mod empty_body;
pub mod fhir;
pub mod guards;
pub mod image_input;
pub mod models;
pub mod oip;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod request_log;
pub mod requeue;
pub mod reviews;
pub mod triage;

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use actix_web::body::{to_bytes, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use utoipa::OpenApi;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::registry::Registry;
use problem::{problem_response, ApiError, PROBLEM_JSON};

/// Shared by every handler.
pub struct AppState {
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    pub settings: Arc<Settings>,
    pub auth: crate::auth::Auth,
    pub store: Arc<crate::store::Store>,
    /// Replay, predict, decide, commit: shared by `/v1` and `/v2`.
    pub triage: crate::triage::TriageCore,
    /// The server-wide budget for decoding images.
    pub images: image_input::ImageBudget,
    /// Whether every background loop still runs (part of readiness).
    pub background: Arc<crate::background::Health>,
}

/// Registers every route on an actix `App`; `bench_routes` adds the bench-only
/// ones (`bench.rs`), which the OpenAPI document never lists.
pub fn configure(cfg: &mut web::ServiceConfig, max_body: usize, bench_routes: bool) {
    if bench_routes {
        bench::configure(cfg);
    }
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_body)
            .error_handler(move |err, _req| problem::json_error(err, max_body).into()),
    )
    .app_data(web::PayloadConfig::new(max_body))
    .app_data(
        web::QueryConfig::default().error_handler(|err, _req| problem::query_error(err).into()),
    )
    .service(triage::triage_default)
    .service(triage::triage_named)
    .service(models::list_models)
    .service(models::get_model)
    .service(models::reload_model)
    .service(models::record_audit)
    .service(models::clear_fallback)
    .service(reviews::claim)
    .service(reviews::stats)
    .service(reviews::tied_cases)
    .service(reviews::reviewer_stats)
    .service(reviews::export)
    .service(reviews::agreement)
    .service(reviews::list)
    .service(reviews::audit_log)
    .service(reviews::get_case)
    .service(reviews::case_image)
    .service(reviews::label)
    .service(reviews::adjudicate)
    .service(reviews::renew)
    .service(reviews::release)
    .service(requeue::requeue_many)
    .service(requeue::requeue_one)
    .service(fhir::outbox)
    .service(fhir::retry)
    .service(oip::live)
    .service(oip::ready)
    .service(oip::server_metadata)
    .service(oip::model_metadata)
    .service(oip::model_version_metadata)
    .service(oip::model_ready)
    .service(oip::model_version_ready)
    .service(oip::infer)
    .service(oip::infer_version)
    .service(ops::metrics)
    .service(ops::openapi)
    .service(console::settings)
    .service(console::me)
    .configure(console::pages)
    .default_service(web::to(not_found));
}

/// No route served the request: a 405 with `Allow` when the path is one of the
/// API's (the OpenAPI document's templates) but the method is not, else a 404.
/// A 200 whose body is JSON already serialised (a triage answer, possibly the
/// stored first answer of a replayed request).
pub(crate) fn json_response(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    let path = req.path();
    if let Some(route) = Route::most_specific(path) {
        let method = req.method().as_str();
        if !route.methods.contains(&method) {
            let allow = route.methods.join(", ");
            let mut resp = problem_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                &format!("{method} is not allowed on {path}; allowed: {allow}"),
                path.starts_with("/v2"),
            );
            if let Ok(value) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(ALLOW, value);
            }
            return resp;
        }
    }
    actix_web::ResponseError::error_response(&ApiError::NotFound(format!(
        "no route for {} {path}",
        req.method()
    )))
}

/// Whether a handler serves `method` on `path`: one of the OpenAPI document's
/// operations, or a bench route (never documented). Anything else is answered
/// 404 or 405 by [`not_found`].
pub(crate) fn serves(method: &str, path: &str) -> bool {
    path.starts_with("/bench/")
        || Route::most_specific(path).is_some_and(|r| r.methods.contains(&method))
}

/// Refuses (422) text from a client that would be stored with control
/// characters in it: a NUL cannot be stored by PostgreSQL at all (it would be a
/// 503), and the others have no business in ids, identifiers or reasons.
pub(crate) fn plain_text(what: &str, s: &str) -> Result<(), ApiError> {
    if s.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "{what} holds a control character"
        )));
    }
    Ok(())
}

/// A name or id from a query string, as a lookup in the store takes it: a NUL
/// (which PostgreSQL cannot hold, so no stored name has one) becomes U+FFFD,
/// so the lookup finds nothing, as it should, instead of failing with a 503.
pub(crate) fn lookup_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// A path template of the OpenAPI document and the methods it serves.
struct Route {
    /// `None` for a `{param}` segment (any non-empty segment).
    segments: Vec<Option<String>>,
    methods: Vec<&'static str>,
}

impl Route {
    /// Every route of the API, read once from the OpenAPI document (which lists
    /// every handler, so the two cannot drift apart).
    fn all() -> &'static [Route] {
        static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
            openapi::ApiDoc::openapi()
                .paths
                .paths
                .iter()
                .map(|(path, item)| Route {
                    segments: path
                        .split('/')
                        .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_string()))
                        .collect(),
                    methods: [
                        ("GET", item.get.is_some()),
                        ("HEAD", item.head.is_some()),
                        ("POST", item.post.is_some()),
                        ("PUT", item.put.is_some()),
                        ("PATCH", item.patch.is_some()),
                        ("DELETE", item.delete.is_some()),
                        ("OPTIONS", item.options.is_some()),
                        ("TRACE", item.trace.is_some()),
                    ]
                    .into_iter()
                    .filter_map(|(m, served)| served.then_some(m))
                    .collect(),
                })
                .collect()
        });
        &ROUTES
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/');
        self.segments.iter().all(|seg| match (seg, parts.next()) {
            (Some(literal), Some(part)) => literal == part,
            (None, Some(part)) => !part.is_empty(),
            (_, None) => false,
        }) && parts.next().is_none()
    }

    /// The route `path` names: of the templates it matches, the one with a
    /// literal segment where the others have a parameter (`/v1/reviews/claim`
    /// over `/v1/reviews/{case_id}`), as the router prefers it.
    fn most_specific(path: &str) -> Option<&'static Route> {
        Route::all()
            .iter()
            .filter(|r| r.matches(path))
            .max_by_key(|r| r.segments.iter().map(Option::is_some).collect::<Vec<_>>())
    }
}

/// Integer fields that also take an integral number written as a float (`377.0`),
/// as JSON Schema's `integer` does; a fractional or out-of-range number is a
/// data error (422 on `/v1`). `#[serde(deserialize_with = "…::integral::one")]`
/// or `"…::integral::many"` for a `Vec`.
pub mod integral {
    use serde::de::{Error, Unexpected};
    use serde::{Deserialize, Deserializer};
    use serde_json::Number;

    fn convert<T: TryFrom<i128>, E: Error>(n: &Number) -> Result<T, E> {
        let wide = match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i128::from(i),
            (None, Some(u), _) => i128::from(u),
            (None, None, Some(f)) if f.fract() == 0.0 => f as i128, // saturates
            (None, None, Some(f)) => {
                return Err(E::invalid_value(Unexpected::Float(f), &"an integer"))
            }
            (None, None, None) => {
                return Err(E::invalid_value(
                    Unexpected::Other("a number"),
                    &"an integer",
                ))
            }
        };
        T::try_from(wide).map_err(|_| {
            E::invalid_value(
                Unexpected::Other(&format!("the number {n}")),
                &"an integer in the field's range",
            )
        })
    }

    /// One integer.
    pub fn one<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
        convert(&Number::deserialize(d)?)
    }

    /// An array of integers.
    pub fn many<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Vec<T>, D::Error> {
        Vec::<Number>::deserialize(d)?.iter().map(convert).collect()
    }

    #[cfg(test)]
    mod tests {
        #[derive(Debug, serde::Deserialize)]
        struct Label {
            #[serde(deserialize_with = "super::one")]
            label: i64,
        }

        #[derive(Debug, serde::Deserialize)]
        struct Shape {
            #[serde(deserialize_with = "super::many")]
            shape: Vec<u8>,
        }

        fn label(json: &str) -> Result<i64, serde_json::Error> {
            serde_json::from_str::<Label>(json).map(|l| l.label)
        }

        #[test]
        fn integral_numbers_are_integers() {
            assert_eq!(label(r#"{"label": 3}"#).unwrap(), 3);
            assert_eq!(label(r#"{"label": -2}"#).unwrap(), -2);
            assert_eq!(label(r#"{"label": 377.0}"#).unwrap(), 377);
            assert_eq!(label(r#"{"label": -1e3}"#).unwrap(), -1000);
            let shape: Shape = serde_json::from_str(r#"{"shape": [1, 8.0]}"#).unwrap();
            assert_eq!(shape.shape, vec![1, 8]);
        }

        #[test]
        fn fractions_and_out_of_range_numbers_are_data_errors() {
            for bad in [
                r#"{"label": 0.5}"#,
                r#"{"label": 1e30}"#,
                r#"{"label": 9223372036854775808}"#,
                r#"{"label": "1"}"#,
                r#"{"label": null}"#,
            ] {
                let e = label(bad).unwrap_err();
                assert_eq!(
                    e.classify(),
                    serde_json::error::Category::Data,
                    "{bad}: {e}"
                );
            }
            assert!(serde_json::from_str::<Shape>(r#"{"shape": [256]}"#).is_err());
            assert!(serde_json::from_str::<Shape>(r#"{"shape": [-1]}"#).is_err());
        }
    }
}

/// The `method` label of the HTTP metrics: one of the standard methods, else
/// `other`. Every label value comes from a closed set: a client that invents
/// method names (or sends 4 KB ones) must not grow the registry.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::TRACE => "TRACE",
        M::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Records `triaged_http_requests_total` and the request duration by route
/// pattern (never the raw path, which would explode the label set; an
/// unmatched request is `unmatched`) and by a closed set of methods.
pub async fn record_metrics(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let res = next.call(req).await?.map_into_boxed_body();
    if let Some(m) = metrics {
        let status = res.status().as_u16().to_string();
        m.http_requests
            .with_label_values(&[&route, method, &status])
            .inc();
        m.http_request_duration
            .with_label_values(&[&route])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}

/// Rewrites any error response that is not JSON (actix's own plain-text answers,
/// e.g. a path extractor failure) into a problem document, keeping its status.
pub async fn ensure_problem_json(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?;
    let status = res.status();
    // Our own answers are JSON already (problems, or a structured body such as
    // readiness `{"ready": false}`); only actix's plain-text errors are rewritten.
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON) || v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return Ok(res.map_into_boxed_body());
    }
    let oip = res.request().path().starts_with("/v2");
    let (req, res) = res.into_parts();
    let text = to_bytes(res.into_body()).await.unwrap_or_default();
    let detail = match std::str::from_utf8(&text) {
        Ok(t) if !t.trim().is_empty() && t.len() < 500 => t.trim().to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let slug = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::NOT_FOUND => "not-found",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let resp: HttpResponse = problem_response(status, slug, &detail, oip);
    Ok(ServiceResponse::new(req, resp))
}
