//! The review queue over HTTP (docs/api.md): reviewers claim the next case under a
//! lease, read it, label it, renew or release it; admins list cases, read queue
//! stats, export resolved cases as a training dataset, compare the model with the
//! reviewers and each reviewer with the consensus, and read the audit log;
//! adjudicators list the tied cases with every reviewer's label and settle them.
//! Every access to a case is audited.

use actix_web::{get, post, web, HttpResponse};
use image::ImageEncoder;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::blind::{must_be_blind, CaseView, ClaimView};
use super::caller::{Adjudicator, Admin, Reviewer};
use super::empty_body::EmptyBody;
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::auth::{Caller, Role};
use crate::model::InputSchema;
use crate::store::{
    Agreement, AuditEntry, Case, CaseStatus, LabelOutcome, Lease, QueueStats, ReviewerStats,
    StoreError, TiedCase,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"label": 1}))]
pub struct LabelRequest {
    /// Class index, `0..` the number of the case's classes (an integral number
    /// such as `1.0` is accepted; a fraction is refused, 422).
    #[serde(deserialize_with = "super::integral::one")]
    #[schema(minimum = 0, maximum = 2_147_483_647, format = Int32)]
    pub label: i64,
}

/// Most cases one page of `GET /v1/reviews` lists.
const MAX_LIST_PAGE: i64 = 1000;
/// Most entries one page of `GET /v1/audit` holds.
const MAX_AUDIT_PAGE: i64 = 10_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(schema_with = case_status_schema)]
    pub status: Option<String>,
    /// Only cases of this model.
    pub model: Option<String>,
    /// Cases per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Cases to skip (default 0).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub offset: Option<i64>,
}

/// `pending`, `resolved` or `dead_letter`.
fn case_status_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("Only cases in this status."))
        .enum_values(Some(CaseStatus::ALL.map(|s| s.as_str())))
        .build()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TiedQuery {
    /// Cases at most, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ModelQuery {
    /// Model name (default: the default model).
    pub model: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries about this case.
    pub case_id: Option<String>,
    /// Entries per page, 1 to 10,000 (default 1000).
    #[param(minimum = 1, maximum = 10_000)]
    pub limit: Option<i64>,
    /// A cursor: only entries after this id (the last `id` of the previous page;
    /// default 0). A full page also says where the next starts, in a
    /// `Link: rel="next"` header.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub after: Option<i64>,
}

