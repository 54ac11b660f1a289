//! Every parser that reads client or file input, fed arbitrary bytes and values:
//! the Open Inference Protocol's binary tensors and JSON documents, `/v1` JSON
//! instances, base64 and PNG/JPEG images, CSV label files and the image paths a
//! CSV names. Each must answer `Ok` or `Err` — never panic, never allocate
//! absurdly, never read outside the images folder.
//!
//! The test binary counts the largest single allocation per thread (a wrapper
//! around the system allocator), so image decoding can be held to the decoder's
//! memory limit as well as to "no panic".

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};

use triaged::api::image_input::{check_pixels, decode_base64, split_bytes_elements, ImageSize};
use triaged::api::oip::codec::{
    feature_tensor, image_tensor, pick_input, requested_outputs, split_binary, tensor_values,
    ImageInput, InferRequest, InputTensor, RequestedOutput,
};
use triaged::api::triage::TriageRequest;
use triaged::data::csv_import::{import_csv, read_labeled, CsvImport, LabelLayout};
use triaged::data::images::{
    decode_rgb, dimensions, import_images, ImageError, ImageImport, MAX_DECODER_ALLOC,
    MAX_IMAGE_SIDE,
};
use triaged::model::Manifest;

// ---------------------------------------------------------------------------
// Largest single allocation, per thread.

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the largest single allocation it made
/// on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------------------
// Strategies.

/// Object keys: the ones the API documents (so documents get past the first
/// field) and anything else.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "instances",
            "request_id",
            "id",
            "features",
            "image",
            "inputs",
            "outputs",
            "name",
            "shape",
            "datatype",
            "parameters",
            "data",
            "binary_data_size",
        ])
        .prop_map(str::to_string),
        ".{0,8}",
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-3i64..300).prop_map(Value::from),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        ".{0,16}".prop_map(Value::String),
        base64_text().prop_map(Value::String),
    ]
}

/// Any JSON value, at most 4 levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Mostly the base64 alphabet, with whitespace, padding, data-URL prefixes and
/// stray characters.
fn base64_text() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "",
            "data:image/png;base64,",
            "data:image/jpeg,",
            "data:",
            "data:;base64,",
        ]),
        prop_oneof![
            "[A-Za-z0-9+/=\r\n\t ]{0,64}",
            "[A-Za-z0-9+/]{0,64}={0,3}",
            ".{0,32}",
        ],
    )
        .prop_map(|(prefix, body)| format!("{prefix}{body}"))
}

const DATATYPES: [&str; 15] = [
    "FP32", "FP64", "FP16", "BF16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
    "UINT64", "BOOL", "BYTES", "fp32",
];

fn datatype() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(DATATYPES.to_vec()).prop_map(str::to_string),
        1 => ".{0,8}",
    ]
}

fn shape() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(prop_oneof![4 => -2i64..6, 1 => any::<i64>()], 0..5)
}

fn binary_data_size() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0u64..80).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => json_leaf(),
    ]
}

fn tensor_parameters() -> impl Strategy<Value = Option<Map<String, Value>>> {
    prop::option::of(
        (
            prop::option::of(binary_data_size()),
            prop::collection::vec((key(), json_leaf()), 0..3),
        )
            .prop_map(|(size, rest)| {
                let mut m: Map<String, Value> = rest.into_iter().collect();
                if let Some(size) = size {
                    m.insert("binary_data_size".into(), size);
                }
                m
            }),
    )
}

/// Tensor data: flat or nested numbers, booleans, base64 strings, or anything.
fn tensor_data() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop_oneof![
        prop::collection::vec(json_number(), 0..24).prop_map(Value::Array),
        prop::collection::vec(prop::collection::vec(json_number(), 0..6), 0..6)
            .prop_map(|rows| rows.into_iter().map(Value::Array).collect()),
        prop::collection::vec(any::<bool>(), 0..12)
            .prop_map(|b| b.into_iter().map(Value::Bool).collect()),
        prop::collection::vec(base64_text(), 0..4)
            .prop_map(|s| s.into_iter().map(Value::String).collect()),
        json_value(),
    ])
}

fn input_tensor() -> impl Strategy<Value = InputTensor> {
    (
        prop_oneof![
            prop::sample::select(vec!["features", "image", "x"]).prop_map(str::to_string),
            ".{0,8}",
        ],
        shape(),
        datatype(),
        tensor_parameters(),
        tensor_data(),
    )
        .prop_map(|(name, shape, datatype, parameters, data)| InputTensor {
            name,
            shape,
            datatype,
            parameters,
            data,
        })
}

/// The JSON a client would send for `t`.
fn tensor_json(t: &InputTensor) -> Value {
    let mut v = json!({"name": t.name, "shape": t.shape, "datatype": t.datatype});
    if let Some(p) = &t.parameters {
        v["parameters"] = Value::Object(p.clone());
    }
    if let Some(d) = &t.data {
        v["data"] = d.clone();
    }
    v
}

/// Binary tensor data: arbitrary bytes, or Triton BYTES elements (4-byte
/// little-endian lengths, some of them lies).
fn binary_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..96),
        prop::collection::vec(
            (
                prop_oneof![3 => (0u32..16).prop_map(Some), 1 => any::<u32>().prop_map(Some), 1 => Just(None)],
                prop::collection::vec(any::<u8>(), 0..16),
            ),
            0..5,
        )
        .prop_map(|elements| {
            let mut out = Vec::new();
            for (declared, bytes) in elements {
                let len = declared.unwrap_or(bytes.len() as u32);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&bytes);
            }
            out
        }),
    ]
}

fn feature_names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-z]{1,4}", 0..5)
}

fn image_size() -> impl Strategy<Value = ImageSize> {
    (
        1usize..4,
        1usize..4,
        prop::sample::select(vec![1usize, 3, 4]),
    )
        .prop_map(|(height, width, channels)| ImageSize {
            height,
            width,
            channels,
        })
}

/// One edit of a byte string; positions are chosen relative to its length, or
/// among the first 64 bytes (where the headers are).
#[derive(Debug, Clone)]
enum Edit {
    Flip(Position, u8),
    Set(Position, u8),
    Insert(Position, Vec<u8>),
    Delete(Position, usize),
    Truncate(Position),
}

#[derive(Debug, Clone)]
enum Position {
    Anywhere(Index),
    Header(usize),
}

