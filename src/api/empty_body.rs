//! The body of an action route that takes no parameters (claim, renew,
//! release, reload, retry): nothing, or the JSON object `{}`. The request must
//! still say `Content-Type: application/json` (see [`super::guards`]); anything
//! in the body but an empty object is refused, so a client that thinks it is
//! passing options learns that it is not.

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use serde::Deserialize;
use utoipa::ToSchema;

use super::problem::ApiError;

/// No parameters: an empty body or `{}`.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({}))]
pub struct EmptyBody {}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Bodies longer than this are not read: `{}` with whitespace fits many times.
const MAX_EMPTY_BODY: usize = 1024;

impl FromRequest for EmptyBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<EmptyBody, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // Belt and braces with the CSRF guard (api/guards.rs): an action is
        // JSON, even an empty one.
        let json = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Box::pin(std::future::ready(Err(ApiError::UnsupportedMediaType(
                "an action must say Content-Type: application/json, even with no body".into(),
            ))));
        }
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes.await.map_err(|e| {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            })?;
            if bytes.len() > MAX_EMPTY_BODY {
                return Err(ApiError::PayloadTooLarge {
                    limit: MAX_EMPTY_BODY,
                });
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(EmptyBody {});
            }
            // Parsed as a value first: serde would take `[]` for a struct
            // without fields, but only the empty object is `{}`.
            let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::BadRequest(format!("request body is not valid JSON: {e}"))
            })?;
            match value {
                serde_json::Value::Object(fields) if fields.is_empty() => Ok(EmptyBody {}),
                serde_json::Value::Object(fields) => Err(ApiError::Unprocessable(format!(
                    "this route takes no parameters (got '{}'): send no body or {{}}",
                    fields.keys().next().map(String::as_str).unwrap_or_default()
                ))),
                other => Err(ApiError::Unprocessable(format!(
                    "this route takes no parameters: send no body or {{}}, not {}",
                    json_kind(&other)
                ))),
            }
        })
    }
}
