//! Model resources: `GET /v1/models`, `GET /v1/models/{model}` and the admin
//! `POST /v1/admin/models/{model}/reload`.

use actix_web::{get, post, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::caller::{Admin, Reader};
use super::problem::{ApiError, Problem};
use super::triage::served_model;
use super::AppState;
use crate::model::{Head, InputSchema};
use crate::policy::audit::AuditStatus;
use crate::policy::PolicyInfo;
use crate::registry::{LoadedModel, RegistryError, ReloadOutcome};

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelDescription {
    pub name: String,
    /// The version in service.
    pub version: String,
    /// Versions on disk, oldest first.
    pub versions: Vec<String>,
    pub default: bool,
    pub classes: Vec<String>,
    #[schema(value_type = Vec<String>)]
    pub heads: Vec<Head>,
    /// `{"kind":"features","features":[…]}` or `{"kind":"image","height","width","channels"}`.
    #[schema(value_type = Object)]
    pub input: InputSchema,
    pub policy: PolicyInfo,
    /// Audits of automated cases so far, and whether the policy fell back to review-all.
    pub audit: AuditStatus,
    pub temperature: f64,
    /// Evaluation summaries recorded in the bundle, by split.
    #[schema(value_type = Object)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelDescription>,
}

fn describe(state: &AppState, m: &LoadedModel) -> ModelDescription {
    ModelDescription {
        name: m.name().to_string(),
        version: m.version().to_string(),
        versions: state.registry.versions_on_disk(m.name()),
        default: m.name() == state.registry.default_model(),
        classes: m.manifest.classes.clone(),
        heads: m.manifest.heads.clone(),
        input: m.manifest.input.clone(),
        policy: m.policy.info().clone(),
        audit: m.policy.audit_status(),
        temperature: m.manifest.temperature,
        metrics: m.manifest.metrics.clone(),
    }
}

/// Models in service.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses(
        (status = 200, body = ModelList),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client or reviewer", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/models")]
pub async fn list_models(
    state: web::Data<AppState>,
    _caller: Reader,
) -> Result<HttpResponse, ApiError> {
    let models = state
        .registry
        .list()
        .iter()
        .map(|m| describe(&state, m))
        .collect();
    Ok(HttpResponse::Ok().json(ModelList { models }))
}

/// One model: schema, classes, heads, versions, policy.
#[utoipa::path(
    get, path = "/v1/models/{model}", tag = "models",
    params(("model" = String, Path, description = "Model name")),
    responses(
        (status = 200, body = ModelDescription),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client or reviewer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Model not loaded yet", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/models/{model}")]
pub async fn get_model(
    state: web::Data<AppState>,
    _caller: Reader,
    model: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let m = served_model(&state, &model)?;
    Ok(HttpResponse::Ok().json(describe(&state, &m)))
}

/// Reload a model from disk: the newest version's model and policy swap in
/// together; in-flight requests finish on the old version; a broken bundle is
/// refused (409) and the old version keeps serving.
#[utoipa::path(
    post, path = "/v1/admin/models/{model}/reload", tag = "admin",
    params(("model" = String, Path, description = "Model name")),
    request_body = super::empty_body::EmptyBody,
    responses(
        (status = 200, body = ReloadOutcome),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Bundle refused; the old version keeps serving", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/models/{model}/reload")]
pub async fn reload_model(
    state: web::Data<AppState>,
    _caller: Admin,
    model: web::Path<String>,
    _body: super::empty_body::EmptyBody,
) -> Result<HttpResponse, ApiError> {
    let registry = state.registry.clone();
    let name = model.into_inner();
    // Loading reads files and runs candle: never on an actix worker.
    let outcome = web::block(move || registry.reload(&name))
        .await
        .map_err(|e| ApiError::Internal(format!("reload task failed: {e}")))?;
    match outcome {
        Ok(o) => Ok(HttpResponse::Ok().json(o)),
        Err(e @ (RegistryError::UnknownModel(_) | RegistryError::BadName)) => {
            Err(ApiError::NotFound(e.to_string()))
        }
        Err(e @ RegistryError::Refused { .. }) => Err(ApiError::Conflict(e.to_string())),
    }
}

/// Most outcomes of each kind one audit report may carry.
const MAX_AUDIT_REPORT: u64 = 1_000_000;

