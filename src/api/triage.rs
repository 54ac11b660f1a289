//! The native triage resource: `POST /v1/models/{model}/triage` and
//! `POST /v1/triage` (the default model). Parses instances at the boundary into
//! feature rows, runs them through the model's batcher, applies the policy.

use std::time::Instant;

use actix_web::{post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::image_input::{decode_base64, push_encoded, ImageSize};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::auth::{Caller, Role};
use crate::model::{InputSchema, Prediction};
use crate::policy::{Decision, Route};
use crate::registry::LoadedModel;
use crate::store::{NewCase, Recorded};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageRequest {
    /// Cases to triage (at least 1, at most `server.max_instances`).
    pub instances: Vec<Instance>,
    /// Client's idempotency key, echoed back.
    #[serde(default)]
    pub request_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// Client's id for the case, echoed back.
    #[serde(default)]
    pub id: Option<String>,
    /// Feature values: an array in the model's order, or an object `{name: value}`
    /// naming every feature exactly once.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub features: Option<serde_json::Value>,
    /// Base64 PNG or JPEG, for image models.
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

/// The policy that made every decision of a response.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyRef {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriageResponse {
    pub model: ModelRef,
    pub policy: PolicyRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// One result per instance, in request order.
    pub results: Vec<InstanceResult>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub prediction: PredictionOut,
    pub uncertainty: Uncertainty,
    pub decision: Decision,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PredictionOut {
    /// Name of the predicted class.
    pub label: String,
    /// Index of the predicted class.
    pub class: usize,
    /// Calibrated probabilities, one per class, summing to 1.
    pub probabilities: Vec<f32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Uncertainty {
    /// Predicted probability that two human experts disagree (DUP head).
    pub disagreement: f32,
    /// Predicted error of one reviewer, when the model has that head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub human_error: Option<f32>,
    /// `1 − Σ p²` of the class probabilities.
    pub uvc: f32,
    /// Entropy of the class probabilities, in nats.
    pub entropy: f32,
}

/// Turns the instances into one row-major block of model inputs (feature values,
/// or decoded image pixels), or says exactly what is wrong with which instance.
pub fn parse_rows(
    instances: &[Instance],
    model: &LoadedModel,
    max_instances: usize,
) -> Result<Vec<f32>, ApiError> {
    if instances.is_empty() {
        return Err(ApiError::Unprocessable(
            "'instances' is empty: send at least one case".into(),
        ));
    }
    if instances.len() > max_instances {
        return Err(ApiError::Unprocessable(format!(
            "{} instances in one request; at most {max_instances} are accepted",
            instances.len()
        )));
    }
    match &model.manifest.input {
        InputSchema::Features { features } => parse_feature_rows(instances, model, features),
        InputSchema::Image {
            height,
            width,
            channels,
        } => parse_image_rows(
            instances,
            model,
            ImageSize {
                height: *height,
                width: *width,
                channels: *channels,
            },
        ),
    }
}

/// Each instance's `image`: base64 → PNG/JPEG → the model's H×W RGB pixels.
fn parse_image_rows(
    instances: &[Instance],
    model: &LoadedModel,
    size: ImageSize,
) -> Result<Vec<f32>, ApiError> {
    size.check_decodable(model.name())?;
    let mut rows = Vec::with_capacity(instances.len() * size.values());
    for (i, inst) in instances.iter().enumerate() {
        if inst.features.is_some() {
            return Err(ApiError::Unprocessable(format!(
                "instances[{i}]: model '{}' takes images, not features: send 'image'",
                model.name()
            )));
        }
        let what = format!("instances[{i}].image");
        let text = inst.image.as_deref().ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "instances[{i}]: 'image' (base64 PNG or JPEG) is missing"
            ))
        })?;
        let bytes = decode_base64(text, &what)?;
        push_encoded(&bytes, size, &what, &mut rows)?;
    }
    Ok(rows)
}