/// Claim the next case: highest priority first, then oldest; 204 when there is
/// nothing for you now.
#[utoipa::path(post, path = "/v1/reviews/claim", tag = "reviews", request_body = EmptyBody,
    responses((status = 200, body = ClaimView, description = "The claimed case: blind (no model suggestion, no queue counts) for a reviewer unless console.show_suggestion is on"),
              (status = 204, description = "Nothing to review now"),
              (status = 409, description = "You hold store.max_leases_per_reviewer live leases already", body = Problem, content_type = "application/problem+json"),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not a reviewer", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[post("/v1/reviews/claim")]
pub async fn claim(
    state: web::Data<AppState>,
    caller: Reviewer,
    _body: EmptyBody,
) -> Result<HttpResponse, ApiError> {
    match state
        .store
        .claim(&caller.subject, caller.role.name())
        .await?
    {
        Some(c) => {
            // A fresh claim is never of a case the caller has answered.
            let blind = must_be_blind(&caller, state.settings.console.show_suggestion, false);
            Ok(HttpResponse::Ok().json(ClaimView::of(c, blind)))
        }
        None => Ok(HttpResponse::NoContent().finish()),
    }
}

/// Read a case: reviewers only the cases they claimed (blind until they
/// answered, unless `console.show_suggestion` is on); admins any.
#[utoipa::path(get, path = "/v1/reviews/{case_id}", tag = "reviews",
    params(("case_id" = String, Path)),
    responses((status = 200, body = CaseView),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not a reviewer, or a case claimed by someone else", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such case", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/reviews/{case_id}")]
pub async fn get_case(
    state: web::Data<AppState>,
    caller: Reviewer,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let case = readable_case(&state, &caller, &id).await?;
    let show = state.settings.console.show_suggestion;
    let blind = must_be_blind(&caller, show, false)
        && !state.store.has_labeled(&id, &caller.subject).await?;
    audit(&state, &caller, "case.read", Some(&id), "").await?;
    Ok(HttpResponse::Ok().json(CaseView::of(case, blind)))
}

/// An image case as the model saw it (PNG, at the model's input size), for the
/// reviewer's screen. Same access as reading the case.
#[utoipa::path(get, path = "/v1/reviews/{case_id}/image", tag = "reviews",
    params(("case_id" = String, Path)),
    responses((status = 200, description = "The case's image", content_type = "image/png"),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not a reviewer, or a case claimed by someone else", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such case, or not an image case", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The case does not fit the served model's image", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/reviews/{case_id}/image")]
pub async fn case_image(
    state: web::Data<AppState>,
    caller: Reviewer,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let case = readable_case(&state, &caller, &id).await?;
    let Some((height, width, channels)) = served_image_size(&state, &case.model) else {
        return Err(ApiError::NotFound(format!(
            "case '{id}' has no image: model '{}' is not a served image model",
            case.model
        )));
    };
    let color = match channels {
        1 => image::ColorType::L8,
        3 => image::ColorType::Rgb8,
        c => {
            return Err(ApiError::Conflict(format!(
                "case '{id}': {c}-channel images cannot be shown as PNG"
            )))
        }
    };
    if case.input.len() != height * width * channels {
        return Err(ApiError::Conflict(format!(
            "case '{id}' holds {} values, not a {height}x{width}x{channels} image of the served model '{}'",
            case.input.len(),
            case.model
        )));
    }
    // Served pixels were decoded from u8, so this is exact.
    let pixels: Vec<u8> = case
        .input
        .iter()
        .map(|v| v.clamp(0.0, 255.0) as u8)
        .collect();
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&pixels, width as u32, height as u32, color)
        .map_err(|e| ApiError::Internal(format!("encoding case '{id}' as PNG: {e}")))?;
    audit(&state, &caller, "case.read", Some(&id), "image").await?;
    Ok(HttpResponse::Ok().content_type("image/png").body(png))
}

/// The case, if the caller may read it: reviewers only the cases they claimed,
/// admins any.
async fn readable_case(state: &AppState, caller: &Reviewer, id: &str) -> Result<Case, ApiError> {
    Ok(match caller.role {
        Role::Admin => state.store.case(id).await?,
        _ => state.store.case_for_reviewer(id, &caller.subject).await?,
    })
}

/// The input size (H, W, C) of `model`, when it is served and takes images.
fn served_image_size(state: &AppState, model: &str) -> Option<(usize, usize, usize)> {
    match state.registry.get(model)?.manifest.input {
        InputSchema::Image {
            height,
            width,
            channels,
        } => Some((height, width, channels)),
        InputSchema::Features { .. } => None,
    }
}

/// Submit your label for a claimed case. Recorded once per reviewer and case: a
/// repeat (same or different label) changes nothing and answers 409. The k-th
/// label resolves the case.
#[utoipa::path(post, path = "/v1/reviews/{case_id}/labels", tag = "reviews",
    params(("case_id" = String, Path)), request_body = LabelRequest,
    responses((status = 200, body = LabelOutcome),
              (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not a reviewer, or not your claim", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such case", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Already labeled by you, or not pending", body = Problem, content_type = "application/problem+json"),
              (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
              (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Not a label of the case's classes", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[post("/v1/reviews/{case_id}/labels")]
pub async fn label(
    state: web::Data<AppState>,
    caller: Reviewer,
    id: web::Path<String>,
    body: web::Json<LabelRequest>,
) -> Result<HttpResponse, ApiError> {
    let outcome = state
        .store
        .label(&id, (&caller.subject, caller.role.name()), body.label)
        .await?;
    if outcome.repeated {
        // Recorded once; a retry changes nothing and says so.
        return Err(ApiError::Conflict(format!(
            "you already labeled case '{id}' as {}; nothing changed",
            outcome.label
        )));
    }
    state.metrics.review_labels.inc();
    on_resolution(&state, &outcome).await;
    Ok(HttpResponse::Ok().json(outcome))
}

/// Metrics and the audit monitor learn of a case that just resolved.
async fn on_resolution(state: &AppState, outcome: &LabelOutcome) {
    let Some(r) = &outcome.resolution else {
        return;
    };
    state
        .metrics
        .review_resolution
        .observe(r.latency_ms as f64 / 1000.0);
    if let Some(d) = outcome.disagreement {
        state.metrics.review_disagreement.observe(d);
    }
    let agrees = if r.model_correct { "yes" } else { "no" };
    state
        .metrics
        .review_model_agreement
        .with_label_values(&[&r.model, agrees])
        .inc();
    // An audited automated case, judged by its reviewers' consensus (or an
    // adjudicator), tells the monitor whether automation erred.
    if r.audit {
        if let Some(m) = state.registry.get(&r.model) {
            let (right, wrong) = if r.model_correct { (1, 0) } else { (0, 1) };
            if let Err(e) =
                crate::audit_monitor::record(&state.store, &state.metrics, &m, right, wrong).await
            {
                tracing::warn!(model = %r.model, error = %e, "audit outcome not recorded");
            }
        }
    }
}

/// Resolve a case in `adjudication` — its reviewers, asked until the policy's
/// cap, held no strict majority — with your label (adjudicators and admins).
/// Recorded as an adjudication on the case, in the audit log and the export.
#[utoipa::path(post, path = "/v1/reviews/{case_id}/adjudicate", tag = "reviews",
    params(("case_id" = String, Path)), request_body = LabelRequest,
    responses((status = 200, body = LabelOutcome),
              (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an adjudicator or admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such case", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The case is not in adjudication", body = Problem, content_type = "application/problem+json"),
              (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
              (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "Not a label of the case's classes", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[post("/v1/reviews/{case_id}/adjudicate")]
pub async fn adjudicate(
    state: web::Data<AppState>,
    caller: Adjudicator,
    id: web::Path<String>,
    body: web::Json<LabelRequest>,
) -> Result<HttpResponse, ApiError> {
    let outcome = state
        .store
        .adjudicate(&id, (&caller.subject, caller.role.name()), body.label)
        .await?;
    on_resolution(&state, &outcome).await;
    Ok(HttpResponse::Ok().json(outcome))
}

/// Cases waiting for an adjudicator (status `adjudication`: their reviewers held
/// no strict majority), oldest first, each with every reviewer's label
/// (adjudicators and admins). The reviewer console's adjudicator view.
#[utoipa::path(get, path = "/v1/reviews/adjudication", tag = "reviews", params(TiedQuery),
    responses((status = 200, body = Vec<TiedCase>),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an adjudicator or admin", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "A query parameter out of range or of the wrong type", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/reviews/adjudication")]
pub async fn tied_cases(
    state: web::Data<AppState>,
    caller: Adjudicator,
    q: web::Query<TiedQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIST_PAGE).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit must be in 1..={MAX_LIST_PAGE}"
        )));
    }
    let tied = state.store.tied_cases(limit).await?;
    // The adjudicator reads every listed case and its reviewers' labels.
    let detail = format!("status=adjudication n={}", tied.len());
    audit(&state, &caller, "cases.list", None, &detail).await?;
    Ok(HttpResponse::Ok().json(tied))
}

/// Each reviewer's labels and how often they equal the consensus of resolved
/// cases (admin).
#[utoipa::path(get, path = "/v1/reviews/reviewers", tag = "reviews",
    responses((status = 200, body = Vec<ReviewerStats>),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/reviews/reviewers")]
pub async fn reviewer_stats(
    state: web::Data<AppState>,
    _caller: Admin,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.reviewer_stats().await?))
}

/// Extend your lease on a claimed case.
#[utoipa::path(post, path = "/v1/reviews/{case_id}/renew", tag = "reviews",
    params(("case_id" = String, Path)), request_body = EmptyBody,
    responses((status = 200, body = Lease),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not a reviewer", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such case", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not your claim", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[post("/v1/reviews/{case_id}/renew")]
pub async fn renew(
    state: web::Data<AppState>,
    caller: Reviewer,
    id: web::Path<String>,
    _body: EmptyBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        state
            .store
            .renew(&id, &caller.subject, caller.role.name())
            .await?,
    ))
}

/// Give a claimed case back to the queue.
#[utoipa::path(post, path = "/v1/reviews/{case_id}/release", tag = "reviews",
    params(("case_id" = String, Path)), request_body = EmptyBody,
    responses((status = 204, description = "Released"),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not a reviewer", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "No such case", body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Not your claim", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[post("/v1/reviews/{case_id}/release")]
pub async fn release(
    state: web::Data<AppState>,
    caller: Reviewer,
    id: web::Path<String>,
    _body: EmptyBody,
) -> Result<HttpResponse, ApiError> {
    state
        .store
        .release(&id, &caller.subject, caller.role.name())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// List cases (admin).
#[utoipa::path(get, path = "/v1/reviews", tag = "reviews", params(ListQuery),
    responses((status = 200, body = Vec<Case>),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "A query parameter out of range or of the wrong type", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/reviews")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Admin,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIST_PAGE).contains(&limit) || q.offset.unwrap_or(0) < 0 {
        return Err(ApiError::Unprocessable(format!(
            "limit must be in 1..={MAX_LIST_PAGE} and offset >= 0"
        )));
    }
    let status = q
        .status
        .as_deref()
        .map(str::parse::<CaseStatus>)
        .transpose()?;
    let cases = state
        .store
        .list_cases(
            status,
            q.model.as_deref().map(super::lookup_text).as_deref(),
            limit,
            q.offset.unwrap_or(0),
        )
        .await?;
    let detail = format!(
        "status={:?} model={:?} n={}",
        q.status,
        q.model,
        cases.len()
    );
    audit(&state, &caller, "cases.list", None, &detail).await?;
    Ok(HttpResponse::Ok().json(cases))
}

/// Queue depth by status and the oldest pending case's age (admin).
#[utoipa::path(get, path = "/v1/reviews/stats", tag = "reviews",
    responses((status = 200, body = QueueStats),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/reviews/stats")]
pub async fn stats(state: web::Data<AppState>, _caller: Admin) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.store.stats().await?))
}

