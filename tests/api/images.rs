//! Image models through the API: base64 PNG/JPEG instances on `/v1`, BYTES and
//! UINT8 tensors on `/v2`, and a precise 4xx for every kind of bad image. The
//! model is a tiny CNN trained once per test binary on the committed CIFAR
//! fixture, so these tests do not depend on the shipped bundle.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use candle_core::Device;
use serde_json::{json, Value};
use triaged::data::format;
use triaged::train::{self, TrainConfig};

use crate::common::{cifar10h, cifar10n, cifar_fixture};
use crate::helpers::*;

const IMAGE_MODEL: &str = "cifar-tiny";

/// A one-epoch 4/8-channel CNN on the fixture, trained once and shared.
fn tiny_bundle() -> &'static Path {
    static BUNDLE: OnceLock<PathBuf> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let (train_data, cal_data) = (cifar10n(), cifar10h());
        let (train_path, cal_path) = (dir.join("n.safetensors"), dir.join("h.safetensors"));
        format::save(&train_data, &train_path).unwrap();
        format::save(&cal_data, &cal_path).unwrap();
        let out = dir.join(IMAGE_MODEL).join("1");
        let cfg = TrainConfig {
            epochs: 1,
            batch_size: 20,
            ensemble: 1,
            hidden: vec![8],
            stages: "4,8".into(),
            ..TrainConfig::default()
        };
        let calibration = Some((&cal_data, cal_path.as_path()));
        train::train(
            &train_data,
            &train_path,
            calibration,
            &out,
            &cfg,
            &Device::Cpu,
            false,
        )
        .unwrap();
        out
    })
}

async fn spawn_image_app() -> TestApp {
    spawn_image_app_with(|_| {}).await
}

async fn spawn_image_app_with(tweak: impl FnOnce(&mut triaged::config::Settings)) -> TestApp {
    let app = spawn_app_with(false, |s| {
        let dst = s.models.dir.join(IMAGE_MODEL).join("1");
        std::fs::create_dir_all(&dst).unwrap();
        for f in ["model.json", "model.safetensors"] {
            std::fs::copy(tiny_bundle().join(f), dst.join(f)).unwrap();
        }
        s.models.default = IMAGE_MODEL.into();
        tweak(s);
    })
    .await;
    app.wait_ready().await;
    app
}

fn triage_path() -> String {
    format!("/v1/models/{IMAGE_MODEL}/triage")
}

fn jpeg(class: &str, i: usize) -> Vec<u8> {
    std::fs::read(cifar_fixture().join(format!("test/{class}/{i:04}.jpg"))).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes).unwrap().to_rgb8()
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageOutputFormat::Png)
        .unwrap();
    out.into_inner()
}

