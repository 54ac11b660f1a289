//! The native triage resource: `POST /v1/models/{model}/triage` and
//! `POST /v1/triage` (the default model). Parses instances at the boundary into
//! model rows and renders the answer; the triage core (`crate::triage`) does the
//! rest — replay, predict, decide, commit.

use std::sync::Arc;

use actix_web::{post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::caller::Client;
use super::image_input::{ImageSize, ImageSource};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::model::InputSchema;
use crate::policy::Decision;
use crate::registry::{LoadedModel, RegistryError};
use crate::triage::{TriageCore, TriageRequest as CoreRequest, Triaged, Uncertainty};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"request_id": "order-1", "instances": [{"id": "nodule-1", "features": [2193.25, 22.61, 5.5, 234.6, 110.2, 3.0, 0.65, 1]}]}))]
pub struct TriageRequest {
    /// Cases to triage (at least 1, at most `server.max_instances`, 1024 by default).
    #[schema(min_items = 1)]
    pub instances: Vec<Instance>,
    /// Client's idempotency key (1 to 200 bytes of UTF-8), echoed back. Scoped to
    /// the caller and the model: the same key with the same body returns the first
    /// answer unchanged; with another body it is refused (409).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub request_id: Option<String>,
}

/// One case: exactly one of `features` (feature models) or `image` (image
/// models); which one, how many features and their names depend on the model
/// (`GET /v1/models/{model}`).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// Client's id for the case, echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Feature values: an array in the model's order, or an object `{name: value}`
    /// naming every feature exactly once. Finite, within single precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = features_schema)]
    pub features: Option<serde_json::Value>,
    /// Base64 PNG or JPEG, for image models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The patient's identifier (1 to 200 characters) in the system named by
    /// `fhir.patient_identifier_system`: a routed case keeps it for its FHIR
    /// Task's `for` (docs/fhir.md). Never echoed back, never shown to reviewers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200)]
    pub patient: Option<String>,
}

/// Longest accepted patient identifier, in characters.
const MAX_PATIENT_LEN: usize = 200;

/// Each instance's patient identifier, checked.
fn patients(instances: &[Instance]) -> Result<Vec<Option<String>>, ApiError> {
    instances
        .iter()
        .enumerate()
        .map(|(i, inst)| match &inst.patient {
            Some(p) if p.trim().is_empty() || p.chars().count() > MAX_PATIENT_LEN => {
                Err(ApiError::Unprocessable(format!(
                    "instances[{i}].patient must have 1 to {MAX_PATIENT_LEN} characters"
                )))
            }
            Some(p) => {
                super::plain_text(&format!("instances[{i}].patient"), p)?;
                Ok(Some(p.clone()))
            }
            None => Ok(None),
        })
        .collect()
}

/// Largest magnitude that is still finite once rounded to `f32`: 2^128 - 2^103,
/// exclusive (the midpoint between `f32::MAX` and infinity rounds to infinity).
const F32_LIMIT: f64 = 340_282_356_779_733_661_637_539_395_458_142_568_448.0;

/// `features`: an array of numbers, an object of numbers, or null (absent).
fn features_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{
        AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type,
    };
    let value = || {
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .exclusive_minimum(Some(-F32_LIMIT))
            .exclusive_maximum(Some(F32_LIMIT))
    };
    OneOfBuilder::new()
        .item(ArrayBuilder::new().items(value()))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(AdditionalProperties::RefOr(value().into()))),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