fn parse_feature_rows(
    instances: &[Instance],
    model: &LoadedModel,
    names: &[String],
) -> Result<Vec<f32>, ApiError> {
    let dim = names.len();
    let mut rows = Vec::with_capacity(instances.len() * dim);
    for (i, inst) in instances.iter().enumerate() {
        if inst.image.is_some() {
            return Err(ApiError::Unprocessable(format!(
                "instances[{i}]: model '{}' takes features, not images",
                model.name()
            )));
        }
        let value = |j: usize, v: &serde_json::Value| -> Result<f32, ApiError> {
            let x = v.as_f64().map(|x| x as f32).filter(|x| x.is_finite());
            x.ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "instances[{i}].features: '{}' must be a finite number, got {v}",
                    names[j]
                ))
            })
        };
        match &inst.features {
            None => {
                return Err(ApiError::Unprocessable(format!(
                    "instances[{i}]: 'features' is missing"
                )));
            }
            Some(serde_json::Value::Array(values)) => {
                if values.len() != dim {
                    return Err(ApiError::Unprocessable(format!(
                        "instances[{i}].features has {} values; model '{}' expects {dim}: {}",
                        values.len(),
                        model.name(),
                        names.join(", ")
                    )));
                }
                for (j, v) in values.iter().enumerate() {
                    rows.push(value(j, v)?);
                }
            }
            Some(serde_json::Value::Object(map)) => {
                if let Some(unknown) = map.keys().find(|k| !names.contains(k)) {
                    return Err(ApiError::Unprocessable(format!(
                        "instances[{i}].features: unknown feature '{unknown}' (model '{}' takes: {})",
                        model.name(),
                        names.join(", ")
                    )));
                }
                for (j, name) in names.iter().enumerate() {
                    let v = map.get(name).ok_or_else(|| {
                        ApiError::Unprocessable(format!(
                            "instances[{i}].features: missing feature '{name}'"
                        ))
                    })?;
                    rows.push(value(j, v)?);
                }
            }
            Some(other) => {
                return Err(ApiError::Unprocessable(format!(
                    "instances[{i}].features must be an array or an object, got {}",
                    json_kind(other)
                )));
            }
        }
    }
    Ok(rows)
}

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

/// Looks a model up, telling "not loaded yet" (503) from "no such model" (404).
pub fn served_model(state: &AppState, name: &str) -> Result<std::sync::Arc<LoadedModel>, ApiError> {
    if let Some(m) = state.registry.get(name) {
        return Ok(m);
    }
    if state.registry.versions_on_disk(name).is_empty() {
        Err(ApiError::NotFound(format!("no model named '{name}'")))
    } else {
        Err(ApiError::Unavailable(format!(
            "model '{name}' is not loaded"
        )))
    }
}

/// Runs cases through `model` and returns predictions with the deadline applied.
pub async fn predict(
    state: &AppState,
    model: &LoadedModel,
    rows: Vec<f32>,
    cases: usize,
) -> Result<Vec<Prediction>, ApiError> {
    let deadline = Instant::now() + state.settings.batch.request_timeout();
    Ok(model.batcher.infer(rows, cases, deadline).await?)
}

/// Triages the instances; routed cases are committed to the review queue before
/// the answer leaves. A repeated `request_id` gets the first answer back, unchanged.
async fn triage(
    state: &AppState,
    name: &str,
    req: TriageRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(rid) = &req.request_id {
        if rid.is_empty() || rid.len() > 200 {
            return Err(ApiError::Unprocessable(
                "request_id must have 1 to 200 characters".into(),
            ));
        }
        if let Some(first) = state.store.find_response(rid).await? {
            return Ok(json_response(first));
        }
    }
    let model = served_model(state, name)?;
    let max = state.settings.server.max_instances;
    let (instances, rows) = parse_instances(req.instances, model.clone(), max).await?;
    let dim = model.manifest.input_dim();
    let predictions = predict(state, &model, rows.clone(), instances.len()).await?;
    let mut new_cases = Vec::new();
    let mut results = Vec::with_capacity(predictions.len());
    for (i, (inst, p)) in instances.into_iter().zip(predictions).enumerate() {
        let mut decision = model.policy.decide(&p);
        record_decision(state, &model, &decision);
        let uncertainty = Uncertainty {
            disagreement: p.disagreement,
            human_error: p.human_error,
            uvc: p.uvc(),
            entropy: p.entropy(),
        };
        if decision.route == Route::Review {
            let case = routed_case(
                &model,
                i,
                &rows[i * dim..(i + 1) * dim],
                &p,
                &decision,
                &uncertainty,
            );
            decision.case_id = Some(case.id.clone());
            new_cases.push(case);
        }
        results.push(InstanceResult {
            id: inst.id,
            prediction: PredictionOut {
                label: model.manifest.classes[p.class()].clone(),
                class: p.class(),
                probabilities: p.probabilities.clone(),
            },
            uncertainty,
            decision,
        });
    }
    let response = TriageResponse {
        model: ModelRef {
            name: model.name().to_string(),
            version: model.version().to_string(),
        },
        policy: PolicyRef {
            name: model.policy.info().name.clone(),
            version: model.policy.info().version.clone(),
        },
        request_id: req.request_id.clone(),
        results,
    };
    let body = serde_json::to_string(&response).map_err(|e| ApiError::Internal(e.to_string()))?;
    if new_cases.is_empty() && req.request_id.is_none() {
        return Ok(json_response(body));
    }
    match state
        .store
        .record(req.request_id, model.name(), new_cases, body.clone())
        .await?
    {
        Recorded::New => Ok(json_response(body)),
        Recorded::Existing(first) => Ok(json_response(first)),
    }
}

