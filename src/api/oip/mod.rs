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

/// Schemas of the request documents' fields ([`codec::InferRequest`] and its
/// parts) that the derive cannot state: what the server really takes.
pub mod request_schema {
    use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};

    use super::codec::OUTPUTS;

    /// The protocol's tensor datatypes.
    pub const DATATYPES: [&str; 14] = [
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
        "FP32", "FP64", "BF16", "BYTES",
    ];

    /// Request-level `parameters`: only `request_id` is read (a string, 1 to 200
    /// bytes: the idempotency key); anything else is ignored.
    pub fn request_parameters() -> Object {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .description(Some(
                "Request parameters. `request_id` (1 to 200 bytes of UTF-8) is the client's \
                 idempotency key: the same key with the same body returns the first answer; \
                 with another body it is refused (409). Other members are ignored.",
            ))
            .property(
                "request_id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(200)),
            )
            .build()
    }

    /// A tensor's shape: dimensions >= 0.
    pub fn shape() -> utoipa::openapi::schema::Array {
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(0))
                    .maximum(Some(i64::MAX)),
            )
            .build()
    }

    pub fn datatype() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(DATATYPES))
            .build()
    }

    /// A tensor's `data`: row-major values, flat or nested arrays of numbers
    /// (booleans for BOOL, base64 strings for BYTES); null or absent when the
    /// tensor is sent as binary data.
    pub fn tensor_data() -> Object {
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![
                Type::Array,
                Type::Number,
                Type::Boolean,
                Type::String,
                Type::Null,
            ]))
            .description(Some(
                "Row-major values, flat or nested (absent when sent as binary).",
            ))
            .build()
    }

    /// An output the server can produce (`human_error` only for models with
    /// that head).
    pub fn output_name() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(OUTPUTS.map(|o| o.name())))
            .build()
    }

    /// Any JSON value (ignored by the server).
    pub fn any_value() -> Object {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .build()
    }
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
    // Ready: the default model serves and no background loop has died.
    let ready = state.registry.is_ready() && state.background.all_running();
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
    responses(
        (status = 200, body = ModelMetadata),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Model not loaded yet", body = Problem, content_type = "application/problem+json"),
    )
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

/// Model metadata of one version (404 unless it is the version in service).
#[utoipa::path(
    get, path = "/v2/models/{model}/versions/{version}", tag = "oip",
    params(
        ("model" = String, Path, description = "Model name"),
        ("version" = String, Path, description = "Model version"),
    ),
    responses(
        (status = 200, body = ModelMetadata),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model, or not the version in service", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Model not loaded yet", body = Problem, content_type = "application/problem+json"),
    )
)]
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
    responses(
        (status = 200, body = Ready),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Model not loaded yet", body = Problem, content_type = "application/problem+json"),
    )
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

/// Readiness of one version (404 unless it is the version in service).
#[utoipa::path(
    get, path = "/v2/models/{model}/versions/{version}/ready", tag = "oip",
    params(
        ("model" = String, Path, description = "Model name"),
        ("version" = String, Path, description = "Model version"),
    ),
    responses(
        (status = 200, body = Ready),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model, or not the version in service", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Model not loaded yet", body = Problem, content_type = "application/problem+json"),
    )
)]
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
        (status = 400, description = "Not JSON, not the protocol's shape, or an input the model cannot take", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model, or not the version in service", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "parameters.request_id reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "parameters.request_id is not 1 to 200 bytes", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded, deadline passed, or model not loaded", body = Problem, content_type = "application/problem+json"),
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

/// Inference with one version (404 unless it is the version in service); as
/// `POST /v2/models/{model}/infer`.
#[utoipa::path(
    post, path = "/v2/models/{model}/versions/{version}/infer", tag = "oip",
    params(
        ("model" = String, Path, description = "Model name"),
        ("version" = String, Path, description = "Model version"),
    ),
    request_body = InferRequest,
    responses(
        (status = 200, body = InferResponse),
        (status = 400, description = "Not JSON, not the protocol's shape, or an input the model cannot take", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model, or not the version in service", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "parameters.request_id reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "parameters.request_id is not 1 to 200 bytes", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded, deadline passed, or model not loaded", body = Problem, content_type = "application/problem+json"),
    )
)]
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
        // v2 reports every unusable input as a bad request.
        Some(rid) => Some(
            TriageCore::key(&caller.subject, model.name(), "v2", rid, &body)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        ),
        None => None,
    };
    if let Some(first) = state.triage.replay(key.as_ref()).await? {
        return Ok(crate::api::json_response(first));
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
                // The protocol has no place for a patient identifier.
                patients: Vec::new(),
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
    Ok(crate::api::json_response(body))
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
