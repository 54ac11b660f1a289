//! Open Inference Protocol v2 (KServe / Triton HTTP), so stock clients work
//! unchanged: health, server and model metadata, model readiness, and `infer`
//! with JSON tensors or Triton's binary tensor extension on input: features, or
//! images as encoded BYTES or UINT8 pixels. Outputs are
//! `probabilities` (FP32 [B,K]), `disagreement`, `uvc` (FP32 [B]), `human_error`
//! (FP32 [B], when the model has it), `class` (INT64 [B]), `route` and `case_id`
//! (BYTES [B]; the review-queue case, empty when automated).

use actix_web::http::header::HeaderMap;
use actix_web::{get, post, web, FromRequest, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::image_input::{
    check_pixels, decode_base64, push_encoded, split_bytes_elements, ImageSize,
};
use super::problem::{ApiError, OipError, Problem};
use super::triage::{predict, record_decision, routed_case, served_model, Uncertainty};
use super::AppState;
use crate::auth::{Caller, Role};
use crate::model::{Head, InputSchema};
use crate::policy::Route;
use crate::registry::LoadedModel;

/// Triton's binary extension: the JSON header's length when binary data follows.
const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Option<serde_json::Value>,
    pub inputs: Vec<InputTensor>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Row-major values, flat or nested (absent when sent as binary).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<usize>,
    /// Row-major values: numbers, or strings for BYTES.
    #[schema(schema_with = any_values)]
    pub data: serde_json::Value,
}

/// Schema of a tensor's `data`: an array of any JSON values.
fn any_values() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType};
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(SchemaType::AnyValue))
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

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

/// The caller, with authentication failures answered in the protocol's error
/// shape like every other `/v2` problem.
pub struct OipCaller(Caller);

