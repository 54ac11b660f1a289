//! Bringing dead-lettered cases back to the queue (admin): one case, or many at
//! once (by id, or every dead-lettered case of a model). A case lands in
//! `dead_letter` when the leases of `store.max_lease_failures` distinct
//! reviewers lapsed on it; once an admin has looked at why, a requeue makes it
//! `pending` again with its lapse counts cleared. Every requeue is audited
//! with the reason given.

use actix_web::{post, web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::caller::Admin;
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::store::{RequeueOutcome, Requeued};

/// Most cases one bulk requeue moves.
const MAX_BULK: usize = 1000;
/// Longest reason kept in the audit log.
const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "lease lapses from a network outage; checked"}))]
pub struct RequeueRequest {
    /// Why, for the audit log (at most 1000 characters, no control characters).
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "network outage on ward 3", "model": "lidc-malignancy"}))]
pub struct BulkRequeueRequest {
    /// Why, for the audit log (at most 1000 characters, no control characters).
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub reason: String,
    /// These cases (at most 1000); without `ids`, every dead-lettered case
    /// (of `model`, when given), oldest first, 1000 at most per call.
    #[schema(max_items = 1000)]
    pub ids: Option<Vec<String>>,
    /// Only this model's cases (listed cases of another model are left as
    /// they are, answered `other_model`).
    pub model: Option<String>,
}

fn checked_reason(reason: &str) -> Result<&str, ApiError> {
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    super::plain_text("reason", reason)?;
    Ok(reason.trim())
}

/// Bring one dead-lettered case back to `pending` (admin), audited.
#[utoipa::path(post, path = "/v1/admin/reviews/{case_id}/requeue", tag = "admin",
    params(("case_id" = String, Path)), request_body = RequeueRequest,
    responses((status = 200, body = Requeued),
              (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such case", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The case is not in dead_letter", body = Problem, content_type = "application/problem+json"),
              (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "A reason too long, or an unknown field", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[post("/v1/admin/reviews/{case_id}/requeue")]
pub async fn requeue_one(
    state: web::Data<AppState>,
    caller: Admin,
    id: web::Path<String>,
    body: web::Json<RequeueRequest>,
) -> Result<HttpResponse, ApiError> {
    let reason = checked_reason(&body.reason)?;
    let ids = [id.into_inner()];
    let mut done = state
        .store
        .requeue(&ids, None, (&caller.subject, caller.role.name()), reason)
        .await?;
    let one = done.pop().expect("one outcome per id");
    match &one.outcome {
        RequeueOutcome::Requeued => Ok(HttpResponse::Ok().json(one)),
        RequeueOutcome::NotFound => Err(ApiError::NotFound(format!("no case '{}'", one.id))),
        RequeueOutcome::NotDeadLetter(status) => Err(ApiError::Conflict(format!(
            "case '{}' is {status}, not dead_letter: nothing to requeue",
            one.id
        ))),
        // No model filter is asked for one case, so none can differ.
        RequeueOutcome::OtherModel(m) => Err(ApiError::Internal(format!(
            "case '{}' of model '{m}' was filtered by model",
            one.id
        ))),
    }
}

/// Bring many dead-lettered cases back to `pending` (admin): the listed ones,
/// or every dead-lettered case (of a model), 1000 at most per call. Answers
/// what happened to each; one audit entry per case moved.
#[utoipa::path(post, path = "/v1/admin/reviews/requeue", tag = "admin",
    request_body = BulkRequeueRequest,
    responses((status = 200, body = Vec<Requeued>),
              (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Too many ids, or a reason too long", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[post("/v1/admin/reviews/requeue")]
pub async fn requeue_many(
    state: web::Data<AppState>,
    caller: Admin,
    body: web::Json<BulkRequeueRequest>,
) -> Result<HttpResponse, ApiError> {
    let reason = checked_reason(&body.reason)?;
    let model = body.model.as_deref();
    let ids = match &body.ids {
        Some(ids) if ids.len() > MAX_BULK => {
            return Err(ApiError::Unprocessable(format!(
                "at most {MAX_BULK} ids per call"
            )))
        }
        Some(ids) => ids.clone(),
        // No model is named with a control character (nor could PostgreSQL
        // be asked about a NUL): nothing matches.
        None if model.is_some_and(|m| m.chars().any(char::is_control)) => Vec::new(),
        None => state.store.dead_letter_ids(model, MAX_BULK as i64).await?,
    };
    let done = state
        .store
        .requeue(&ids, model, (&caller.subject, caller.role.name()), reason)
        .await?;
    Ok(HttpResponse::Ok().json(done))
}
