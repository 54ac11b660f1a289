//! Errors of the HTTP layer, mapped to statuses in this one place and written as
//! `application/problem+json` (RFC 9457) with a precise `detail`. Bad input is
//! always a 4xx; nothing the client sends can produce a 500.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::batch::InferError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON or does not have the request's shape.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed JSON whose values are unusable (wrong feature count, NaN, …).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the server's state (e.g. a bundle refused on reload).
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The server cannot take the work now (queue full, deadline, not ready).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unprocessable(_) => "invalid-input",
            ApiError::NotFound(_) => "not-found",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What exactly was wrong.
    pub detail: String,
    /// The same text, on Open Inference Protocol (`/v2`) routes: the member
    /// the protocol's clients read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        problem_response(self.status_code(), self.slug(), &self.to_string(), false)
    }
}

/// Writes a problem document. `with_error_field` adds `"error": detail`, the
/// member Open Inference Protocol clients read.
pub fn problem_response(
    status: StatusCode,
    slug: &str,
    detail: &str,
    with_error_field: bool,
) -> HttpResponse {
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        tracing::error!(status = status.as_u16(), detail, "request failed");
    }
    let mut body = serde_json::json!({
        "type": format!("urn:triaged:problem:{slug}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if with_error_field {
        body["error"] = serde_json::Value::String(detail.to_string());
    }
    let mut resp = HttpResponse::build(status);
    resp.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
    if status == StatusCode::UNAUTHORIZED {
        resp.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.insert_header((
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        ));
    }
    resp.body(body.to_string())
}

/// An [`ApiError`] on an Open Inference Protocol route: the same problem document
/// plus the protocol's `error` member.
#[derive(Debug)]
pub struct OipError(pub ApiError);

impl From<ApiError> for OipError {
    fn from(e: ApiError) -> Self {
        OipError(e)
    }
}

impl std::fmt::Display for OipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for OipError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        problem_response(
            self.0.status_code(),
            self.0.slug(),
            &self.0.to_string(),
            true,
        )
    }
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        match e {
            InferError::QueueFull(_) | InferError::DeadlineExceeded(_) => {
                ApiError::Unavailable(e.to_string())
            }
            InferError::Failed(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// Maps actix's JSON extractor failures to problems (set on `JsonConfig`).
pub fn json_error(err: actix_web::error::JsonPayloadError, limit: usize) -> ApiError {
    use actix_web::error::JsonPayloadError as J;
    match err {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => ApiError::PayloadTooLarge { limit },
        J::ContentType => {
            ApiError::UnsupportedMediaType("the body must be application/json".into())
        }
        J::Deserialize(e) => match e.classify() {
            serde_json::error::Category::Data => {
                ApiError::Unprocessable(format!("request body does not match the schema: {e}"))
            }
            _ => ApiError::BadRequest(format!("request body is not valid JSON: {e}")),
        },
        J::Payload(e) => match e {
            actix_web::error::PayloadError::Overflow => ApiError::PayloadTooLarge { limit },
            other => ApiError::BadRequest(format!("could not read the request body: {other}")),
        },
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// Maps actix's query-string extractor failures (set on `QueryConfig`) to a 422:
/// a parameter of the wrong type or out of its type's range, or one given twice.
pub fn query_error(err: actix_web::error::QueryPayloadError) -> ApiError {
    use actix_web::error::QueryPayloadError as Q;
    match err {
        Q::Deserialize(e) => {
            ApiError::Unprocessable(format!("the query string does not match the schema: {e}"))
        }
        other => ApiError::Unprocessable(format!("the query string is not usable: {other}")),
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as A;
        match e {
            A::Unauthenticated(m) => ApiError::Unauthorized(m),
            A::Forbidden(m) => ApiError::Forbidden(m),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::NotFound(_) => ApiError::NotFound(e.to_string()),
            S::Conflict(_) => ApiError::Conflict(e.to_string()),
            S::Forbidden(_) => ApiError::Forbidden(e.to_string()),
            S::Invalid(_) => ApiError::Unprocessable(e.to_string()),
            S::Database(_) | S::Migrate(_) | S::Deadline(_) | S::Unavailable(_) | S::WriterGone => {
                // The database's own text stays in the log: it can name tables,
                // files and hosts. The client learns the kind of failure.
                tracing::error!(error = %e, "store failure");
                ApiError::Unavailable(format!(
                    "the review queue is unavailable: {}; retry later",
                    e.public_reason()
                ))
            }
        }
    }
}

impl From<crate::triage::TriageError> for ApiError {
    fn from(e: crate::triage::TriageError) -> Self {
        use crate::triage::TriageError as T;
        match e {
            T::Invalid(_) | T::NonFinite { .. } => ApiError::Unprocessable(e.to_string()),
            T::Infer(e) => e.into(),
            T::Store(e) => e.into(),
        }
    }
}
