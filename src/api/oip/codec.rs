//! The Open Inference Protocol's tensor codec, pure (no HTTP, no I/O): the
//! request and response documents, Triton's binary extension (a JSON header,
//! then raw tensor bytes), reading a model's input tensor into rows, and the
//! one table of output tensors that both model metadata and `infer` use.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::image_input::{check_pixels, split_bytes_elements, ImageSize, ImageSource};
use crate::api::problem::ApiError;
use crate::model::{Head, Manifest};
use crate::triage::Triaged;

/// Triton's binary extension: the JSON header's length when binary data follows.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"id": "order-1", "inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": [2193.25, 22.61, 5.5, 234.6, 110.2, 3.0, 0.65, 1]}]}))]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    #[schema(schema_with = super::request_schema::request_parameters)]
    pub parameters: Option<serde_json::Value>,
    /// The model's one input tensor (or several, one of them named after it).
    #[schema(min_items = 1)]
    pub inputs: Vec<InputTensor>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InputTensor {
    pub name: String,
    /// Dimensions (an integral number such as `8.0` is accepted).
    #[serde(deserialize_with = "crate::api::integral::many")]
    #[schema(schema_with = super::request_schema::shape)]
    pub shape: Vec<i64>,
    #[schema(schema_with = super::request_schema::datatype)]
    pub datatype: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Row-major values, flat or nested (absent when sent as binary).
    #[serde(default)]
    #[schema(schema_with = super::request_schema::tensor_data)]
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestedOutput {
    #[schema(schema_with = super::request_schema::output_name)]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = super::request_schema::any_value)]
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

/// The input tensor a model reads, with its part of the binary data.
pub struct Picked<'a> {
    pub tensor: &'a InputTensor,
    /// The binary data from this tensor's first byte on (binary tensors follow
    /// the JSON header in the order of `inputs`).
    pub binary: &'a [u8],
}

/// The request's one input tensor, or the one named `expected` among several.
pub fn pick_input<'a>(
    inputs: &'a [InputTensor],
    binary: &'a [u8],
    expected: &str,
) -> Result<Picked<'a>, ApiError> {
    let index = match inputs {
        [_] => 0,
        [] => {
            return Err(ApiError::BadRequest(format!(
                "'inputs' is empty: send the '{expected}' tensor"
            )))
        }
        many => many
            .iter()
            .position(|t| t.name == expected)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("several inputs and none named '{expected}'"))
            })?,
    };
    let offset = inputs[..index]
        .iter()
        .filter_map(binary_size)
        .try_fold(0u64, u64::checked_add)
        .and_then(|o| usize::try_from(o).ok())
        .filter(|&o| o <= binary.len())
        .ok_or_else(|| {
            ApiError::BadRequest("the inputs declare more binary data than the body holds".into())
        })?;
    Ok(Picked {
        tensor: &inputs[index],
        binary: &binary[offset..],
    })
}

/// Refuses empty and oversized batches before any value is read (the core's
/// check; the protocol reports it as a bad request).
fn check_batch(cases: usize, max: usize) -> Result<(), ApiError> {
    crate::triage::check_batch(cases, max).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// A feature model's input: FP32 (or any numeric) `[batch, D]` → rows and count.
pub fn feature_tensor(
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

/// An image model's input, parsed but not decoded.
pub enum ImageInput {
    /// UINT8 pixels at the model's size: rows ready to run.
    Pixels(Vec<f32>, usize),
    /// Encoded images, decoded under the server's image budget.
    Encoded(Vec<ImageSource>),
}

/// An image model's input: BYTES `[batch]` of encoded PNG/JPEG images (base64
/// strings in JSON, length-prefixed in binary data), or UINT8 `[batch, H, W, C]`
/// pixels at the model's size.
pub fn image_tensor(
    input: &InputTensor,
    binary: &[u8],
    size: ImageSize,
    name: &str,
    max: usize,
) -> Result<ImageInput, ApiError> {
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
            Ok(ImageInput::Encoded(images))
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
            Ok(ImageInput::Pixels(values, cases))
        }
        other => Err(ApiError::BadRequest(format!(
            "input '{}' has datatype {other}; model '{name}' takes images: BYTES (PNG/JPEG) or UINT8 [batch, {h}, {w}, {c}]",
            input.name
        ))),
    }
}

