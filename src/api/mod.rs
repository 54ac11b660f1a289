//! The HTTP API (docs/api.md): one resource per file — native triage (`/v1`),
//! models and admin, the Open Inference Protocol (`/v2`), operations (metrics,
//! OpenAPI) — plus the middleware every route shares: request metrics, and a
//! guarantee that every error leaves as `application/problem+json`.

pub mod caller;
pub mod image_input;
pub mod models;
pub mod oip;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod reviews;
pub mod triage;

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{to_bytes, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

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
}

/// Registers every route on an actix `App`.
pub fn configure(cfg: &mut web::ServiceConfig, max_body: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_body)
            .error_handler(move |err, _req| problem::json_error(err, max_body).into()),
    )
    .app_data(web::PayloadConfig::new(max_body))
    .service(triage::triage_default)
    .service(triage::triage_named)
    .service(models::list_models)
    .service(models::get_model)
    .service(models::reload_model)
    .service(models::record_audit)
    .service(reviews::claim)
    .service(reviews::stats)
    .service(reviews::export)
    .service(reviews::agreement)
    .service(reviews::list)
    .service(reviews::audit_log)
    .service(reviews::get_case)
    .service(reviews::case_image)
    .service(reviews::label)
    .service(reviews::renew)
    .service(reviews::release)
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
    .default_service(web::to(not_found));
}

async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// Records `triaged_http_requests_total` and the request duration by route
/// pattern (never the raw path, which would explode the label set).
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
    let method = req.method().to_string();
    let res = next.call(req).await?.map_into_boxed_body();
    if let Some(m) = metrics {
        let status = res.status().as_u16().to_string();
        m.http_requests
            .with_label_values(&[&route, &method, &status])
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