/// [`parse_rows`], handing the instances back. Decoding images is CPU work, so
/// image models parse on actix's blocking pool, not on the async worker.
async fn parse_instances(
    instances: Vec<Instance>,
    model: std::sync::Arc<LoadedModel>,
    max_instances: usize,
) -> Result<(Vec<Instance>, Vec<f32>), ApiError> {
    if matches!(model.manifest.input, InputSchema::Features { .. }) {
        let rows = parse_rows(&instances, &model, max_instances)?;
        return Ok((instances, rows));
    }
    web::block(move || parse_rows(&instances, &model, max_instances).map(|rows| (instances, rows)))
        .await
        .map_err(|e| ApiError::Internal(format!("decoding images: {e}")))?
}

fn json_response(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

/// Counts the decision in `triaged_decisions_total`.
pub fn record_decision(state: &AppState, model: &LoadedModel, d: &Decision) {
    state
        .metrics
        .decisions
        .with_label_values(&[model.name(), d.route.name(), d.reason_code])
        .inc();
}

/// The queue's record of a case routed to review.
pub fn routed_case(
    model: &LoadedModel,
    index: usize,
    input: &[f32],
    p: &Prediction,
    d: &Decision,
    u: &Uncertainty,
) -> NewCase {
    let features = match &model.manifest.input {
        InputSchema::Features { features } => features.clone(),
        InputSchema::Image { .. } => Vec::new(),
    };
    NewCase {
        id: uuid::Uuid::new_v4().to_string(),
        model: model.name().to_string(),
        model_version: model.version().to_string(),
        policy_version: model.policy.info().version.clone(),
        instance_index: index,
        input: input.to_vec(),
        feature_names: features,
        class_names: model.manifest.classes.clone(),
        model_class: p.class(),
        probabilities: p.probabilities.clone(),
        uncertainty: serde_json::to_value(u).unwrap_or_default(),
        reason: d.reason.clone(),
        reason_code: d.reason_code.to_string(),
        audit: d.audit,
        policy_route: d.policy_route.map(|r| r.name().to_string()),
        reviewers_needed: d.reviewers.max(1),
        escalate_on_disagreement: d.escalate_on_disagreement,
        // Review first where the model is expected to do worst relative to a human.
        priority: crate::policy::ThresholdScore::Triage.of(p),
    }
}

/// Triage cases with a named model.
#[utoipa::path(
    post, path = "/v1/models/{model}/triage", tag = "triage",
    params(("model" = String, Path, description = "Model name")),
    request_body = TriageRequest,
    responses(
        (status = 200, description = "One result per instance", body = TriageResponse),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid instances", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded, deadline passed, or model not loaded", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/models/{model}/triage")]
pub async fn triage_named(
    state: web::Data<AppState>,
    caller: Caller,
    model: web::Path<String>,
    body: web::Json<TriageRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    triage(&state, &model, body.into_inner()).await
}

/// Triage cases with the default model.
#[utoipa::path(
    post, path = "/v1/triage", tag = "triage",
    request_body = TriageRequest,
    responses(
        (status = 200, description = "One result per instance", body = TriageResponse),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid instances", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded, deadline passed, or model not loaded", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/triage")]
pub async fn triage_default(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<TriageRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Client])?;
    let name = state.registry.default_model().to_string();
    triage(&state, &name, body.into_inner()).await
}