impl FromRequest for OipCaller {
    type Error = OipError;
    type Future = std::future::Ready<Result<OipCaller, OipError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Caller::of(req).map(OipCaller).map_err(OipError))
    }
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
    let k = m.manifest.classes.len() as i64;
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
    let mut outputs = vec![
        TensorMetadata {
            name: "probabilities".into(),
            datatype: "FP32".into(),
            shape: vec![-1, k],
        },
        TensorMetadata {
            name: "disagreement".into(),
            datatype: "FP32".into(),
            shape: vec![-1],
        },
        TensorMetadata {
            name: "uvc".into(),
            datatype: "FP32".into(),
            shape: vec![-1],
        },
    ];
    if m.manifest.heads.contains(&Head::HumanError) {
        outputs.push(TensorMetadata {
            name: "human_error".into(),
            datatype: "FP32".into(),
            shape: vec![-1],
        });
    }
    outputs.push(TensorMetadata {
        name: "class".into(),
        datatype: "INT64".into(),
        shape: vec![-1],
    });
    for name in ["route", "case_id"] {
        outputs.push(TensorMetadata {
            name: name.into(),
            datatype: "BYTES".into(),
            shape: vec![-1],
        });
    }
    ModelMetadata {
        name: m.name().to_string(),
        versions: state.registry.versions_on_disk(m.name()),
        platform: "triaged_candle".into(),
        inputs: vec![input],
        outputs,
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
    caller: OipCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, OipError> {
    caller.0.require(&[Role::Client])?;
    let m = model_for(&state, &path, None)?;
    Ok(HttpResponse::Ok().json(metadata(&state, &m)))
}

#[get("/v2/models/{model}/versions/{version}")]
pub async fn model_version_metadata(
    state: web::Data<AppState>,
    caller: OipCaller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OipError> {
    caller.0.require(&[Role::Client])?;
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
    caller: OipCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, OipError> {
    caller.0.require(&[Role::Client])?;
    model_for(&state, &path, None)?;
    Ok(HttpResponse::Ok().json(Ready { ready: true }))
}

#[get("/v2/models/{model}/versions/{version}/ready")]
pub async fn model_version_ready(
    state: web::Data<AppState>,
    caller: OipCaller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OipError> {
    caller.0.require(&[Role::Client])?;
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
    caller: OipCaller,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OipError> {
    caller.0.require(&[Role::Client])?;
    Ok(run_infer(&state, &path, None, req.headers(), body).await?)
}

#[post("/v2/models/{model}/versions/{version}/infer")]
pub async fn infer_version(
    state: web::Data<AppState>,
    caller: OipCaller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OipError> {
    caller.0.require(&[Role::Client])?;
    let (name, version) = path.into_inner();
    Ok(run_infer(&state, &name, Some(&version), req.headers(), body).await?)
}

async fn run_infer(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let model = model_for(state, name, version)?;
    let (json, binary) = split_binary(headers, &body)?;
    let mut request: InferRequest =
        serde_json::from_slice(json).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::BadRequest(format!(
                "inference request does not match the protocol: {e}"
            )),
            _ => ApiError::BadRequest(format!("inference request is not valid JSON: {e}")),
        })?;
    let max = state.settings.server.max_instances;
    let (values, cases) = match &model.manifest.input {
        InputSchema::Features { features } => {
            let input = pick_input(&request.inputs, "features")?;
            feature_tensor(input, binary, features, name, max)?
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
            // Decoding images is CPU work: on actix's blocking pool, not the
            // async worker; the request comes back for the output selection.
            let (offset, name, body) = (json.len(), name.to_string(), body.clone());
            let (back, parsed) = web::block(move || {
                let parsed = pick_input(&request.inputs, "image")
                    .and_then(|input| image_tensor(input, &body[offset..], size, &name, max));
                (request, parsed)
            })
            .await
            .map_err(|e| ApiError::Internal(format!("decoding images: {e}")))?;
            request = back;
            parsed.map_err(|e| match e {
                // v2 reports every unusable input as a bad request.
                ApiError::Unprocessable(m) => ApiError::BadRequest(m),
                e => e,
            })?
        }
    };
    let dim = model.manifest.input_dim();
    let predictions = predict(state, &model, values.clone(), cases).await?;
    let mut decisions: Vec<_> = predictions.iter().map(|p| model.policy.decide(p)).collect();
    let mut new_cases = Vec::new();
    for (i, (p, d)) in predictions.iter().zip(decisions.iter_mut()).enumerate() {
        record_decision(state, &model, d);
        if d.route == Route::Review {
            let u = Uncertainty {
                disagreement: p.disagreement,
                human_error: p.human_error,
                uvc: p.uvc(),
                entropy: p.entropy(),
            };
            let case = routed_case(&model, i, &values[i * dim..(i + 1) * dim], p, d, &u);
            d.case_id = Some(case.id.clone());
            new_cases.push(case);
        }
    }
    if !new_cases.is_empty() {
        // Committed before the answer leaves, as on /v1.
        state
            .store
            .record(None, model.name(), new_cases, String::new())
            .await?;
    }
    let k = model.manifest.classes.len();
    let mut outputs = vec![
        OutputTensor {
            name: "probabilities".into(),
            datatype: "FP32".into(),
            shape: vec![cases, k],
            data: predictions
                .iter()
                .flat_map(|p| p.probabilities.iter().copied())
                .collect(),
        },
        OutputTensor {
            name: "disagreement".into(),
            datatype: "FP32".into(),
            shape: vec![cases],
            data: predictions.iter().map(|p| p.disagreement).collect(),
        },
        OutputTensor {
            name: "uvc".into(),
            datatype: "FP32".into(),
            shape: vec![cases],
            data: predictions.iter().map(|p| p.uvc()).collect(),
        },
    ];
    if model.manifest.heads.contains(&Head::HumanError) {
        outputs.push(OutputTensor {
            name: "human_error".into(),
            datatype: "FP32".into(),
            shape: vec![cases],
            data: predictions
                .iter()
                .map(|p| p.human_error.unwrap_or(f32::NAN))
                .collect(),
        });
    }
    outputs.push(OutputTensor {
        name: "class".into(),
        datatype: "INT64".into(),
        shape: vec![cases],
        data: predictions.iter().map(|p| p.class() as i64).collect(),
    });
    outputs.push(OutputTensor {
        name: "route".into(),
        datatype: "BYTES".into(),
        shape: vec![cases],
        data: decisions.iter().map(|d| d.route.name()).collect(),
    });
    outputs.push(OutputTensor {
        name: "case_id".into(),
        datatype: "BYTES".into(),
        shape: vec![cases],
        data: decisions
            .iter()
            .map(|d| d.case_id.clone().unwrap_or_default())
            .collect(),
    });
    if let Some(wanted) = &request.outputs {
        if let Some(unknown) = wanted
            .iter()
            .find(|w| !outputs.iter().any(|o| o.name == w.name))
        {
            return Err(ApiError::BadRequest(format!(
                "unknown output '{}'",
                unknown.name
            )));
        }
        outputs.retain(|o| wanted.iter().any(|w| w.name == o.name));
    }
    Ok(HttpResponse::Ok().json(InferResponse {
        model_name: model.name().to_string(),
        model_version: model.version().to_string(),
        id: request.id,
        outputs,
    }))
}

/// The request's one input tensor, or the one named `expected` among several.
fn pick_input<'a>(inputs: &'a [InputTensor], expected: &str) -> Result<&'a InputTensor, ApiError> {
    match inputs {
        [one] => Ok(one),
        [] => Err(ApiError::BadRequest(format!(
            "'inputs' is empty: send the '{expected}' tensor"
        ))),
        many => many.iter().find(|t| t.name == expected).ok_or_else(|| {
            ApiError::BadRequest(format!("several inputs and none named '{expected}'"))
        }),
    }
}

/// Refuses empty and oversized batches before any value is read.
fn check_batch(cases: usize, max: usize) -> Result<(), ApiError> {
    if cases == 0 {
        return Err(ApiError::BadRequest("the batch is empty".into()));
    }
    if cases > max {
        return Err(ApiError::BadRequest(format!(
            "batch of {cases}; at most {max} cases per request"
        )));
    }
    Ok(())
}

/// A feature model's input: FP32 (or any numeric) `[batch, D]` → rows and count.
fn feature_tensor(
    input: &InputTensor,
    binary: &[u8],
    features: &[String],
    name: &str,
    max: usize,
) -> Result<(Vec<f32>, usize), ApiError> {
    let dim = features.len();
    let cases = match input.shape.as_slice() {
        [b, d] if *d as usize == dim && *b >= 0 => *b as usize,
        [d] if *d as usize == dim => 1,
        shape => {
            return Err(ApiError::BadRequest(format!(
                "input '{}' has shape {shape:?}; model '{name}' expects [batch, {dim}]",
                input.name
            )))
        }
    };
    check_batch(cases, max)?;
    let values = tensor_values(input, binary)?;
    check_len(input, values.len(), cases * dim)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ApiError::BadRequest(format!(
            "input '{}' value {i} (case {}, feature '{}') is not a finite number",
            input.name,
            i / dim,
            features[i % dim]
        )));
    }
    Ok((values, cases))
}