/// Outcomes of audited automated cases, reported by a reviewer tool: at least
/// one outcome, at most 1,000,000 of each kind per report.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"correct": 40, "wrong": 2}))]
pub struct AuditOutcomes {
    /// Audited cases where the model's answer was right (at most 1,000,000 per report).
    #[serde(deserialize_with = "super::integral::one")]
    #[schema(minimum = 0, maximum = 1_000_000, format = Int32)]
    pub correct: u64,
    /// Audited cases where the model's answer was wrong (at most 1,000,000 per report).
    #[serde(deserialize_with = "super::integral::one")]
    #[schema(minimum = 0, maximum = 1_000_000, format = Int32)]
    pub wrong: u64,
}

impl AuditOutcomes {
    /// The rule across the two fields that the derived schema cannot state:
    /// `correct + wrong >= 1` (the OpenAPI document adds it, see `openapi.rs`).
    pub fn at_least_one_outcome() -> utoipa::openapi::Schema {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, SchemaType, Type};
        let at_least_one = |field: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .required(field)
                .property(
                    field,
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                )
        };
        AnyOfBuilder::new()
            .item(at_least_one("correct"))
            .item(at_least_one("wrong"))
            .into()
    }
}

/// Record outcomes of audited cases judged outside triaged, for the version in
/// service. They feed the same anytime-valid monitor as resolved audit cases
/// (kept in the store, shared by daemons); when it shows the automated error
/// above α, the policy falls back to review-all until an admin clears it.
#[utoipa::path(
    post, path = "/v1/admin/models/{model}/audit", tag = "admin",
    params(("model" = String, Path, description = "Model name")),
    request_body = AuditOutcomes,
    responses(
        (status = 200, body = AuditStatus),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No outcome, more than 1,000,000 of a kind, or not integers", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Model not loaded yet", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/models/{model}/audit")]
pub async fn record_audit(
    state: web::Data<AppState>,
    _caller: Admin,
    model: web::Path<String>,
    body: web::Json<AuditOutcomes>,
) -> Result<HttpResponse, ApiError> {
    let m = served_model(&state, &model)?;
    let (correct, wrong) = (body.correct, body.wrong);
    if correct == 0 && wrong == 0 {
        return Err(ApiError::Unprocessable(
            "report at least one outcome".into(),
        ));
    }
    if correct > MAX_AUDIT_REPORT || wrong > MAX_AUDIT_REPORT {
        return Err(ApiError::Unprocessable(format!(
            "at most {MAX_AUDIT_REPORT} outcomes of each kind per report"
        )));
    }
    // O(1) statistics per report, in one store transaction.
    let status =
        crate::audit_monitor::record(&state.store, &state.metrics, &m, correct, wrong).await?;
    Ok(HttpResponse::Ok().json(status))
}

/// Why an admin clears a fall-back: what was done about it.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "recalibrated on March data; drift reviewed with the clinic"}))]
pub struct ClearFallback {
    /// Recorded in the audit log (1 to 1000 characters, no control characters).
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub reason: String,
}

/// Clear the audit monitor's fall-back after acting on it: the tests start
/// afresh (the counts stay for the record), and the clearing is audited.
#[utoipa::path(
    post, path = "/v1/admin/models/{model}/audit/clear", tag = "admin",
    params(("model" = String, Path, description = "Model name", example = "lidc-malignancy")),
    request_body = ClearFallback,
    responses(
        (status = 200, body = AuditStatus),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason given", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Model not loaded yet, or the store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/models/{model}/audit/clear")]
pub async fn clear_fallback(
    state: web::Data<AppState>,
    caller: Admin,
    model: web::Path<String>,
    body: web::Json<ClearFallback>,
) -> Result<HttpResponse, ApiError> {
    let m = served_model(&state, &model)?;
    let reason = body.reason.trim();
    super::plain_text("reason", reason)?;
    if reason.is_empty() || reason.len() > 1000 {
        return Err(ApiError::Unprocessable(
            "say what was done about the fall-back: 'reason' needs 1 to 1000 characters".into(),
        ));
    }
    let status = crate::audit_monitor::clear(
        &state.store,
        &state.metrics,
        &m,
        (&caller.subject, caller.role.name()),
        reason,
    )
    .await?;
    Ok(HttpResponse::Ok().json(status))
}