impl Position {
    fn at(&self, len: usize) -> usize {
        match self {
            Position::Anywhere(i) => i.index(len.max(1)),
            Position::Header(i) => (*i).min(len),
        }
    }
}

fn position() -> impl Strategy<Value = Position> {
    prop_oneof![
        any::<Index>().prop_map(Position::Anywhere),
        (0usize..64).prop_map(Position::Header),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (position(), 1u8..=255).prop_map(|(p, x)| Edit::Flip(p, x)),
        2 => (position(), prop_oneof![Just(0u8), Just(0xff), any::<u8>()]).prop_map(|(p, b)| Edit::Set(p, b)),
        1 => (position(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, b)| Edit::Insert(p, b)),
        1 => (position(), 1usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        1 => position().prop_map(Edit::Truncate),
    ]
}

fn apply(data: &mut Vec<u8>, edit: &Edit) {
    let len = data.len();
    match edit {
        Edit::Flip(p, x) => {
            if len > 0 {
                data[p.at(len).min(len - 1)] ^= x;
            }
        }
        Edit::Set(p, b) => {
            if len > 0 {
                data[p.at(len).min(len - 1)] = *b;
            }
        }
        Edit::Insert(p, bytes) => {
            let at = p.at(len).min(len);
            data.splice(at..at, bytes.iter().copied());
        }
        Edit::Delete(p, n) => {
            let at = p.at(len).min(len);
            data.drain(at..(at + n).min(len));
        }
        Edit::Truncate(p) => data.truncate(p.at(len)),
    }
}

// ---------------------------------------------------------------------------
// Fixtures.

/// Real JPEGs from the CIFAR fixtures and PNGs encoded here (RGB, RGBA, grey,
/// 16-bit), all 32×32.
fn real_images() -> &'static [(String, Vec<u8>)] {
    static IMAGES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar");
        let mut out = Vec::new();
        for class in ["airplane", "bird", "frog", "ship"] {
            for split in ["test", "train"] {
                let path = root.join(split).join(class).join("0000.jpg");
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
                out.push((path.display().to_string(), bytes));
            }
        }
        let rgb =
            image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 99]));
        let pngs = [
            ("rgb8.png", image::DynamicImage::ImageRgb8(rgb.clone())),
            (
                "rgba8.png",
                image::DynamicImage::ImageRgb8(rgb.clone())
                    .to_rgba8()
                    .into(),
            ),
            (
                "luma8.png",
                image::DynamicImage::ImageRgb8(rgb.clone())
                    .to_luma8()
                    .into(),
            ),
            (
                "rgb16.png",
                image::DynamicImage::ImageRgb8(rgb).to_rgb16().into(),
            ),
        ];
        for (name, img) in pngs {
            let mut bytes = Cursor::new(Vec::new());
            img.write_to(&mut bytes, image::ImageOutputFormat::Png)
                .expect("encoding a PNG fixture");
            out.push((name.to_string(), bytes.into_inner()));
        }
        out
    })
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose (valid, CRC-checked) header declares `width × height` and whose
/// data is one empty IDAT.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

fn manifest() -> Manifest {
    serde_json::from_value(json!({
        "format_version": 1,
        "name": "m",
        "version": "1",
        "architecture": {"kind": "mlp", "hidden": [4], "dropout": 0.0, "ensemble": 1},
        "input": {"kind": "features", "features": ["a", "b"]},
        "preprocessing": {"log1p": [false, false], "mean": [0.0, 0.0], "std": [1.0, 1.0]},
        "classes": ["no", "yes"],
        "heads": ["class", "disagreement"],
        "temperature": 1.0,
        "training": {
            "data_file": "d", "data_sha256": "0", "data_source": "s", "split": "random",
            "n_train": 1, "n_calibration": 1, "seed": 0, "config": {}, "epochs_run": 1,
            "best_epoch": 1, "initial_calibration_loss": 1.0, "best_calibration_loss": 1.0,
            "started_at": "2024-01-01T00:00:00Z", "duration_seconds": 1.0,
            "triaged_version": "0"
        }
    }))
    .expect("a valid manifest")
}

// ---------------------------------------------------------------------------
// Open Inference Protocol (/v2).

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn oip_header_length_never_panics(header in prop::option::of(prop_oneof![
        "[0-9 ]{0,24}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..24),
    ]), body in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok((json, binary)) = split_binary(header.as_deref(), &body) {
            prop_assert_eq!(json.len() + binary.len(), body.len());
        }
    }

    #[test]
    fn oip_infer_request_from_arbitrary_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<InferRequest>(&body);
    }

    #[test]
    fn oip_infer_request_from_arbitrary_json_never_panics(doc in json_value()) {
        let text = serde_json::to_vec(&doc).unwrap();
        let _ = serde_json::from_slice::<InferRequest>(&text);
        let _ = serde_json::from_value::<InferRequest>(doc);
    }

    #[test]
    fn oip_binary_tensors_never_panic(
        inputs in prop::collection::vec(input_tensor(), 0..4),
        binary in binary_bytes(),
        expected in prop::sample::select(vec!["features", "image", "x"]),
        names in feature_names(),
        size in image_size(),
        max in 0usize..64,
    ) {
        for t in &inputs {
            let _ = tensor_values(t, &binary);
            let _ = feature_tensor(t, &binary, &names, "m", max);
            let _ = image_tensor(t, &binary, size, "m", max);
        }
        if let Ok(picked) = pick_input(&inputs, &binary, expected) {
            let _ = tensor_values(picked.tensor, picked.binary);
            if let Ok((values, cases)) = feature_tensor(picked.tensor, picked.binary, &names, "m", max) {
                prop_assert!(cases >= 1 && cases <= max);
                prop_assert_eq!(values.len(), cases * names.len());
                prop_assert!(values.iter().all(|v| v.is_finite()));
            }
            let _ = image_tensor(picked.tensor, picked.binary, size, "m", max);
        }
    }

    /// The whole `/v2 infer` parse: header length, JSON header, binary data,
    /// requested outputs, the picked input read as features and as an image.
    #[test]
    fn oip_infer_body_never_panics(
        inputs in prop::collection::vec(input_tensor(), 0..4),
        outputs in prop::option::of(prop::collection::vec(prop_oneof![
            prop::sample::select(vec!["probabilities", "class", "human_error", "route"]).prop_map(str::to_string),
            ".{0,8}",
        ], 0..4)),
        binary in binary_bytes(),
        header in prop_oneof![
            2 => Just(None),
            2 => Just(Some(String::new())), // replaced by the true length below
            1 => "[0-9 ]{0,6}".prop_map(Some),
        ],
        edits in prop::collection::vec(edit(), 0..3),
        names in feature_names(),
        size in image_size(),
    ) {
        let mut doc = json!({"inputs": inputs.iter().map(tensor_json).collect::<Vec<_>>()});
        if let Some(outputs) = &outputs {
            doc["outputs"] = outputs.iter().map(|n| json!({"name": n})).collect();
        }
        let mut body = serde_json::to_vec(&doc).unwrap();
        let header = header.map(|h| if h.is_empty() { body.len().to_string() } else { h });
        body.extend_from_slice(&binary);
        for e in &edits {
            apply(&mut body, e);
        }
        let manifest = manifest();
        let Ok((json, binary)) = split_binary(header.as_deref().map(str::as_bytes), &body) else {
            return Ok(());
        };
        let Ok(req) = serde_json::from_slice::<InferRequest>(json) else {
            return Ok(());
        };
        let _ = requested_outputs(req.outputs.as_deref(), &manifest);
        if let Ok(picked) = pick_input(&req.inputs, binary, "features") {
            let _ = tensor_values(picked.tensor, picked.binary);
            let _ = feature_tensor(picked.tensor, picked.binary, &names, "m", 16);
            let _ = image_tensor(picked.tensor, picked.binary, size, "m", 16);
        }
    }

    #[test]
    fn oip_requested_outputs_never_panic(wanted in prop::option::of(prop::collection::vec(
        (prop_oneof![
            prop::sample::select(vec!["probabilities", "disagreement", "uvc", "human_error", "class", "route", "case_id"]).prop_map(str::to_string),
            ".{0,12}",
        ], prop::option::of(json_leaf())).prop_map(|(name, parameters)| RequestedOutput { name, parameters }),
        0..8,
    ))) {
        let manifest = manifest();
        if let Ok(outputs) = requested_outputs(wanted.as_deref(), &manifest) {
            prop_assert!(outputs.len() <= 7);
        }
    }
}