fn check_len(input: &InputTensor, got: usize, want: usize) -> Result<(), ApiError> {
    if got == want {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "input '{}' holds {got} values; shape {:?} needs {want}",
        input.name, input.shape
    )))
}

/// An image model's input: BYTES `[batch]` of encoded PNG/JPEG images (base64
/// strings in JSON, length-prefixed in binary data), or UINT8 `[batch, H, W, C]`
/// pixels at the model's size → NHWC rows and count.
fn image_tensor(
    input: &InputTensor,
    binary: &[u8],
    size: ImageSize,
    name: &str,
    max: usize,
) -> Result<(Vec<f32>, usize), ApiError> {
    let (h, w, c) = (size.height as i64, size.width as i64, size.channels as i64);
    match input.datatype.as_str() {
        "BYTES" => {
            let cases = match input.shape.as_slice() {
                [b] | [b, 1] if *b >= 0 => *b as usize,
                shape => {
                    return Err(ApiError::BadRequest(format!(
                        "input '{}' has shape {shape:?}; BYTES images are [batch], one encoded image each",
                        input.name
                    )))
                }
            };
            check_batch(cases, max)?;
            size.check_decodable(name)?;
            let images = encoded_images(input, binary)?;
            if images.len() != cases {
                return Err(ApiError::BadRequest(format!(
                    "input '{}' holds {} images; shape {:?} needs {cases}",
                    input.name,
                    images.len(),
                    input.shape
                )));
            }
            let mut rows = Vec::with_capacity(cases * size.values());
            for (i, bytes) in images.iter().enumerate() {
                let what = format!("input '{}' image {i}", input.name);
                push_encoded(bytes, size, &what, &mut rows)?;
            }
            Ok((rows, cases))
        }
        "UINT8" => {
            let cases = match input.shape.as_slice() {
                [b, hh, ww, cc] if (*hh, *ww, *cc) == (h, w, c) && *b >= 0 => *b as usize,
                [hh, ww, cc] if (*hh, *ww, *cc) == (h, w, c) => 1,
                shape => {
                    return Err(ApiError::BadRequest(format!(
                        "input '{}' has shape {shape:?}; model '{name}' expects UINT8 [batch, {h}, {w}, {c}]",
                        input.name
                    )))
                }
            };
            check_batch(cases, max)?;
            let values = tensor_values(input, binary)?;
            check_len(input, values.len(), cases * size.values())?;
            check_pixels(&values, &input.name)?;
            Ok((values, cases))
        }
        other => Err(ApiError::BadRequest(format!(
            "input '{}' has datatype {other}; model '{name}' takes images: BYTES (PNG/JPEG) or UINT8 [batch, {h}, {w}, {c}]",
            input.name
        ))),
    }
}

/// The encoded images of a BYTES tensor.
fn encoded_images(input: &InputTensor, binary: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    if let Some(bytes) = binary_part(input, binary)? {
        let elements = split_bytes_elements(bytes, &input.name)?;
        return Ok(elements.into_iter().map(<[u8]>::to_vec).collect());
    }
    let mut texts = Vec::new();
    strings(json_data(input)?, &input.name, &mut texts)?;
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| decode_base64(t, &format!("input '{}' image {i}", input.name)))
        .collect()
}