/// Resolved cases of a model as a dataset file (safetensors, docs/formats.md) that
/// `triaged train --data` reads (admin).
#[utoipa::path(get, path = "/v1/reviews/export", tag = "reviews", params(ModelQuery),
    responses((status = 200, description = "Dataset (safetensors)", content_type = "application/octet-stream"),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 404, description = "The model has no resolved cases", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "A query parameter of the wrong type, or cases of several input schemas", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/reviews/export")]
pub async fn export(
    state: web::Data<AppState>,
    caller: Admin,
    q: web::Query<ModelQuery>,
) -> Result<HttpResponse, ApiError> {
    let model = model_or_default(&state, &q);
    // Image cases store pixels; the served model says their size.
    let image = served_image_size(&state, &model);
    let data = state
        .store
        .export(&model, image)
        .await
        .map_err(|e| match e {
            // The store's NotFound names a case; here nothing was found to export.
            StoreError::NotFound(_) => {
                ApiError::NotFound(format!("model '{model}' has no resolved cases"))
            }
            e => e.into(),
        })?;
    let bytes = crate::data::format::to_bytes(&data)
        .map_err(|e| ApiError::Internal(format!("writing the export: {e:#}")))?;
    let detail = format!("model={model} cases={}", data.len());
    audit(&state, &caller, "cases.export", None, &detail).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{model}-reviews.safetensors\""),
        ))
        .body(bytes))
}