/// A document shaped like a `/v2 infer` request whose fields hold arbitrary
/// JSON: shapes of floats, negative or huge numbers, strings; parameters and
/// data of any kind.
fn infer_document() -> impl Strategy<Value = Value> {
    let dimension = prop_oneof![
        4 => (-2i64..6).prop_map(Value::from),
        1 => prop::sample::select(vec![8.0, 1.5, -0.0, 1e19, -1e300, 4294967296.0]).prop_map(Value::from),
        1 => json_leaf(),
    ];
    let tensor = (
        prop_oneof![4 => Just(Value::from("features")), 1 => json_leaf()],
        prop_oneof![
            4 => prop::collection::vec(dimension, 0..5).prop_map(Value::Array),
            1 => json_value(),
        ],
        prop_oneof![4 => datatype().prop_map(Value::String), 1 => json_leaf()],
        prop::option::of(prop_oneof![
            tensor_parameters().prop_map(|p| p.map_or(Value::Null, Value::Object)),
            json_value(),
        ]),
        tensor_data(),
    )
        .prop_map(|(name, shape, datatype, parameters, data)| {
            let mut t = json!({"name": name, "shape": shape, "datatype": datatype});
            if let Some(p) = parameters {
                t["parameters"] = p;
            }
            if let Some(d) = data {
                t["data"] = d;
            }
            t
        });
    (
        prop_oneof![
            4 => prop::collection::vec(tensor, 0..3).prop_map(Value::Array),
            1 => json_value(),
        ],
        prop::option::of(json_value()),
        prop::option::of(json_leaf()),
    )
        .prop_map(|(inputs, outputs, id)| {
            let mut doc = json!({"inputs": inputs});
            if let Some(o) = outputs {
                doc["outputs"] = o;
            }
            if let Some(id) = id {
                doc["id"] = id;
            }
            doc
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `/v2 infer` documents with odd field values parse or not, and what
    /// parses is read without a panic.
    #[test]
    fn oip_infer_documents_never_panic(
        doc in infer_document(),
        binary in binary_bytes(),
        names in feature_names(),
        size in image_size(),
    ) {
        let text = serde_json::to_vec(&doc).unwrap();
        let manifest = manifest();
        if let Ok(req) = serde_json::from_slice::<InferRequest>(&text) {
            let _ = requested_outputs(req.outputs.as_deref(), &manifest);
            if let Ok(picked) = pick_input(&req.inputs, &binary, "features") {
                let _ = tensor_values(picked.tensor, picked.binary);
                let _ = feature_tensor(picked.tensor, picked.binary, &names, "m", 16);
                let _ = image_tensor(picked.tensor, picked.binary, size, "m", 16);
            }
        }
    }
}

/// A tensor a client could well send: its shape, datatype, data (JSON or
/// binary, after another input's binary data or not) and the model it is
/// meant for agree, so the readers get to the values.
#[derive(Debug)]
struct WellFormed {
    inputs: Vec<InputTensor>,
    binary: Vec<u8>,
    names: Vec<String>,
    size: ImageSize,
    /// The values it holds (numeric tensors), or its element count (BYTES).
    values: Vec<f32>,
    cases: usize,
}

const NUMERIC: [&str; 13] = [
    "FP32", "FP64", "FP16", "BF16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
    "UINT64", "BOOL",
];

/// `v` (a small whole number, exact in every numeric datatype) as `datatype`'s
/// little-endian bytes.
fn encode_value(datatype: &str, v: u8) -> Vec<u8> {
    let half = |v: u8| -> u16 {
        if v == 0 {
            return 0;
        }
        let e = 7 - v.leading_zeros() as u16; // floor(log2 v)
        ((e + 15) << 10) | ((u16::from(v) << (10 - e)) & 0x3ff)
    };
    match datatype {
        "FP32" => f32::from(v).to_le_bytes().to_vec(),
        "FP64" => f64::from(v).to_le_bytes().to_vec(),
        "FP16" => half(v).to_le_bytes().to_vec(),
        "BF16" => ((f32::from(v).to_bits() >> 16) as u16)
            .to_le_bytes()
            .to_vec(),
        "INT16" | "UINT16" => u16::from(v).to_le_bytes().to_vec(),
        "INT32" | "UINT32" => u32::from(v).to_le_bytes().to_vec(),
        "INT64" | "UINT64" => u64::from(v).to_le_bytes().to_vec(),
        _ => vec![v],
    }
}

fn well_formed_numeric() -> impl Strategy<Value = WellFormed> {
    (
        0usize..4, // features
        1usize..5, // batch
        prop::sample::select(NUMERIC.to_vec()),
        any::<bool>(),                                               // binary
        any::<bool>(),                                               // one case, no batch dimension
        any::<bool>(),                                               // UINT8 image pixels
        prop::option::of(prop::collection::vec(any::<u8>(), 0..12)), // an input before it
        any::<bool>(),                                               // nested JSON rows
    )
        .prop_flat_map(
            |(dim, batch, datatype, binary, flat, image, lead, nested)| {
                let size = ImageSize {
                    height: 2,
                    width: 2,
                    channels: 3,
                };
                let datatype = if image { "UINT8" } else { datatype };
                let batch = if flat { 1 } else { batch };
                let per_case = if image { size.values() } else { dim };
                let top = if datatype == "BOOL" { 1 } else { 127 };
                let values = prop::collection::vec(0u8..=top, batch * per_case);
                (
                    Just((
                        dim, batch, datatype, binary, flat, image, lead, nested, size,
                    )),
                    values,
                )
            },
        )
        .prop_map(
            |((dim, batch, datatype, binary, flat, image, lead, nested, size), values)| {
                let shape: Vec<i64> = match (image, flat) {
                    (true, true) => vec![2, 2, 3],
                    (true, false) => vec![batch as i64, 2, 2, 3],
                    (false, true) => vec![dim as i64],
                    (false, false) => vec![batch as i64, dim as i64],
                };
                let mut bytes = Vec::new();
                let mut inputs = Vec::new();
                if let Some(lead) = &lead {
                    let mut p = Map::new();
                    p.insert("binary_data_size".into(), lead.len().into());
                    inputs.push(InputTensor {
                        name: "other".into(),
                        shape: vec![lead.len() as i64],
                        datatype: "UINT8".into(),
                        parameters: Some(p),
                        data: None,
                    });
                    bytes.extend_from_slice(lead);
                }
                let (parameters, data) = if binary {
                    let encoded: Vec<u8> = values
                        .iter()
                        .flat_map(|&v| encode_value(datatype, v))
                        .collect();
                    let mut p = Map::new();
                    p.insert("binary_data_size".into(), encoded.len().into());
                    bytes.extend_from_slice(&encoded);
                    (Some(p), None)
                } else {
                    let numbers: Vec<Value> = values.iter().map(|&v| Value::from(v)).collect();
                    let data = if nested && per_case_of(&shape) > 0 {
                        numbers
                            .chunks(per_case_of(&shape))
                            .map(|c| Value::Array(c.to_vec()))
                            .collect()
                    } else {
                        Value::Array(numbers)
                    };
                    (None, Some(data))
                };
                inputs.push(InputTensor {
                    name: "features".into(),
                    shape,
                    datatype: datatype.into(),
                    parameters,
                    data,
                });
                WellFormed {
                    inputs,
                    binary: bytes,
                    names: (0..dim).map(|i| format!("f{i}")).collect(),
                    size,
                    values: values.into_iter().map(f32::from).collect(),
                    cases: batch,
                }
            },
        )
}

/// Values per case of a shape (all but the first dimension, or all for one).
fn per_case_of(shape: &[i64]) -> usize {
    let dims = if shape.len() > 1 { &shape[1..] } else { shape };
    dims.iter().map(|&d| d as usize).product()
}

/// A BYTES `[batch]` tensor of encoded images: base64 strings in JSON, or
/// length-prefixed elements in binary data (the bytes need not be images:
/// decoding comes later).
fn well_formed_bytes() -> impl Strategy<Value = WellFormed> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(images, binary, column)| {
            let batch = images.len();
            let shape = if column {
                vec![batch as i64, 1]
            } else {
                vec![batch as i64]
            };
            let mut bytes = Vec::new();
            let (parameters, data) = if binary {
                for i in &images {
                    bytes.extend_from_slice(&(i.len() as u32).to_le_bytes());
                    bytes.extend_from_slice(i);
                }
                let mut p = Map::new();
                p.insert("binary_data_size".into(), bytes.len().into());
                (Some(p), None)
            } else {
                let b64 = base64::engine::general_purpose::STANDARD;
                (
                    None,
                    Some(
                        images
                            .iter()
                            .map(|i| Value::String(b64.encode(i)))
                            .collect(),
                    ),
                )
            };
            WellFormed {
                inputs: vec![InputTensor {
                    name: "image".into(),
                    shape,
                    datatype: "BYTES".into(),
                    parameters,
                    data,
                }],
                binary: bytes,
                names: Vec::new(),
                size: ImageSize {
                    height: 2,
                    width: 2,
                    channels: 3,
                },
                values: Vec::new(),
                cases: batch,
            }
        })
}

