//! Every request traceable: a request id (`X-Request-Id` as the caller sent it
//! when it is a plain token of at most 128 characters, else a fresh one) is
//! returned on the answer, is a field of a span around the whole request (so
//! every log line the request causes carries it), and ends up in one access-log
//! line per request at `info` on the target `triaged::access`: method, matched
//! route (never the raw path), status, duration, request id and the caller's
//! subject. Never a token, a body or a patient identifier. `RUST_LOG` can turn
//! the access log down on its own (`triaged::access=warn`).

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web;
use tracing::Instrument;

use super::AppState;

/// The header a request id travels in, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's request id if it is usable as one: 1 to 128 characters of
/// `[A-Za-z0-9._:-]` (anything else could forge log lines or grow them).
fn accepted(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Wraps the request in its span, answers its id and logs the access line.
pub async fn trace_requests(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| accepted(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = super::method_label(req.method());
    let subject = subject_of(&req);
    let span = tracing::info_span!("request", request_id = %id, method, route = %route);
    let res = next.call(req).instrument(span.clone()).await;
    let mut res = match res {
        Ok(res) => res.map_into_boxed_body(),
        Err(e) => {
            let _enter = span.enter();
            tracing::info!(target: "triaged::access", status = "error", duration_ms = started.elapsed().as_secs_f64() * 1e3, subject = %subject, error = %e, "request");
            return Err(e);
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    let _enter = span.enter();
    tracing::info!(
        target: "triaged::access",
        status = res.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1e3,
        subject = %subject,
        "request"
    );
    Ok(res)
}

/// Who the caller says they are, for the access log: the subject of a valid
/// token (or, in open mode, the subject header), `-` when unauthenticated.
fn subject_of(req: &ServiceRequest) -> String {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return "-".into();
    };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    state
        .auth
        .authenticate(header("authorization"), header("x-triaged-subject"))
        .map(|c| c.subject.chars().take(128).collect())
        .unwrap_or_else(|_| "-".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_ids_are_taken_from_the_caller() {
        assert!(super::accepted("ops-check-7f3a"));
        assert!(super::accepted("a.b_c:d-1"));
        for bad in ["", "a b", "a\nb", "x\"y", &"a".repeat(129), "ü"] {
            assert!(!super::accepted(bad), "{bad:?}");
        }
    }
}
