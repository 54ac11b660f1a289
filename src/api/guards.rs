//! Checks every request passes before any handler sees it, as actix
//! middleware:
//!
//! - [`same_origin_json`]: a state-changing request (POST, PUT, PATCH or
//!   DELETE) must say `Content-Type: application/json` and may not come
//!   from another origin. A browser lets any page send a cross-site POST with no
//!   body or a form's content type without asking the server first (no CORS
//!   preflight); such a request never reaches a handler here, so a loopback
//!   server in open mode cannot be driven by a page the clinician has open. The
//!   one exception is inference over the Open Inference Protocol, whose stock
//!   clients (tritonclient) send no `Content-Type` and may send binary tensors:
//!   there only the form content types are refused, and foreign origins as
//!   everywhere.
//!   Paths are judged as the router matches them (percent-decoded), and a path
//!   with a NUL names nothing (404; PostgreSQL cannot even be asked about it).
//! - [`bounded_body`]: the request body must arrive within the request deadline
//!   (`batch.request_timeout_ms`), measured from when the head arrived: a body
//!   that never ends, or trickles a byte every few seconds, gets a 408 within
//!   the deadline, and nothing waits on it any more. actix-http still drains
//!   the rest of a chunked body from a client that keeps sending (the
//!   `Connection: close` asked for here is not honoured then), so a client
//!   trickling forever keeps its socket: bound request bodies at the proxy too
//!   (nginx `client_body_timeout`), as SECURITY.md says.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::{self, Bytes};
use actix_web::HttpMessage;
use futures_core::Stream;

use super::problem::problem_response;
use super::AppState;