async fn triage_images(app: &TestApp, images: &[String]) -> Value {
    let body = json!({"instances": images.iter().map(|i| json!({"image": i})).collect::<Vec<_>>()});
    let resp = app.post_json(&triage_path(), &body).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn probabilities(result: &Value) -> Vec<f64> {
    result["prediction"]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect()
}

fn assert_close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

#[actix_web::test]
async fn a_jpeg_or_png_instance_gets_a_prediction_and_a_decision() {
    let app = spawn_image_app().await;
    let cat = jpeg("cat", 1);
    let r = triage_images(&app, &[b64(&cat)]).await;
    let result = &r["results"][0];
    assert_eq!(r["model"]["name"], IMAGE_MODEL);
    let p = probabilities(result);
    assert_eq!(p.len(), 10);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    let class = result["prediction"]["class"].as_u64().unwrap() as usize;
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(tiny_bundle().join("model.json")).unwrap()).unwrap();
    assert_eq!(result["prediction"]["label"], manifest["classes"][class]);
    assert!(["automate", "review"].contains(&result["decision"]["route"].as_str().unwrap()));
    let d = result["uncertainty"]["disagreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&d));

    // The same pixels as a lossless PNG, or as a data URL, give the same answer.
    let same_png = png(&decode(&cat));
    let url = format!("data:image/jpeg;base64,{}", b64(&cat));
    let r2 = triage_images(&app, &[b64(&same_png), url]).await;
    assert_close(&probabilities(&r2["results"][0]), &p);
    assert_close(&probabilities(&r2["results"][1]), &p);

    // An image of another size is resized to the model's 32×32, like import-images.
    let big = image::imageops::resize(&decode(&cat), 64, 48, image::imageops::FilterType::Triangle);
    let r3 = triage_images(&app, &[b64(&png(&big))]).await;
    assert_eq!(probabilities(&r3["results"][0]).len(), 10);
}

#[actix_web::test]
async fn a_batch_of_images_answers_like_each_image_alone() {
    let app = spawn_image_app().await;
    let images: Vec<String> = ["cat", "ship", "frog", "truck"]
        .iter()
        .map(|c| b64(&jpeg(c, 0)))
        .collect();
    let batch = triage_images(&app, &images).await;
    for (i, image) in images.iter().enumerate() {
        let single = triage_images(&app, std::slice::from_ref(image)).await;
        assert_close(
            &probabilities(&batch["results"][i]),
            &probabilities(&single["results"][0]),
        );
    }
}

#[actix_web::test]
async fn every_bad_image_gets_a_precise_422() {
    let app = spawn_image_app().await;
    let cat = jpeg("cat", 1);
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
    let wide = png(&image::RgbImage::new(4097, 1));
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({}),
            "instances[0]: 'image' (base64 PNG or JPEG) is missing",
        ),
        (json!({"features": [1.0]}), "takes images, not features"),
        (
            json!({"image": "***"}),
            "instances[0].image is not valid base64",
        ),
        (json!({"image": ""}), "instances[0].image is empty"),
        (
            json!({"image": b64(b"just some text")}),
            "is not a PNG or JPEG image",
        ),
        (
            json!({"image": b64(&gif)}),
            "is a GIF image; only PNG and JPEG are accepted",
        ),
        (
            json!({"image": b64(&cat[..cat.len() / 3])}),
            "instances[0].image is unreadable",
        ),
        (json!({"image": b64(&wide)}), "at most 4096 pixels a side"),
        (json!({"image": "data:image/png,abc"}), "without ';base64,'"),
    ];
    for (instance, needle) in cases {
        // The bad image is second: the error must name its index.
        let needle = needle.replace("instances[0]", "instances[1]");
        let body = json!({"instances": [{"image": b64(&cat)}, instance]});
        let resp = app.post_json(&triage_path(), &body).await;
        assert_problem(resp, 422, &needle).await;
    }
    // A refused request makes no decision (so queues nothing).
    let m = app.metrics().await;
    let decided: f64 = m
        .lines()
        .filter(|l| l.starts_with("triaged_decisions_total{") && l.contains(IMAGE_MODEL))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(decided, 0.0, "a refused request made decisions:\n{m}");
}

