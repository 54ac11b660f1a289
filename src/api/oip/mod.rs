//! Open Inference Protocol v2 (KServe / Triton HTTP), so stock clients work
//! unchanged: health, server and model metadata, model readiness, and `infer`
//! with JSON tensors or Triton's binary tensor extension on input: features, or
//! images as encoded BYTES or UINT8 pixels. Outputs are
//! `probabilities` (FP32 [B,K]), `disagreement`, `uvc` (FP32 [B]), `human_error`
//! (FP32 [B], when the model has it), `class` (INT64 [B]), `route` and `case_id`
//! (BYTES [B]; the review-queue case, empty when automated).

pub mod codec;

use actix_web::http::header::HeaderMap;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::caller::OipClient;
use super::image_input::ImageSize;
use super::problem::{ApiError, OipError, Problem};
use super::triage::served_model;
use super::AppState;
use crate::model::InputSchema;
use crate::registry::LoadedModel;
use crate::triage::{TriageCore, TriageRequest as CoreRequest};
use codec::{
    feature_tensor, image_tensor, pick_input, requested_outputs, split_binary, ImageInput,
    InferRequest, InferResponse, TensorMetadata, HEADER_LENGTH, OUTPUTS,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    pub live: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/v2/health/live", tag = "oip", responses((status = 200, body = Live)))]
#[get("/v2/health/live")]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Live { live: true })
}

/// Readiness: the default model is loaded (503 until then).
#[utoipa::path(get, path = "/v2/health/ready", tag = "oip", responses((status = 200, body = Ready), (status = 503, body = Ready)))]
#[get("/v2/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let ready = state.registry.is_ready();
    let mut resp = if ready {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    resp.json(Ready { ready })
}

/// Server metadata.
#[utoipa::path(get, path = "/v2", tag = "oip", responses((status = 200, body = ServerMetadata)))]
#[get("/v2")]
pub async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok().json(ServerMetadata {
        name: "triaged".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: vec!["binary_tensor_data".into()],
    })
}

