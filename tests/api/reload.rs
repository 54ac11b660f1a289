use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

#[actix_web::test]
async fn reload_while_requests_stream_in_loses_none() {
    let app = spawn_app().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut streams = Vec::new();
    for w in 0..4 {
        let client = app.client.clone();
        let url = app.url("/v1/triage");
        let stop = stop.clone();
        streams.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = w;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .post(&url)
                    .json(&triage_body(&[nodule(i)]))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "request {i} during reload");
                let v: Value = r.json().await.unwrap();
                seen.push(v["model"]["version"].as_str().unwrap().to_string());
                i += 4;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    install_bundle(&app.models_dir, "2");
    let r = app.reload().await;
    assert_eq!(r.status(), 200);
    let outcome: Value = r.json().await.unwrap();
    assert_eq!(outcome["version"], "2");
    assert_eq!(outcome["previous_version"], "1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut versions = BTreeSet::new();
    let mut total = 0;
    for s in streams {
        let seen = s.await.unwrap();
        total += seen.len();
        versions.extend(seen);
    }
    assert!(total > 20, "only {total} requests streamed");
    assert_eq!(versions, BTreeSet::from(["1".to_string(), "2".to_string()]));
    let m: Value = app
        .get(&format!("/v1/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["version"], "2");
    assert_eq!(m["versions"], serde_json::json!(["1", "2"]));
    let metrics = app.metrics().await;
    let info: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("triaged_model_info{"))
        .collect();
    assert_eq!(
        info.len(),
        1,
        "only the served version is reported: {info:?}"
    );
    assert!(
        info[0].contains("version=\"2\"") && info[0].ends_with(" 1"),
        "{info:?}"
    );
}

#[actix_web::test]
async fn a_broken_bundle_is_refused_and_the_old_version_keeps_serving() {
    let app = spawn_app().await;
    let broken = install_bundle(&app.models_dir, "3");
    std::fs::write(broken.join("model.safetensors"), b"garbage").unwrap();
    let r = app.reload().await;
    let p = assert_problem(r, 409, "model.safetensors").await;
    assert!(p["detail"]
        .as_str()
        .unwrap()
        .contains("previous version keeps serving"));
    let m: Value = app
        .get(&format!("/v1/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["version"], "1");
    assert_eq!(
        app.post_json("/v1/triage", &triage_body(&[nodule(1)]))
            .await
            .status(),
        200
    );

    // A manifest that fails validation is refused the same way.
    std::fs::write(broken.join("model.json"), "{\"format_version\": 1}").unwrap();
    let r = app.reload().await;
    assert_problem(r, 409, "model.json").await;
    assert_problem(
        app.client
            .post(app.url("/v1/admin/models/ghost/reload"))
            .send()
            .await
            .unwrap(),
        404,
        "ghost",
    )
    .await;
}