/// Model versus reviewers on resolved cases — in shadow mode, the evidence for
/// going live (admin).
#[utoipa::path(get, path = "/v1/reviews/agreement", tag = "reviews", params(ModelQuery),
    responses((status = 200, body = Agreement),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "A query parameter of the wrong type", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/reviews/agreement")]
pub async fn agreement(
    state: web::Data<AppState>,
    _caller: Admin,
    q: web::Query<ModelQuery>,
) -> Result<HttpResponse, ApiError> {
    let model = model_or_default(&state, &q);
    Ok(HttpResponse::Ok().json(state.store.agreement(&model).await?))
}

/// The append-only audit log (admin).
#[utoipa::path(get, path = "/v1/audit", tag = "reviews", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "A query parameter out of range or of the wrong type", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/audit")]
pub async fn audit_log(
    state: web::Data<AppState>,
    _caller: Admin,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(1000);
    let after = q.after.unwrap_or(0);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) || after < 0 {
        return Err(ApiError::Unprocessable(format!(
            "limit must be in 1..={MAX_AUDIT_PAGE} and after >= 0"
        )));
    }
    let entries = state
        .store
        .audit_entries(
            q.case_id.as_deref().map(super::lookup_text).as_deref(),
            after,
            limit,
        )
        .await?;
    let mut resp = HttpResponse::Ok();
    if entries.len() as i64 == limit {
        if let Some(last) = entries.last() {
            let mut next = format!("/v1/audit?limit={limit}&after={}", last.id);
            if let Some(c) = &q.case_id {
                next.push_str("&case_id=");
                next.push_str(&percent_encode(c));
            }
            resp.insert_header(("Link", format!("<{next}>; rel=\"next\"")));
        }
    }
    Ok(resp.json(entries))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn model_or_default(state: &AppState, q: &ModelQuery) -> String {
    q.model
        .as_deref()
        .map(|m| super::lookup_text(m).into_owned())
        .unwrap_or_else(|| state.registry.default_model().to_string())
}

/// Appends to the audit log as the caller.
async fn audit(
    state: &AppState,
    caller: &Caller,
    action: &str,
    case_id: Option<&str>,
    detail: &str,
) -> Result<(), ApiError> {
    Ok(state
        .store
        .audit(&caller.subject, caller.role.name(), action, case_id, detail)
        .await?)
}