impl Instance {
    /// The rule across fields that the derived schema cannot state: exactly one
    /// of `features` and `image` is given (not null); the OpenAPI document adds
    /// it (see `openapi.rs`).
    pub fn exactly_one_input() -> utoipa::openapi::Schema {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        let given = |field: &str, types: Vec<Type>| {
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .required(field)
                .property(
                    field,
                    ObjectBuilder::new().schema_type(SchemaType::Array(types)),
                )
        };
        OneOfBuilder::new()
            .item(given("features", vec![Type::Array, Type::Object]))
            .item(given("image", vec![Type::String]))
            .into()
    }
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

/// Checks the instances' count and kind and turns feature instances into rows.
/// Image instances become [`ImageSource`]s, decoded under the image budget.
pub(super) fn parse_rows(
    instances: &[Instance],
    model: &LoadedModel,
    max_instances: usize,
) -> Result<Rows, ApiError> {
    crate::triage::check_batch(instances.len(), max_instances)?;
    match &model.manifest.input {
        InputSchema::Features { features } => {
            parse_feature_rows(instances, model, features).map(Rows::Ready)
        }
        InputSchema::Image {
            height,
            width,
            channels,
        } => {
            let size = ImageSize {
                height: *height,
                width: *width,
                channels: *channels,
            };
            size.check_decodable(model.name())?;
            image_sources(instances, model).map(|sources| Rows::Images(sources, size))
        }
    }
}

/// Model inputs ready to run, or images still to decode.
pub(super) enum Rows {
    Ready(Vec<f32>),
    Images(Vec<ImageSource>, ImageSize),
}

/// Each instance's `image` (base64 PNG or JPEG), still encoded.
fn image_sources(
    instances: &[Instance],
    model: &LoadedModel,
) -> Result<Vec<ImageSource>, ApiError> {
    instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            if inst.features.is_some() {
                return Err(ApiError::Unprocessable(format!(
                    "instances[{i}]: model '{}' takes images, not features: send 'image'",
                    model.name()
                )));
            }
            let text = inst.image.clone().ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "instances[{i}]: 'image' (base64 PNG or JPEG) is missing"
                ))
            })?;
            Ok(ImageSource::Base64 {
                what: format!("instances[{i}].image"),
                text,
            })
        })
        .collect()
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
/// Only a valid name of a bundle on disk is ever looked for.
pub fn served_model(state: &AppState, name: &str) -> Result<Arc<LoadedModel>, ApiError> {
    if !crate::registry::valid_model_name(name) {
        return Err(ApiError::NotFound(RegistryError::BadName.to_string()));
    }
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

/// Triages the instances; routed cases are committed to the review queue before
/// the answer leaves. A repeated `request_id` from the same caller for the same
/// model and body gets the first answer back, unchanged.
async fn triage(
    state: &AppState,
    caller: &Client,
    name: &str,
    req: TriageRequest,
) -> Result<HttpResponse, ApiError> {
    let deadline = state.triage.deadline();
    let model = served_model(state, name)?;
    let key = match &req.request_id {
        Some(rid) => {
            let canonical = serde_json::to_vec(&req.instances)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Some(TriageCore::key(
                &caller.subject,
                model.name(),
                "v1",
                rid,
                &canonical,
            )?)
        }
        None => None,
    };
    if let Some(first) = state.triage.replay(key.as_ref()).await? {
        return Ok(super::json_response(first));
    }
    let patients = patients(&req.instances)?;
    let rows = match parse_rows(&req.instances, &model, state.triage.max_instances())? {
        Rows::Ready(rows) => rows,
        Rows::Images(sources, size) => state.images.decode(sources, size, deadline).await?,
    };
    let TriageRequest {
        instances,
        request_id,
    } = req;
    let cases = instances.len();
    let body = state
        .triage
        .triage(
            CoreRequest {
                model,
                rows,
                cases,
                key,
                deadline,
                patients,
            },
            |model, triaged| render(model, instances, request_id, triaged),
        )
        .await?;
    Ok(super::json_response(body))
}

/// The `/v1` answer: one result per instance, in request order.
pub(super) fn render(
    model: &LoadedModel,
    instances: Vec<Instance>,
    request_id: Option<String>,
    triaged: &[Triaged],
) -> String {
    let results = instances
        .into_iter()
        .zip(triaged)
        .map(|(inst, t)| InstanceResult {
            id: inst.id,
            prediction: PredictionOut {
                label: model.manifest.classes[t.prediction.class()].clone(),
                class: t.prediction.class(),
                probabilities: t.prediction.probabilities.clone(),
            },
            uncertainty: t.uncertainty.clone(),
            decision: t.decision.clone(),
        })
        .collect();
    let response = TriageResponse {
        model: ModelRef {
            name: model.name().to_string(),
            version: model.version().to_string(),
        },
        policy: PolicyRef {
            name: model.policy.info().name.clone(),
            version: model.policy.info().version.clone(),
        },
        request_id,
        results,
    };
    serde_json::to_string(&response).unwrap_or_default()
}

/// Triage cases with a named model.
#[utoipa::path(
    post, path = "/v1/models/{model}/triage", tag = "triage",
    params(("model" = String, Path, description = "Model name")),
    request_body = TriageRequest,
    responses(
        (status = 200, description = "One result per instance", body = TriageResponse),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "request_id reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid instances", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded, deadline passed, or model not loaded", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/models/{model}/triage")]
pub async fn triage_named(
    state: web::Data<AppState>,
    caller: Client,
    model: web::Path<String>,
    body: web::Json<TriageRequest>,
) -> Result<HttpResponse, ApiError> {
    triage(&state, &caller, &model, body.into_inner()).await
}

/// Triage cases with the default model.
#[utoipa::path(
    post, path = "/v1/triage", tag = "triage",
    request_body = TriageRequest,
    responses(
        (status = 200, description = "One result per instance", body = TriageResponse),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No default model", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "request_id reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid instances", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded, deadline passed, or model not loaded", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/triage")]
pub async fn triage_default(
    state: web::Data<AppState>,
    caller: Client,
    body: web::Json<TriageRequest>,
) -> Result<HttpResponse, ApiError> {
    let name = state.registry.default_model().to_string();
    triage(&state, &caller, &name, body.into_inner()).await
}