impl WellFormed {
    /// A copy to edit (`InputTensor` is not `Clone`).
    fn copy(&self) -> WellFormed {
        WellFormed {
            inputs: self
                .inputs
                .iter()
                .map(|t| InputTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    datatype: t.datatype.clone(),
                    parameters: t.parameters.clone(),
                    data: t.data.clone(),
                })
                .collect(),
            binary: self.binary.clone(),
            names: self.names.clone(),
            size: self.size,
            values: self.values.clone(),
            cases: self.cases,
        }
    }
}

/// Reads a tensor every way the server does; only a panic fails.
fn read_every_way(w: &WellFormed, expected: &str) {
    if let Ok(picked) = pick_input(&w.inputs, &w.binary, expected) {
        let _ = tensor_values(picked.tensor, picked.binary);
        let _ = feature_tensor(picked.tensor, picked.binary, &w.names, "m", 8);
        let _ = image_tensor(picked.tensor, picked.binary, w.size, "m", 8);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Well-formed numeric tensors read back exactly (features, or UINT8
    /// pixels); then the same tensor with its binary data edited, its shape
    /// changed or its declared size off is an error or a value, never a panic.
    #[test]
    fn oip_well_formed_tensors_read_back_and_edits_never_panic(
        w in well_formed_numeric(),
        edits in prop::collection::vec(edit(), 1..4),
        shape_edit in prop::option::of((any::<Index>(), prop_oneof![-2i64..8, any::<i64>()])),
        size_edit in prop::option::of(prop_oneof![0u64..200, any::<u64>()]),
    ) {
        let picked = pick_input(&w.inputs, &w.binary, "features").unwrap();
        prop_assert_eq!(tensor_values(picked.tensor, picked.binary).unwrap(), w.values.clone());
        if picked.tensor.datatype == "UINT8" && picked.tensor.shape.len() >= 3 {
            match image_tensor(picked.tensor, picked.binary, w.size, "m", 8).unwrap() {
                ImageInput::Pixels(values, cases) => {
                    prop_assert_eq!(values, w.values.clone());
                    prop_assert_eq!(cases, w.cases);
                }
                ImageInput::Encoded(_) => prop_assert!(false, "pixels read as encoded images"),
            }
        } else {
            prop_assert_eq!(
                feature_tensor(picked.tensor, picked.binary, &w.names, "m", 8).unwrap(),
                (w.values.clone(), w.cases)
            );
        }

        let mut edited = w.copy();
        for e in &edits {
            apply(&mut edited.binary, e);
        }
        let last = edited.inputs.len() - 1;
        let t = &mut edited.inputs[last];
        if let Some((i, d)) = shape_edit {
            if t.shape.is_empty() {
                t.shape.push(d);
            } else {
                let at = i.index(t.shape.len());
                t.shape[at] = d;
            }
        }
        if let Some(size) = size_edit {
            t.parameters
                .get_or_insert_with(Map::new)
                .insert("binary_data_size".into(), size.into());
        }
        read_every_way(&edited, "features");
        read_every_way(&edited, "other");
    }

    /// Well-formed BYTES tensors hold one encoded image per case; edited, they
    /// are an error or images, never a panic.
    #[test]
    fn oip_well_formed_bytes_tensors_split_and_edits_never_panic(
        w in well_formed_bytes(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let picked = pick_input(&w.inputs, &w.binary, "image").unwrap();
        match image_tensor(picked.tensor, picked.binary, w.size, "m", 8).unwrap() {
            ImageInput::Encoded(images) => prop_assert_eq!(images.len(), w.cases),
            ImageInput::Pixels(..) => prop_assert!(false, "encoded images read as pixels"),
        }
        let mut edited = w.copy();
        for e in &edits {
            apply(&mut edited.binary, e);
        }
        read_every_way(&edited, "image");
    }
}

// ---------------------------------------------------------------------------
// Image inputs of the API: base64, BYTES elements, UINT8 pixels.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn base64_text_never_panics(text in prop_oneof![base64_text(), ".{0,64}"]) {
        let _ = decode_base64(&text, "instances[0].image");
    }

    #[test]
    fn base64_of_any_bytes_decodes_back(
        bytes in prop::collection::vec(any::<u8>(), 0..96),
        padded in any::<bool>(),
        data_url in any::<bool>(),
        breaks in prop::collection::vec((any::<Index>(), prop::sample::select(vec!["\n", "\r\n", " ", "\t"])), 0..4),
    ) {
        let engine = if padded {
            base64::engine::general_purpose::STANDARD
        } else {
            base64::engine::general_purpose::STANDARD_NO_PAD
        };
        let mut text = engine.encode(&bytes);
        for (at, ws) in &breaks {
            let at = at.index(text.len() + 1);
            text.insert_str(at, ws);
        }
        if data_url {
            text.insert_str(0, "data:image/png;base64,");
        }
        prop_assert_eq!(decode_base64(&text, "x").unwrap(), bytes);
    }

    #[test]
    fn bytes_elements_never_panic(data in binary_bytes()) {
        if let Ok(elements) = split_bytes_elements(&data, "image") {
            let framed: usize = elements.iter().map(|e| 4 + e.len()).sum();
            prop_assert_eq!(framed, data.len());
        }
    }

    #[test]
    fn bytes_elements_round_trip(elements in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..6)) {
        let mut data = Vec::new();
        for e in &elements {
            data.extend_from_slice(&(e.len() as u32).to_le_bytes());
            data.extend_from_slice(e);
        }
        let got = split_bytes_elements(&data, "image").unwrap();
        prop_assert_eq!(got, elements.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }

    #[test]
    fn pixel_checks_never_panic(values in prop::collection::vec(prop_oneof![
        any::<f32>(),
        (0u16..=256).prop_map(f32::from),
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(-0.0f32),
    ], 0..32)) {
        let ok = values.iter().all(|v| v.fract() == 0.0 && (0.0..=255.0).contains(v));
        prop_assert_eq!(check_pixels(&values, "image").is_ok(), ok);
    }
}

// ---------------------------------------------------------------------------
// /v1 JSON instances.

/// A document shaped like a `/v1/triage` request, with arbitrary values.
fn triage_document() -> impl Strategy<Value = Value> {
    let instance = (
        prop::option::of(json_leaf()),
        prop::option::of(prop_oneof![
            prop::collection::vec(json_number(), 0..10).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,3}", json_leaf()), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            json_value(),
        ]),
        prop::option::of(prop_oneof![
            base64_text().prop_map(Value::String),
            json_leaf()
        ]),
        prop::option::of((key(), json_leaf())),
    )
        .prop_map(|(id, features, image, extra)| {
            let mut m = Map::new();
            id.map(|v| m.insert("id".into(), v));
            features.map(|v| m.insert("features".into(), v));
            image.map(|v| m.insert("image".into(), v));
            extra.map(|(k, v)| m.insert(k, v));
            Value::Object(m)
        });
    (
        prop_oneof![
            4 => prop::collection::vec(instance, 0..4).prop_map(Value::Array),
            1 => json_value(),
        ],
        prop::option::of(json_leaf()),
    )
        .prop_map(|(instances, request_id)| {
            let mut doc = json!({"instances": instances});
            if let Some(r) = request_id {
                doc["request_id"] = r;
            }
            doc
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn v1_instances_from_arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<TriageRequest>(&body);
    }

    #[test]
    fn v1_instances_from_arbitrary_json_never_panic(doc in prop_oneof![json_value(), triage_document()]) {
        let text = serde_json::to_vec(&doc).unwrap();
        let _ = serde_json::from_slice::<TriageRequest>(&text);
        let _ = serde_json::from_value::<TriageRequest>(doc);
    }

    #[test]
    fn v1_instances_from_edited_documents_never_panic(doc in triage_document(), edits in prop::collection::vec(edit(), 1..4)) {
        let mut text = serde_json::to_vec(&doc).unwrap();
        for e in &edits {
            apply(&mut text, e);
        }
        let _ = serde_json::from_slice::<TriageRequest>(&text);
    }
}

/// Nesting far past serde_json's recursion limit is an error, not a stack
/// overflow, for both APIs' documents.
#[test]
fn deeply_nested_documents_are_refused_without_overflow() {
    for prefix in [
        "{\"instances\":[{\"features\":",
        "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":",
    ] {
        let mut text = prefix.to_string();
        text.push_str(&"[".repeat(100_000));
        text.push_str(&"]".repeat(100_000));
        text.push_str("}]}");
        assert!(serde_json::from_str::<TriageRequest>(&text).is_err());
        assert!(serde_json::from_str::<InferRequest>(&text).is_err());
    }
}

// ---------------------------------------------------------------------------
// PNG / JPEG decoding.

/// Checks one decode of `data`: no panic (the caller's proptest would report
/// it), no single allocation past the decoder's limit, and consistent answers.
fn check_decode(data: &[u8]) -> Result<(), TestCaseError> {
    let (dims, largest) = largest_allocation(|| dimensions(data));
    prop_assert!(
        largest as u64 <= 1 << 20,
        "dimensions() allocated {largest} bytes at once"
    );
    if let Ok((h, w)) = dims {
        prop_assert!(h <= MAX_IMAGE_SIDE && w <= MAX_IMAGE_SIDE);
    }
    for resize in [true, false] {
        let (decoded, largest) = largest_allocation(|| decode_rgb(data, 32, 32, resize));
        prop_assert!(
            largest as u64 <= MAX_DECODER_ALLOC,
            "decode_rgb allocated {largest} bytes at once (limit {MAX_DECODER_ALLOC})"
        );
        match decoded {
            Ok(pixels) => {
                prop_assert_eq!(pixels.len(), 32 * 32 * 3);
                prop_assert!(
                    dims.is_ok(),
                    "decoded although dimensions() refused: {:?}",
                    dims
                );
                if !resize {
                    prop_assert_eq!(dims.clone().unwrap(), (32, 32));
                }
            }
            Err(ImageError::WrongSize { .. }) => prop_assert!(!resize),
            Err(_) => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn images_from_arbitrary_bytes_never_panic(data in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        // Past the format sniffing, so the decoders see the rest.
        (prop::sample::select(vec![&b"\x89PNG\r\n\x1a\n"[..], &b"\xff\xd8\xff"[..], &b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"[..]]),
         prop::collection::vec(any::<u8>(), 0..512))
            .prop_map(|(magic, rest)| [magic, &rest].concat()),
    ]) {
        check_decode(&data)?;
    }

    #[test]
    fn mutated_png_and_jpeg_never_panic(which in any::<Index>(), edits in prop::collection::vec(edit(), 1..6)) {
        let images = real_images();
        let (_, original) = &images[which.index(images.len())];
        let mut data = original.clone();
        for e in &edits {
            apply(&mut data, e);
        }
        check_decode(&data)?;
    }
}

#[test]
fn real_images_decode() {
    for (name, bytes) in real_images() {
        assert_eq!(dimensions(bytes), Ok((32, 32)), "{name}");
        assert_eq!(
            decode_rgb(bytes, 32, 32, false).map(|p| p.len()),
            Ok(32 * 32 * 3),
            "{name}"
        );
    }
}

/// A header declaring a huge canvas is refused from the header alone, before
/// anything near its size is allocated.
#[test]
fn huge_declared_images_are_refused_before_allocating() {
    let jpeg = &real_images()
        .iter()
        .find(|(n, _)| n.ends_with(".jpg"))
        .unwrap()
        .1;
    // SOF0/SOF2: FF C0/C2, length (2), precision (1), height (2), width (2).
    let sof = jpeg
        .windows(2)
        .position(|w| w[0] == 0xff && (w[1] == 0xc0 || w[1] == 0xc2))
        .expect("a SOF marker");
    let mut huge_jpeg = jpeg.clone();
    huge_jpeg[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    let mut cases = vec![("jpeg 65535x65535", huge_jpeg)];
    for (w, h) in [
        (100_000, 100_000),
        (MAX_IMAGE_SIDE + 1, 1),
        (1, MAX_IMAGE_SIDE + 1),
    ] {
        cases.push(("png", png_declaring(w, h)));
    }
    for (name, data) in cases {
        let (dims, largest) = largest_allocation(|| dimensions(&data));
        assert!(
            matches!(dims, Err(ImageError::TooLarge { .. })),
            "{name}: {dims:?}"
        );
        assert!(
            largest <= 1 << 20,
            "{name}: dimensions() allocated {largest}"
        );
        let (decoded, largest) = largest_allocation(|| decode_rgb(&data, 32, 32, true));
        assert!(
            matches!(decoded, Err(ImageError::TooLarge { .. })),
            "{name}: {decoded:?}"
        );
        assert!(largest <= 1 << 20, "{name}: decode_rgb allocated {largest}");
    }
    // At the limit the header passes; the empty data then fails to decode.
    let at_limit = png_declaring(MAX_IMAGE_SIDE, MAX_IMAGE_SIDE);
    assert_eq!(dimensions(&at_limit), Ok((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)));
    let (decoded, largest) = largest_allocation(|| decode_rgb(&at_limit, 32, 32, true));
    assert!(decoded.is_err());
    assert!(largest as u64 <= MAX_DECODER_ALLOC, "allocated {largest}");
}

/// A header declaring an empty canvas (0 pixels a side) is an error, not a
/// division by zero in the decoder or the resize.
#[test]
fn empty_declared_images_are_an_error() {
    let jpeg = &real_images()
        .iter()
        .find(|(n, _)| n.ends_with(".jpg"))
        .unwrap()
        .1;
    let sof = jpeg
        .windows(2)
        .position(|w| w[0] == 0xff && (w[1] == 0xc0 || w[1] == 0xc2))
        .expect("a SOF marker");
    let mut cases = Vec::new();
    for (h, w) in [(0u16, 0u16), (0, 32), (32, 0)] {
        let mut data = jpeg.clone();
        data[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        data[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        cases.push((format!("jpeg {h}x{w}"), data));
    }
    for (w, h) in [(0, 0), (0, 32), (32, 0)] {
        cases.push((format!("png {h}x{w}"), png_declaring(w, h)));
    }
    for (name, data) in cases {
        for resize in [true, false] {
            assert!(decode_rgb(&data, 32, 32, resize).is_err(), "{name} decoded");
        }
    }
}

// ---------------------------------------------------------------------------
// CSV import.

/// The option shapes a CSV is imported with: count columns, annotator columns
/// (classes named or inferred, with reference and split), long format, and an
/// image column.
fn csv_options(csv: &Path) -> Vec<CsvImport> {
    let base = CsvImport {
        csv: csv.to_path_buf(),
        labels: LabelLayout::Counts(vec!["a".into(), "b".into()]),
        features: None,
        reference: None,
        split: None,
        classes: None,
        min_labels: 0,
        image_column: None,
        group: None,
    };
    let xy = || Some(vec!["x".into(), "y".into()]);
    vec![
        // Every other column a feature: the text columns make this an error.
        base.clone(),
        CsvImport {
            features: Some(vec!["x".into()]),
            reference: Some("r".into()),
            min_labels: 3,
            ..base.clone()
        },
        CsvImport {
            labels: LabelLayout::Annotators(vec!["a".into(), "b".into(), "c".into()]),
            features: xy(),
            reference: Some("r".into()),
            split: Some("s".into()),
            ..base.clone()
        },
        CsvImport {
            labels: LabelLayout::Annotators(vec!["a".into(), "b".into()]),
            classes: Some(vec!["cat".into(), "dog".into(), "0".into()]),
            features: xy(),
            min_labels: 1,
            ..base.clone()
        },
        CsvImport {
            labels: LabelLayout::Long {
                case: "id".into(),
                label: "l".into(),
            },
            features: Some(vec!["x".into()]),
            reference: Some("r".into()),
            split: Some("s".into()),
            ..base.clone()
        },
        CsvImport {
            labels: LabelLayout::Annotators(vec!["a".into(), "b".into()]),
            split: Some("s".into()),
            image_column: Some("image".into()),
            group: None,
            ..base
        },
    ]
}

fn import_all(csv: &Path) {
    for opts in csv_options(csv) {
        let _ = read_labeled(&opts);
        if opts.image_column.is_none() {
            let _ = import_csv(&opts);
        }
    }
}

/// CSV text: a header of known and odd column names, rows of cells that are
/// small numbers, class names, splits, paths, quotes, commas, line breaks,
/// or anything. Numbers stay small here: large counts and class indices are
/// the targeted tests below.
fn csv_text() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "c", "r", "s", "x", "y", "id", "l", "image"]).prop_map(str::to_string),
        1 => "[a-z ,\"]{0,3}",
    ];
    let cell = prop_oneof![
        4 => (0u32..4).prop_map(|v| v.to_string()),
        1 => (0u32..1000).prop_map(|v| v.to_string()),
        1 => prop::sample::select(vec![
            "", " ", "-1", "1.5", "NaN", "inf", "-inf", "1e40", "cat", "dog", "train", "test",
            "cal", "calibration", "x.png", "\"", "\"\"", "\"a,b\"", "\"a\nb\"", "a\"b", "\r", "\u{feff}",
        ]).prop_map(str::to_string),
        1 => ".{0,6}",
    ];
    let sep = prop::sample::select(vec![",", ",", ",", ";", "\t", ",,"]);
    let eol = prop::sample::select(vec!["\n", "\n", "\r\n", "\r", "", "\n\n"]);
    (
        prop::collection::vec(name, 0..8),
        prop::collection::vec(prop::collection::vec((cell, sep.clone()), 0..9), 0..6),
        eol,
    )
        .prop_map(|(header, rows, eol)| {
            let mut text = header.join(",");
            text.push_str(eol);
            for row in rows {
                for (cell, sep) in row {
                    text.push_str(&cell);
                    text.push_str(sep);
                }
                text.push_str(eol);
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn csv_import_of_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("labels.csv");
        std::fs::write(&csv, &bytes).unwrap();
        import_all(&csv);
    }

    #[test]
    fn csv_import_of_arbitrary_text_never_panics(text in csv_text()) {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("labels.csv");
        std::fs::write(&csv, text.as_bytes()).unwrap();
        import_all(&csv);
    }

    /// Well-formed CSVs (written by the csv crate) whose cells mostly fit
    /// their column (labels, reference, split, features, case ids, paths),
    /// with a few replaced by anything: most imports get past the header and
    /// into every row check.
    #[test]
    fn csv_import_of_plausible_rows_never_panics(
        rows in prop::collection::vec(plausible_row(), 0..8),
        garbage in prop::collection::vec((any::<Index>(), 0usize..CSV_COLUMNS.len(), csv_garbage()), 0..3),
    ) {
        let mut rows = rows;
        for (row, col, cell) in garbage {
            if !rows.is_empty() {
                let i = row.index(rows.len());
                rows[i][col] = cell;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("labels.csv");
        let mut w = csv::Writer::from_path(&csv).unwrap();
        w.write_record(CSV_COLUMNS).unwrap();
        for row in &rows {
            w.write_record(row).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        import_all(&csv);
    }
}

/// The columns of [`plausible_row`], named as [`csv_options`] uses them.
const CSV_COLUMNS: [&str; 10] = ["a", "b", "c", "r", "s", "x", "y", "id", "l", "image"];

fn plausible_row() -> impl Strategy<Value = Vec<String>> {
    let label = || {
        prop_oneof![
            30 => (0u32..3).prop_map(|v| v.to_string()),
            2 => Just(String::new()),
            1 => prop::sample::select(vec!["cat", "dog"]).prop_map(str::to_string),
        ]
    };
    let split = prop::sample::select(vec!["train", "test", "calibration", "cal", " Test "]);
    let feature = || {
        prop_oneof![
            prop::sample::select(vec!["0.5", "1", "-2", "1e3"]).prop_map(str::to_string),
            (-1e6f32..1e6).prop_map(|v| v.to_string()),
        ]
    };
    (
        (label(), label(), label(), label()),
        split,
        (feature(), feature()),
        (0u32..4).prop_map(|v| v.to_string()),
        label(),
        prop::sample::select(vec!["x.png", "d/y.jpg"]),
    )
        .prop_map(|((a, b, c, r), s, (x, y), id, l, image)| {
            vec![a, b, c, r, s.to_string(), x, y, id, l, image.to_string()]
        })
}

/// A cell that rarely fits its column. Numbers stay small: large counts and
/// class indices are the targeted tests below.
fn csv_garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "-1",
            "3",
            "999",
            "0.5",
            "NaN",
            "inf",
            "1e40",
            "-0",
            "+1",
            "cat",
            "Train",
            "x",
            "\"",
            "a,b",
            "a\nb",
            "\u{feff}1",
        ])
        .prop_map(str::to_string),
        ".{0,6}",
    ]
}

/// Writes `rows` under `header` as a CSV in `dir`.
fn write_csv(dir: &Path, header: &[&str], rows: &[&[&str]]) -> PathBuf {
    let path = dir.join("labels.csv");
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(header).unwrap();
    for row in rows {
        w.write_record(*row).unwrap();
    }
    w.flush().unwrap();
    path
}

/// Found by this file: per-class counts were summed as u32 unchecked, so two
/// counts whose sum passed u32::MAX panicked ("attempt to add with overflow")
/// in a debug build and wrapped in release. The per-case total is now checked
/// and capped.
#[test]
fn csv_counts_that_overflow_u32_together_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), &["a", "b", "x"], &[&["4294967295", "1", "0.5"]]);
    let opts = CsvImport {
        csv,
        labels: LabelLayout::Counts(vec!["a".into(), "b".into()]),
        features: None,
        reference: None,
        split: None,
        classes: None,
        min_labels: 1,
        image_column: None,
        group: None,
    };
    assert!(read_labeled(&opts).is_err());
    assert!(import_csv(&opts).is_err());
}

/// Found by this file: without `--classes`, annotator (and long format)
/// imports named the classes `0..=max` for the largest class index in any label
/// cell, unbounded ("18446744073709551615" panicked with "capacity overflow",
/// "4000000000" asked for ~100 GB). Class indices are now bounded.
#[test]
fn csv_huge_class_index_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for layout in [
        LabelLayout::Annotators(vec!["a".into(), "b".into()]),
        LabelLayout::Long {
            case: "id".into(),
            label: "a".into(),
        },
    ] {
        let csv = write_csv(
            dir.path(),
            &["id", "a", "b", "x"],
            &[&["1", "18446744073709551615", "0", "0.5"]],
        );
        let opts_huge = CsvImport {
            csv: csv.clone(),
            labels: layout.clone(),
            features: Some(vec!["x".into()]),
            reference: None,
            split: None,
            classes: None,
            min_labels: 0,
            image_column: None,
            group: None,
        };
        assert!(read_labeled(&opts_huge).is_err());
        let csv = write_csv(
            dir.path(),
            &["id", "a", "b", "x"],
            &[&["1", "4000000000", "0", "0.5"]],
        );
        let opts = CsvImport {
            csv,
            labels: layout,
            features: Some(vec!["x".into()]),
            reference: None,
            split: None,
            classes: None,
            min_labels: 0,
            image_column: None,
            group: None,
        };
        assert!(read_labeled(&opts).is_err());
    }
}

