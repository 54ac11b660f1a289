use serde_json::{json, Value};

use crate::helpers::*;

fn infer_path() -> String {
    format!("/v2/models/{MODEL}/infer")
}

#[actix_web::test]
async fn server_and_model_metadata() {
    let app = spawn_app().await;
    let s: Value = app.get("/v2").await.json().await.unwrap();
    assert_eq!(s["name"], "triaged");
    let m = app.get_json(&format!("/v2/models/{MODEL}")).await;
    assert_eq!(
        m["inputs"][0],
        json!({"name": "features", "datatype": "FP32", "shape": [-1, 8]})
    );
    assert!(m["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["name"] == "probabilities"));
    assert_eq!(
        app.get(&format!("/v2/models/{MODEL}/ready")).await.status(),
        200
    );
    assert_eq!(
        app.get(&format!("/v2/models/{MODEL}/versions/1/ready"))
            .await
            .status(),
        200
    );
    assert_problem(
        app.get(&format!("/v2/models/{MODEL}/versions/9/ready"))
            .await,
        404,
        "serves version 1",
    )
    .await;
    assert_problem(app.get("/v2/models/nope/ready").await, 404, "nope").await;
}

#[actix_web::test]
async fn infer_with_json_tensors_matches_the_native_api() {
    let app = spawn_app().await;
    let rows = vec![nodule(1), nodule(2), nodule(3)];
    let native: Value = app
        .post_json("/v1/triage", &triage_body(&rows))
        .await
        .json()
        .await
        .unwrap();
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    for data in [json!(flat), json!(rows)] {
        let body = json!({"id": "q1", "inputs": [{"name": "features", "shape": [3, 8], "datatype": "FP32", "data": data}]});
        let r = app.post_json(&infer_path(), &body).await;
        assert_eq!(r.status(), 200);
        let r: Value = r.json().await.unwrap();
        assert_eq!(r["model_name"], MODEL);
        assert_eq!(r["model_version"], "1");
        assert_eq!(r["id"], "q1");
        let out = |name: &str| {
            r["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == name)
                .unwrap()
                .clone()
        };
        let probs = out("probabilities");
        assert_eq!(probs["shape"], json!([3, 5]));
        assert_eq!(probs["datatype"], "FP32");
        let p = probs["data"].as_array().unwrap();
        for i in 0..3 {
            for k in 0..5 {
                let want = native["results"][i]["prediction"]["probabilities"][k]
                    .as_f64()
                    .unwrap();
                assert!((p[i * 5 + k].as_f64().unwrap() - want).abs() < 1e-6);
            }
            assert_eq!(
                out("route")["data"][i],
                native["results"][i]["decision"]["route"]
            );
            assert_eq!(
                out("class")["data"][i],
                native["results"][i]["prediction"]["class"]
            );
        }
        assert_eq!(out("disagreement")["shape"], json!([3]));
    }
}

#[actix_web::test]
async fn infer_accepts_binary_tensors_and_selects_outputs() {
    let app = spawn_app().await;
    let row: Vec<f32> = nodule(4).iter().map(|&v| v as f32).collect();
    let binary: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "parameters": {"binary_data_size": binary.len()}}],
        "outputs": [{"name": "probabilities"}, {"name": "route"}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&binary);
    let r = app
        .client
        .post(app.url(&infer_path()))
        .header("Inference-Header-Content-Length", header.len().to_string())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    let names: Vec<&str> = r["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["probabilities", "route"]);
    let native: Value = app
        .post_json("/v1/triage", &triage_body(&[nodule(4)]))
        .await
        .json()
        .await
        .unwrap();
    let want = native["results"][0]["prediction"]["probabilities"][0]
        .as_f64()
        .unwrap();
    assert!((r["outputs"][0]["data"][0].as_f64().unwrap() - want).abs() < 1e-6);

    let bad = json!({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": nodule(1)}], "outputs": [{"name": "logits"}]});
    assert_problem(
        app.post_json(&infer_path(), &bad).await,
        400,
        "unknown output 'logits'",
    )
    .await;
}