/// Whether `method` can change state. Other methods (the safe ones, and any a
/// browser cannot send cross-site without a preflight) change nothing here:
/// they are answered 404/405 or read-only.
fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The OIP inference routes, which take bodies without a `Content-Type`.
fn is_oip_infer(path: &str) -> bool {
    path.starts_with("/v2/models/") && path.ends_with("/infer")
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Content types a browser sends cross-site without a CORS preflight.
fn is_form_type(media: &str) -> bool {
    matches!(
        media,
        "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
    )
}

/// Why a state-changing request is refused, if it is: `(status, slug, detail)`.
fn refusal(
    method: &Method,
    path: &str,
    origin: Option<&str>,
    host: &str,
    content_type: Option<&str>,
) -> Option<(StatusCode, &'static str, String)> {
    if !changes_state(method) {
        return None;
    }
    if let Some(origin) = origin {
        // `Origin` is `scheme://host[:port]` (or `null`); this server's own is
        // whatever the client addressed it as, the `Host` header.
        let authority = origin.split_once("://").map(|(_, a)| a);
        if authority.is_none_or(|a| !a.eq_ignore_ascii_case(host)) {
            return Some((
                StatusCode::FORBIDDEN,
                "cross-origin",
                format!(
                    "a {method} from another origin ({}) is refused: state-changing requests must come from this server's own pages or from a non-browser client",
                    origin.chars().take(200).collect::<String>()
                ),
            ));
        }
    }
    let media = content_type.map(media_type);
    let ok = match media.as_deref() {
        Some("application/json") => true,
        Some(m) if is_oip_infer(path) => !is_form_type(m),
        None => is_oip_infer(path),
        Some(_) => false,
    };
    if ok {
        return None;
    }
    Some((
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        format!(
            "a {method} must say Content-Type: application/json (got {}), even with no body: a browser sends other types cross-site without asking",
            media.as_deref().unwrap_or("none")
        ),
    ))
}

/// Refuses cross-origin and non-JSON state-changing requests (see the module
/// header) before a handler runs.
pub async fn same_origin_json(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
    };
    // The path as the router matches it: percent-decoded (`/v1/reviews/%63laim`
    // is the claim route), so the guard and the router never disagree.
    let path = req.match_info().as_str().to_string();
    if path.contains('\0') {
        // No case, model or version is named with a NUL (and PostgreSQL could
        // not even be asked): nothing is there.
        let resp = problem_response(
            StatusCode::NOT_FOUND,
            "not-found",
            "nothing is named with a NUL character",
            path.starts_with("/v2"),
        );
        return Ok(req.into_response(resp));
    }
    // A method the path does not serve is answered 405 (or 404) by the router.
    if !super::serves(req.method().as_str(), &path) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let host = req.connection_info().host().to_string();
    if let Some((status, slug, detail)) = refusal(
        req.method(),
        &path,
        header(header::ORIGIN),
        &host,
        header(header::CONTENT_TYPE),
    ) {
        let oip = req.path().starts_with("/v2");
        let resp = problem_response(status, slug, &detail, oip);
        return Ok(req.into_response(resp));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Ends the request with a 408 (and closes its connection) when its body has
/// not fully arrived within the request deadline.
pub async fn bounded_body(
    mut req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(deadline) = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.settings.batch.request_timeout())
    else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let late = Arc::new(AtomicBool::new(false));
    let inner = req.take_payload();
    req.set_payload(Payload::from(Box::pin(DeadlinePayload {
        inner,
        timer: Box::pin(tokio::time::sleep(deadline)),
        deadline,
        late: late.clone(),
    })
        as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>));
    let res = next.call(req).await?;
    if !late.load(Ordering::Relaxed) {
        return Ok(res.map_into_boxed_body());
    }
    // Whatever the handler made of the failed read, the answer is a 408, and
    // no handler waits for the rest of the body (actix may still drain it).
    let oip = res.request().path().starts_with("/v2");
    let mut resp = problem_response(
        StatusCode::REQUEST_TIMEOUT,
        "request-timeout",
        &format!(
            "the request body did not arrive within the request deadline ({} ms)",
            deadline.as_millis()
        ),
        oip,
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let (req, _) = res.into_parts();
    Ok(ServiceResponse::new(req, resp))
}

/// A request body that fails once its deadline passes.
struct DeadlinePayload {
    inner: Payload,
    timer: Pin<Box<tokio::time::Sleep>>,
    deadline: Duration,
    late: Arc<AtomicBool>,
}

impl Stream for DeadlinePayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.late.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.late.store(true, Ordering::Relaxed);
            let e = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the request body did not arrive within {} ms",
                    self.deadline.as_millis()
                ),
            );
            return Poll::Ready(Some(Err(PayloadError::Io(e))));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(method: Method, path: &str, origin: Option<&str>, ct: Option<&str>) -> Option<u16> {
        refusal(&method, path, origin, "127.0.0.1:8080", ct).map(|(s, _, _)| s.as_u16())
    }

    #[test]
    fn state_changing_requests_must_be_same_origin_json() {
        let json = Some("application/json; charset=utf-8");
        assert_eq!(
            refused(Method::GET, "/v1/reviews/x", Some("http://evil"), None),
            None
        );
        assert_eq!(refused(Method::TRACE, "/metrics", None, None), None);
        assert_eq!(refused(Method::POST, "/v1/reviews/claim", None, json), None);
        assert_eq!(
            refused(
                Method::POST,
                "/v1/reviews/claim",
                Some("http://127.0.0.1:8080"),
                json
            ),
            None
        );
        assert_eq!(
            refused(Method::POST, "/v1/reviews/claim", None, None),
            Some(415)
        );
        assert_eq!(
            refused(Method::POST, "/v1/reviews/claim", None, Some("text/plain")),
            Some(415)
        );
        assert_eq!(
            refused(
                Method::POST,
                "/v1/reviews/claim",
                Some("http://evil.example"),
                json
            ),
            Some(403)
        );
        assert_eq!(
            refused(Method::DELETE, "/v1/x", Some("null"), json),
            Some(403)
        );
        assert_eq!(
            refused(
                Method::POST,
                "/v1/reviews/claim",
                Some("http://127.0.0.1:9999"),
                json
            ),
            Some(403)
        );
    }

    #[test]
    fn oip_inference_takes_stock_clients_but_not_forms() {
        let infer = "/v2/models/m/infer";
        assert_eq!(refused(Method::POST, infer, None, None), None);
        assert_eq!(
            refused(Method::POST, infer, None, Some("application/octet-stream")),
            None
        );
        assert_eq!(
            refused(Method::POST, infer, None, Some("text/plain")),
            Some(415)
        );
        assert_eq!(
            refused(
                Method::POST,
                infer,
                Some("http://evil"),
                Some("application/json")
            ),
            Some(403)
        );
        assert_eq!(
            refused(Method::POST, "/v2/models/m/load", None, None),
            Some(415)
        );
    }
}