// ---------------------------------------------------------------------------
// Image paths named by a CSV.

/// An images folder holding `inside/ok.png`, with `secret.png` next to it
/// (outside): a path that escaped the folder would find a valid image.
fn images_fixture(dir: &Path) -> PathBuf {
    let png = &real_images()
        .iter()
        .find(|(n, _)| n == "rgb8.png")
        .unwrap()
        .1;
    let images = dir.join("images");
    std::fs::create_dir_all(images.join("inside")).unwrap();
    std::fs::write(images.join("inside/ok.png"), png).unwrap();
    std::fs::write(dir.join("secret.png"), png).unwrap();
    std::fs::write(images.join("secret.png"), b"not an image").unwrap();
    images
}

fn import_paths(dir: &Path, images: &Path, paths: &[&str]) -> Result<(), String> {
    let rows: Vec<[&str; 3]> = paths.iter().map(|p| [*p, "0", "1"]).collect();
    let rows: Vec<&[&str]> = rows.iter().map(|r| &r[..]).collect();
    let csv = write_csv(dir, &["image", "a", "b"], &rows);
    let opts = ImageImport {
        images: images.to_path_buf(),
        labels: CsvImport {
            csv,
            labels: LabelLayout::Annotators(vec!["a".into(), "b".into()]),
            features: None,
            reference: None,
            split: None,
            classes: None,
            min_labels: 0,
            image_column: Some("image".into()),
            group: None,
        },
        height: 32,
        width: 32,
        resize: false,
    };
    import_images(&opts).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn image_paths_outside_the_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = images_fixture(dir.path());
    let archive = images_archive(dir.path());
    let secret = dir.path().join("secret.png");
    let secret = secret.to_str().unwrap();
    for images in [&folder, &archive] {
        assert_eq!(
            import_paths(dir.path(), images, &["inside/ok.png"]),
            Ok(()),
            "{}",
            images.display()
        );
        for path in [
            "../secret.png",
            "/etc/passwd",
            secret,
            "inside/../../secret.png",
            "a/../../secret.png",
            "./../secret.png",
            "..",
            "inside/..",
            "inside/./../../secret.png",
        ] {
            let err = import_paths(dir.path(), images, &["inside/ok.png", path]).expect_err(path);
            assert!(err.contains("must be relative"), "{path}: {err}");
        }
    }
}