#[actix_web::test]
async fn a_routed_image_is_shown_to_its_reviewer_and_exported_as_an_image() {
    // Review everything (threshold 0), so every image is queued.
    let app = spawn_image_app_with(|s| s.triage.threshold = 0.0).await;
    let cat = jpeg("cat", 1);
    let r = triage_images(&app, &[b64(&cat)]).await;
    let id = r["results"][0]["decision"]["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    let image_path = format!("/v1/reviews/{id}/image");
    let claim = app
        .as_subject(reqwest::Method::POST, "/v1/reviews/claim", "dr-a")
        .send()
        .await
        .unwrap();
    assert_eq!(claim.status(), 200);
    let shown = app
        .as_subject(reqwest::Method::GET, &image_path, "dr-a")
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    assert_eq!(shown.headers()["content-type"], "image/png");
    let png = shown.bytes().await.unwrap();
    assert_eq!(image::guess_format(&png).unwrap(), image::ImageFormat::Png);
    assert_eq!(decode(&png), decode(&cat), "the pixels the model saw");

    let label = app
        .as_subject(
            reqwest::Method::POST,
            &format!("/v1/reviews/{id}/labels"),
            "dr-a",
        )
        .json(&json!({"label": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(label.status(), 200);
    let export = app
        .get(&format!("/v1/reviews/export?model={IMAGE_MODEL}"))
        .await;
    assert_eq!(export.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reviews.safetensors");
    std::fs::write(&path, export.bytes().await.unwrap()).unwrap();
    let data = format::load(&path).unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data.counts(0)[3], 1);
    let mut pixels = Vec::new();
    data.extend_inputs(0, &mut pixels);
    let want: Vec<f32> = decode(&cat).into_raw().into_iter().map(f32::from).collect();
    assert_eq!(pixels, want);

    // A feature case has no image.
    let lidc = spawn_app_with(true, |s| s.triage.threshold = 0.0).await;
    let r: Value = lidc
        .post_json("/v1/triage", &triage_body(&[nodule(1)]))
        .await
        .json()
        .await
        .unwrap();
    let id = r["results"][0]["decision"]["case_id"].as_str().unwrap();
    assert_problem(
        lidc.get(&format!("/v1/reviews/{id}/image")).await,
        404,
        "is not a served image model",
    )
    .await;
}

#[actix_web::test]
async fn a_feature_model_refuses_images() {
    let app = spawn_app().await;
    let body = json!({"instances": [{"image": b64(&jpeg("cat", 1))}]});
    let resp = app
        .post_json(&format!("/v1/models/{MODEL}/triage"), &body)
        .await;
    assert_problem(resp, 422, "takes features, not images").await;
}

fn oip_path() -> String {
    format!("/v2/models/{IMAGE_MODEL}/infer")
}

async fn infer_probabilities(app: &TestApp, body: &Value) -> Vec<f64> {
    let r: Value = app.post_json(&oip_path(), body).await.json().await.unwrap();
    oip_probabilities(&r)
}

fn oip_probabilities(r: &Value) -> Vec<f64> {
    let out = r["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[actix_web::test]
async fn oip_takes_images_as_bytes_or_uint8_pixels() {
    let app = spawn_image_app().await;
    let m = app.get_json(&format!("/v2/models/{IMAGE_MODEL}")).await;
    assert_eq!(
        m["inputs"][0],
        json!({"name": "image", "datatype": "UINT8", "shape": [-1, 32, 32, 3]})
    );
    let cat = jpeg("cat", 1);
    let native = triage_images(&app, &[b64(&cat)]).await;
    let want = probabilities(&native["results"][0]);

    let pixels: Vec<u8> = decode(&cat).into_raw();
    let uint8 = json!({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": pixels}]});
    assert_close(&infer_probabilities(&app, &uint8).await, &want);

    let bytes = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(&cat)]}]});
    assert_close(&infer_probabilities(&app, &bytes).await, &want);

    // Triton's binary extension: a 4-byte length, then the encoded image.
    let mut element = (cat.len() as u32).to_le_bytes().to_vec();
    element.extend_from_slice(&cat);
    let header = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
        "parameters": {"binary_data_size": element.len()}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&element);
    let resp = app
        .client
        .post(app.url(&oip_path()))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header.len().to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_close(&oip_probabilities(&r), &want);
}

#[actix_web::test]
async fn oip_refuses_bad_image_tensors_with_400() {
    let app = spawn_image_app().await;
    let tensor = |datatype: &str, shape: Value, data: Value| json!({"inputs": [{"name": "image", "datatype": datatype, "shape": shape, "data": data}]});
    let zeros = vec![0u8; 32 * 32 * 3];
    let mut too_bright = zeros.iter().map(|&v| u32::from(v)).collect::<Vec<_>>();
    too_bright[5] = 300;
    let cases = vec![
        (
            tensor("UINT8", json!([1, 16, 16, 3]), json!(zeros)),
            "expects UINT8 [batch, 32, 32, 3]",
        ),
        (
            tensor("UINT8", json!([1, 32, 32, 3]), json!(too_bright)),
            "value 5 is 300",
        ),
        (
            tensor("UINT8", json!([2, 32, 32, 3]), json!(zeros)),
            "holds 3072 values",
        ),
        (
            tensor("FP32", json!([1, 32, 32, 3]), json!(zeros)),
            "BYTES (PNG/JPEG) or UINT8",
        ),
        (
            tensor("BYTES", json!([1]), json!(["***"])),
            "image 0 is not valid base64",
        ),
        (
            tensor("BYTES", json!([1]), json!([b64(b"text")])),
            "image 0 is not a PNG or JPEG",
        ),
        (
            tensor("BYTES", json!([2]), json!([b64(&jpeg("cat", 1))])),
            "holds 1 images",
        ),
        (
            tensor("BYTES", json!([1, 32]), json!(["x"])),
            "one encoded image each",
        ),
        (
            tensor("BYTES", json!([1]), json!([3])),
            "not a base64 string",
        ),
    ];
    for (body, needle) in cases {
        let resp = app.post_json(&oip_path(), &body).await;
        assert_eq!(resp.status(), 400, "{needle}");
        let body: Value = resp.json().await.unwrap();
        let text = body.to_string();
        assert!(text.contains(needle), "{text} lacks {needle:?}");
    }
}

#[tokio::test]
async fn finding_8_images_over_the_pixel_budget_are_refused_before_decoding() {
    // Budget: two 64x64 images' worth of pixels per request.
    let app = spawn_image_app_with(|s| s.server.max_image_pixels = 2 * 64 * 64).await;
    let big = b64(&png(&image::RgbImage::new(64, 64)));
    let ok = app
        .post_json(
            &triage_path(),
            &json!({"instances": [{"image": big}, {"image": big}]}),
        )
        .await;
    assert_eq!(ok.status(), 200, "within the budget");
    let over = app
        .post_json(
            &triage_path(),
            &json!({"instances": [{"image": big}, {"image": big}, {"image": big}]}),
        )
        .await;
    assert_problem(over, 422, "pixels").await;
    // The same budget on /v2 (a bad request there).
    let body = json!({"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": [big, big, big]}]});
    let resp = app
        .post_json(&format!("/v2/models/{IMAGE_MODEL}/infer"), &body)
        .await;
    assert_problem(resp, 400, "pixels").await;
}