fn strings<'a>(
    v: &'a serde_json::Value,
    name: &str,
    out: &mut Vec<&'a str>,
) -> Result<(), ApiError> {
    match v {
        serde_json::Value::Array(items) => items.iter().try_for_each(|i| strings(i, name, out)),
        serde_json::Value::String(s) => {
            out.push(s);
            Ok(())
        }
        other => Err(ApiError::BadRequest(format!(
            "input '{name}' data holds {other}, not a base64 string"
        ))),
    }
}

/// The tensor's part of the binary data, when it declares `binary_data_size`.
fn binary_part<'a>(t: &InputTensor, binary: &'a [u8]) -> Result<Option<&'a [u8]>, ApiError> {
    let Some(size) = t
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
        .and_then(serde_json::Value::as_u64)
        .map(|s| s as usize)
    else {
        return Ok(None);
    };
    binary.get(..size).map(Some).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "input '{}' declares {size} binary bytes; {} are present",
            t.name,
            binary.len()
        ))
    })
}

/// The tensor's JSON `data`, required when it has no binary data.
fn json_data(t: &InputTensor) -> Result<&serde_json::Value, ApiError> {
    t.data.as_ref().ok_or_else(|| {
        ApiError::BadRequest(format!(
            "input '{}' has neither 'data' nor binary data",
            t.name
        ))
    })
}

/// Splits a body into its JSON header and binary tensor data (Triton's binary
/// extension); without the header, the whole body is JSON.
fn split_binary<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let len: usize = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("{HEADER_LENGTH} is not a number")))?;
    if len > body.len() {
        return Err(ApiError::BadRequest(format!(
            "{HEADER_LENGTH} is {len} but the body has {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(len))
}

/// The tensor's values as f32, from JSON `data` (flat or nested) or binary data.
fn tensor_values(t: &InputTensor, binary: &[u8]) -> Result<Vec<f32>, ApiError> {
    let width = match t.datatype.as_str() {
        "FP32" | "INT32" | "UINT32" => 4,
        "FP64" | "INT64" | "UINT64" => 8,
        "FP16" | "BF16" | "INT16" | "UINT16" => 2,
        "INT8" | "UINT8" | "BOOL" => 1,
        other => {
            return Err(ApiError::BadRequest(format!(
                "input '{}' has datatype {other}; send a numeric tensor (FP32)",
                t.name
            )))
        }
    };
    if let Some(bytes) = binary_part(t, binary)? {
        if bytes.len() % width != 0 {
            return Err(ApiError::BadRequest(format!(
                "input '{}' has {} binary bytes, not a whole number of {}-byte {} values",
                t.name,
                bytes.len(),
                width,
                t.datatype
            )));
        }
        let values = bytes
            .chunks_exact(width)
            .map(|c| match (t.datatype.as_str(), c.len()) {
                ("FP32", _) => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                ("INT32", _) => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
                ("UINT32", _) => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
                ("FP64", _) => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32,
                ("INT64", _) => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32,
                ("UINT64", _) => u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32,
                ("INT16", _) => i16::from_le_bytes([c[0], c[1]]) as f32,
                ("UINT16", _) => u16::from_le_bytes([c[0], c[1]]) as f32,
                ("FP16", _) => half_to_f32(u16::from_le_bytes([c[0], c[1]])),
                ("BF16", _) => f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16),
                ("INT8", _) => c[0] as i8 as f32,
                _ => f32::from(c[0]),
            })
            .collect();
        return Ok(values);
    }
    let mut out = Vec::new();
    flatten(json_data(t)?, &t.name, &mut out)?;
    Ok(out)
}

fn flatten(v: &serde_json::Value, name: &str, out: &mut Vec<f32>) -> Result<(), ApiError> {
    match v {
        serde_json::Value::Array(items) => items.iter().try_for_each(|i| flatten(i, name, out)),
        serde_json::Value::Number(n) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        serde_json::Value::Bool(b) => {
            out.push(f32::from(u8::from(*b)));
            Ok(())
        }
        other => Err(ApiError::BadRequest(format!(
            "input '{name}' data holds {other}, not a number"
        ))),
    }
}

/// IEEE 754 half precision to f32.
fn half_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: normalise
            let shift = f.leading_zeros() - 21;
            let f = (f << shift) & 0x3ff;
            sign | (((127 - 15 + 1 - shift as i32) as u32) << 23) | (f << 13)
        }
        (31, 0) => sign | 0x7f80_0000,
        (31, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | (((e - 15 + 127) as u32) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::half_to_f32;

    #[test]
    fn half_precision_values() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x3800), 0.5);
        assert_eq!(half_to_f32(0x0000), 0.0);
        assert!(half_to_f32(0x7c00).is_infinite());
        assert!((half_to_f32(0x0001) - 5.960_464_5e-8).abs() < 1e-12);
    }
}