/// The encoded images of a BYTES tensor (base64 is decoded later, off the
/// async worker).
fn encoded_images(input: &InputTensor, binary: &[u8]) -> Result<Vec<ImageSource>, ApiError> {
    let what = |i: usize| format!("input '{}' image {i}", input.name);
    if let Some(bytes) = binary_part(input, binary)? {
        let elements = split_bytes_elements(bytes, &input.name)?;
        return Ok(elements
            .into_iter()
            .enumerate()
            .map(|(i, b)| ImageSource::Bytes {
                what: what(i),
                bytes: b.to_vec(),
            })
            .collect());
    }
    let mut texts = Vec::new();
    strings(json_data(input)?, &input.name, &mut texts)?;
    Ok(texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| ImageSource::Base64 {
            what: what(i),
            text: t.to_string(),
        })
        .collect())
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

/// The `binary_data_size` a tensor declares, if any.
fn binary_size(t: &InputTensor) -> Option<u64> {
    t.parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
        .and_then(serde_json::Value::as_u64)
}

/// The tensor's part of the binary data, when it declares `binary_data_size`.
/// `binary` starts at this tensor's data (see [`Picked`]).
fn binary_part<'a>(t: &InputTensor, binary: &'a [u8]) -> Result<Option<&'a [u8]>, ApiError> {
    let Some(size) = binary_size(t) else {
        return Ok(None);
    };
    usize::try_from(size)
        .ok()
        .and_then(|size| binary.get(..size))
        .map(Some)
        .ok_or_else(|| {
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
pub fn split_binary<'a>(
    header_length: Option<&[u8]>,
    body: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(value) = header_length else {
        return Ok((body, &[]));
    };
    let len: usize = std::str::from_utf8(value)
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
pub fn tensor_values(t: &InputTensor, binary: &[u8]) -> Result<Vec<f32>, ApiError> {
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
    let range = integer_range(&t.datatype);
    flatten(json_data(t)?, &t.name, range, &mut out)?;
    Ok(out)
}

/// The values an integer datatype holds, as exact integer bounds; `None` for
/// the floating-point ones.
fn integer_range(datatype: &str) -> Option<(i128, i128)> {
    Some(match datatype {
        "INT8" => (i8::MIN.into(), i8::MAX.into()),
        "UINT8" => (0, u8::MAX.into()),
        "INT16" => (i16::MIN.into(), i16::MAX.into()),
        "UINT16" => (0, u16::MAX.into()),
        "INT32" => (i32::MIN.into(), i32::MAX.into()),
        "UINT32" => (0, u32::MAX.into()),
        "INT64" => (i64::MIN.into(), i64::MAX.into()),
        "UINT64" => (0, u64::MAX.into()),
        _ => return None,
    })
}

/// Whether JSON number `n` is an integer within `[lo, hi]`, compared exactly:
/// integers as integers; a float only when integral and below `hi + 1` (a
/// power of two, exact in f64, also for the 64-bit types whose `hi` is not).
fn integer_fits(n: &serde_json::Number, (lo, hi): (i128, i128)) -> bool {
    if let Some(i) = n.as_i64() {
        return (lo..=hi).contains(&i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return (lo..=hi).contains(&i128::from(u));
    }
    n.as_f64()
        .is_some_and(|x| x.fract() == 0.0 && x >= lo as f64 && x < (hi + 1) as f64)
}

fn flatten(
    v: &serde_json::Value,
    name: &str,
    range: Option<(i128, i128)>,
    out: &mut Vec<f32>,
) -> Result<(), ApiError> {
    match v {
        serde_json::Value::Array(items) => {
            items.iter().try_for_each(|i| flatten(i, name, range, out))
        }
        serde_json::Value::Number(n) => {
            // An integer tensor holds integers its datatype can represent:
            // 2^70 in an INT64 tensor is refused, not rounded into a feature.
            if range.is_some_and(|r| !integer_fits(n, r)) {
                return Err(ApiError::BadRequest(format!(
                    "input '{name}' value {} is {n}, which its integer datatype cannot represent",
                    out.len()
                )));
            }
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

/// An output tensor the server can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Probabilities,
    Disagreement,
    Uvc,
    HumanError,
    Class,
    Route,
    CaseId,
}

/// Every output, in the order metadata lists them and `infer` returns them.
pub const OUTPUTS: [Output; 7] = [
    Output::Probabilities,
    Output::Disagreement,
    Output::Uvc,
    Output::HumanError,
    Output::Class,
    Output::Route,
    Output::CaseId,
];

impl Output {
    pub fn name(self) -> &'static str {
        match self {
            Output::Probabilities => "probabilities",
            Output::Disagreement => "disagreement",
            Output::Uvc => "uvc",
            Output::HumanError => "human_error",
            Output::Class => "class",
            Output::Route => "route",
            Output::CaseId => "case_id",
        }
    }

    pub fn datatype(self) -> &'static str {
        match self {
            Output::Probabilities | Output::Disagreement | Output::Uvc | Output::HumanError => {
                "FP32"
            }
            Output::Class => "INT64",
            Output::Route | Output::CaseId => "BYTES",
        }
    }

    /// Whether a model with this manifest produces the output.
    pub fn available(self, m: &Manifest) -> bool {
        self != Output::HumanError || m.heads.contains(&Head::HumanError)
    }

    /// Values per case (the shape after the batch dimension).
    fn per_case(self, m: &Manifest) -> Vec<usize> {
        match self {
            Output::Probabilities => vec![m.classes.len()],
            _ => Vec::new(),
        }
    }

    /// Metadata entry: shape with `-1` for the batch.
    pub fn metadata(self, m: &Manifest) -> TensorMetadata {
        let mut shape = vec![-1i64];
        shape.extend(self.per_case(m).iter().map(|&d| d as i64));
        TensorMetadata {
            name: self.name().into(),
            datatype: self.datatype().into(),
            shape,
        }
    }

    /// The output's tensor for the triaged cases.
    pub fn tensor(self, m: &Manifest, triaged: &[Triaged]) -> OutputTensor {
        let mut shape = vec![triaged.len()];
        shape.extend(self.per_case(m));
        let data: serde_json::Value = match self {
            Output::Probabilities => triaged
                .iter()
                .flat_map(|t| t.prediction.probabilities.iter().copied())
                .collect(),
            Output::Disagreement => triaged.iter().map(|t| t.prediction.disagreement).collect(),
            Output::Uvc => triaged.iter().map(|t| t.uncertainty.uvc).collect(),
            Output::HumanError => triaged
                .iter()
                .map(|t| t.prediction.human_error.unwrap_or(f32::NAN))
                .collect(),
            Output::Class => triaged
                .iter()
                .map(|t| t.prediction.class() as i64)
                .collect(),
            Output::Route => triaged.iter().map(|t| t.decision.route.name()).collect(),
            Output::CaseId => triaged
                .iter()
                .map(|t| t.decision.case_id.clone().unwrap_or_default())
                .collect(),
        };
        OutputTensor {
            name: self.name().into(),
            datatype: self.datatype().into(),
            shape,
            data,
        }
    }
}

/// The outputs a request asks for (all the model has when it names none), or
/// a bad request naming the first unknown one. Checked before anything runs.
pub fn requested_outputs(
    wanted: Option<&[RequestedOutput]>,
    m: &Manifest,
) -> Result<Vec<Output>, ApiError> {
    let available: Vec<Output> = OUTPUTS.into_iter().filter(|o| o.available(m)).collect();
    let Some(wanted) = wanted else {
        return Ok(available);
    };
    if let Some(unknown) = wanted
        .iter()
        .find(|w| !available.iter().any(|o| o.name() == w.name))
    {
        return Err(ApiError::BadRequest(format!(
            "unknown output '{}'; model '{}' has: {}",
            unknown.name,
            m.name,
            available
                .iter()
                .map(|o| o.name())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(available
        .into_iter()
        .filter(|o| wanted.iter().any(|w| w.name == o.name()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x3800), 0.5);
        assert_eq!(half_to_f32(0x0000), 0.0);
        assert!(half_to_f32(0x7c00).is_infinite());
        assert!((half_to_f32(0x0001) - 5.960_464_5e-8).abs() < 1e-12);
    }

    fn tensor(json: serde_json::Value) -> InputTensor {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn binary_tensors_are_read_at_their_offset() {
        let inputs = vec![
            tensor(
                serde_json::json!({"name": "other", "shape": [1], "datatype": "INT8", "parameters": {"binary_data_size": 3}}),
            ),
            tensor(
                serde_json::json!({"name": "features", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}),
            ),
        ];
        let mut binary = vec![9u8, 9, 9];
        binary.extend(1.5f32.to_le_bytes());
        binary.extend((-2.0f32).to_le_bytes());
        let picked = pick_input(&inputs, &binary, "features").unwrap();
        let values = tensor_values(picked.tensor, picked.binary).unwrap();
        assert_eq!(values, vec![1.5, -2.0]);
        // A declared size past the body is a bad request, not a panic.
        assert!(tensor_values(picked.tensor, &binary[..5]).is_err());
    }

    #[test]
    fn header_length_splits_json_from_binary() {
        let body = b"{}abc";
        assert_eq!(
            split_binary(Some(b"2"), body).unwrap(),
            (&b"{}"[..], &b"abc"[..])
        );
        assert_eq!(split_binary(None, body).unwrap(), (&body[..], &b""[..]));
        assert!(split_binary(Some(b"99"), body).is_err());
        assert!(split_binary(Some(b"x"), body).is_err());
    }

    #[test]
    fn feature_tensors_check_shape_batch_and_values() {
        let names = vec!["a".to_string(), "b".to_string()];
        let t = tensor(
            serde_json::json!({"name": "features", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}),
        );
        assert_eq!(
            feature_tensor(&t, &[], &names, "m", 8).unwrap(),
            (vec![1.0, 2.0, 3.0, 4.0], 2)
        );
        assert!(
            feature_tensor(&t, &[], &names, "m", 1).is_err(),
            "over the batch limit"
        );
        let wrong = tensor(
            serde_json::json!({"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}),
        );
        assert!(feature_tensor(&wrong, &[], &names, "m", 8).is_err());
        let huge = tensor(
            serde_json::json!({"name": "features", "shape": [1, 2], "datatype": "FP64", "data": [1e300, 0]}),
        );
        assert!(
            feature_tensor(&huge, &[], &names, "m", 8).is_err(),
            "not finite as f32"
        );
    }

    #[test]
    fn integer_tensors_hold_exactly_what_their_datatype_can() {
        let n = |v: serde_json::Value| match v {
            serde_json::Value::Number(n) => n,
            _ => unreachable!(),
        };
        let u8r = super::integer_range("UINT8").unwrap();
        assert!(super::integer_fits(&n(serde_json::json!(255)), u8r));
        assert!(super::integer_fits(&n(serde_json::json!(255.0)), u8r));
        assert!(!super::integer_fits(&n(serde_json::json!(256)), u8r));
        assert!(!super::integer_fits(&n(serde_json::json!(255.5)), u8r));
        assert!(!super::integer_fits(&n(serde_json::json!(-1)), u8r));
        let i64r = super::integer_range("INT64").unwrap();
        assert!(super::integer_fits(&n(serde_json::json!(i64::MAX)), i64r));
        assert!(!super::integer_fits(
            &n(serde_json::json!(9_223_372_036_854_775_808u64)),
            i64r
        ));
        assert!(!super::integer_fits(
            &n(serde_json::json!(2f64.powi(63))),
            i64r
        ));
        assert!(!super::integer_fits(
            &n(serde_json::json!(1.1805916207174113e21)),
            i64r
        ));
        assert!(super::integer_fits(
            &n(serde_json::json!(-(2f64.powi(63)))),
            i64r
        ));
        assert!(super::integer_fits(
            &n(serde_json::json!(u64::MAX)),
            super::integer_range("UINT64").unwrap()
        ));
        assert!(super::integer_range("FP32").is_none());
    }
}