/// `images.tgz` in `dir`, holding `inside/ok.png`.
fn images_archive(dir: &Path) -> PathBuf {
    let png = &real_images()
        .iter()
        .find(|(n, _)| n == "rgb8.png")
        .unwrap()
        .1;
    let path = dir.join("images.tgz");
    let file = std::fs::File::create(&path).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(png.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "inside/ok.png", &png[..])
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    path
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Paths built from `..`, `.`, `/` and names: any with a parent or root
    /// component is refused before a file is opened; the rest stay inside the
    /// folder (found there, or not found).
    #[test]
    fn image_paths_never_escape_the_folder(parts in prop::collection::vec(
        prop::sample::select(vec!["..", ".", "/", "inside", "ok.png", "secret.png", "a", "//", "\\..", "..."]),
        1..7,
    )) {
        let path = parts.concat();
        let dir = tempfile::tempdir().unwrap();
        let images = images_fixture(dir.path());
        let result = import_paths(dir.path(), &images, &[path.as_str()]);
        let escapes = Path::new(&path)
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_)));
        if escapes {
            let err = result.expect_err("an escaping path was accepted");
            prop_assert!(err.contains("must be relative"), "{}: {}", path, err);
        } else if let Err(err) = result {
            // Inside the folder: found, not found, or (`secret.png` there)
            // not an image; never refused as escaping.
            prop_assert!(!err.contains("must be relative"), "{}: {}", path, err);
        }
    }
}