fn model_for(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<std::sync::Arc<LoadedModel>, ApiError> {
    let m = served_model(state, name)?;
    match version {
        Some(v) if !v.is_empty() && v != m.version() => Err(ApiError::NotFound(format!(
            "model '{name}' serves version {}, not {v}",
            m.version()
        ))),
        _ => Ok(m),
    }
}

fn metadata(state: &AppState, m: &LoadedModel) -> ModelMetadata {
    let input = match &m.manifest.input {
        InputSchema::Features { features } => TensorMetadata {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![-1, features.len() as i64],
        },
        InputSchema::Image {
            height,
            width,
            channels,
        } => TensorMetadata {
            name: "image".into(),
            datatype: "UINT8".into(),
            shape: vec![-1, *height as i64, *width as i64, *channels as i64],
        },
    };
    ModelMetadata {
        name: m.name().to_string(),
        versions: state.registry.versions_on_disk(m.name()),
        platform: "triaged_candle".into(),
        inputs: vec![input],
        outputs: OUTPUTS
            .into_iter()
            .filter(|o| o.available(&m.manifest))
            .map(|o| o.metadata(&m.manifest))
            .collect(),
    }
}

/// Model metadata: input and output tensors.
#[utoipa::path(
    get, path = "/v2/models/{model}", tag = "oip",
    params(("model" = String, Path, description = "Model name")),
    responses((status = 200, body = ModelMetadata), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
#[get("/v2/models/{model}")]
pub async fn model_metadata(
    state: web::Data<AppState>,
    _caller: OipClient,
    path: web::Path<String>,
) -> Result<HttpResponse, OipError> {
    let m = model_for(&state, &path, None)?;
    Ok(HttpResponse::Ok().json(metadata(&state, &m)))
}

#[get("/v2/models/{model}/versions/{version}")]
pub async fn model_version_metadata(
    state: web::Data<AppState>,
    _caller: OipClient,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OipError> {
    let (name, version) = path.into_inner();
    let m = model_for(&state, &name, Some(&version))?;
    Ok(HttpResponse::Ok().json(metadata(&state, &m)))
}

/// Model readiness.
#[utoipa::path(
    get, path = "/v2/models/{model}/ready", tag = "oip",
    params(("model" = String, Path, description = "Model name")),
    responses((status = 200, body = Ready), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json"))
)]
#[get("/v2/models/{model}/ready")]
pub async fn model_ready(
    state: web::Data<AppState>,
    _caller: OipClient,
    path: web::Path<String>,
) -> Result<HttpResponse, OipError> {
    model_for(&state, &path, None)?;
    Ok(HttpResponse::Ok().json(Ready { ready: true }))
}

#[get("/v2/models/{model}/versions/{version}/ready")]
pub async fn model_version_ready(
    state: web::Data<AppState>,
    _caller: OipClient,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OipError> {
    let (name, version) = path.into_inner();
    model_for(&state, &name, Some(&version))?;
    Ok(HttpResponse::Ok().json(Ready { ready: true }))
}

/// Inference. The input is the model's one tensor: `features`, FP32 [B, D] (any
/// numeric datatype is converted); or for image models `image`, BYTES [B] of
/// PNG/JPEG images (base64 strings in JSON) or UINT8 [B, H, W, C] pixels.
#[utoipa::path(
    post, path = "/v2/models/{model}/infer", tag = "oip",
    params(("model" = String, Path, description = "Model name")),
    request_body = InferRequest,
    responses(
        (status = 200, body = InferResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v2/models/{model}/infer")]
pub async fn infer(
    state: web::Data<AppState>,
    caller: OipClient,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OipError> {
    Ok(run_infer(&state, &caller, &path, None, req.headers(), body).await?)
}

#[post("/v2/models/{model}/versions/{version}/infer")]
pub async fn infer_version(
    state: web::Data<AppState>,
    caller: OipClient,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OipError> {
    let (name, version) = path.into_inner();
    Ok(run_infer(&state, &caller, &name, Some(&version), req.headers(), body).await?)
}

async fn run_infer(
    state: &AppState,
    caller: &OipClient,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let deadline = state.triage.deadline();
    let model = model_for(state, name, version)?;
    let (json, binary) = split_binary(headers.get(HEADER_LENGTH).map(|v| v.as_bytes()), &body)?;
    let request: InferRequest = serde_json::from_slice(json).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::BadRequest(format!(
            "inference request does not match the protocol: {e}"
        )),
        _ => ApiError::BadRequest(format!("inference request is not valid JSON: {e}")),
    })?;
    // Everything the request asks for is checked before anything runs or is queued.
    let outputs = requested_outputs(request.outputs.as_deref(), &model.manifest)?;
    let key = match request_id(&request)? {
        Some(rid) => Some(TriageCore::key(
            &caller.subject,
            model.name(),
            "v2",
            rid,
            &body,
        )?),
        None => None,
    };
    if let Some(first) = state.triage.replay(key.as_ref()).await? {
        return Ok(json_response(first));
    }
    let max = state.triage.max_instances();
    let (rows, cases) =
        match &model.manifest.input {
            InputSchema::Features { features } => {
                let input = pick_input(&request.inputs, binary, "features")?;
                feature_tensor(input.tensor, input.binary, features, name, max)?
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
                let input = pick_input(&request.inputs, binary, "image")?;
                match image_tensor(input.tensor, input.binary, size, name, max)? {
                    ImageInput::Pixels(rows, cases) => (rows, cases),
                    ImageInput::Encoded(images) => {
                        let cases = images.len();
                        let rows = state.images.decode(images, size, deadline).await.map_err(
                            |e| match e {
                                // v2 reports every unusable input as a bad request.
                                ApiError::Unprocessable(m) => ApiError::BadRequest(m),
                                e => e,
                            },
                        )?;
                        (rows, cases)
                    }
                }
            }
        };
    let id = request.id;
    let body = state
        .triage
        .triage(
            CoreRequest {
                model,
                rows,
                cases,
                key,
                deadline,
            },
            |model, triaged| {
                let response = InferResponse {
                    model_name: model.name().to_string(),
                    model_version: model.version().to_string(),
                    id,
                    outputs: outputs
                        .iter()
                        .map(|o| o.tensor(&model.manifest, triaged))
                        .collect(),
                };
                serde_json::to_string(&response).unwrap_or_default()
            },
        )
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::Unprocessable(m) => ApiError::BadRequest(m),
            e => e,
        })?;
    Ok(json_response(body))
}

/// The client's idempotency key: the request-level parameter `request_id` (a
/// string). The protocol's `id` only labels the response and is not a key.
fn request_id(request: &InferRequest) -> Result<Option<&str>, ApiError> {
    match request
        .parameters
        .as_ref()
        .and_then(|p| p.get("request_id"))
    {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::BadRequest(
            "parameters.request_id must be a string".into(),
        )),
    }
}

fn json_response(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}
