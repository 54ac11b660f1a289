use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

#[actix_web::test]
async fn not_ready_until_the_default_model_loads() {
    let app = spawn_app_with(false, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let live = app.get("/v2/health/live").await;
    assert_eq!(live.status(), 200);
    let ready = app.get("/v2/health/ready").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["ready"], false);
    assert!(app.metrics().await.contains("triaged_ready 0"));
    assert_problem(
        app.post_json("/v1/triage", &triage_body(&[nodule(1)]))
            .await,
        404,
        MODEL,
    )
    .await;

    install_bundle(&app.models_dir, "1");
    let resp = app.reload().await;
    assert_eq!(resp.status(), 200);
    let ready = app.get("/v2/health/ready").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        app.post_json("/v1/triage", &triage_body(&[nodule(1)]))
            .await
            .status(),
        200
    );
}

#[actix_web::test]
async fn graceful_stop_finishes_in_flight_requests() {
    // Requests sit a second in the batcher, so they are in flight when stop begins
    // even on a loaded machine.
    let app = spawn_app_with(true, |s| s.batch.max_wait_us = 1_000_000).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let client = app.client.clone();
        let url = app.url("/v1/triage");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&triage_body(&[nodule(i)]))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stopped = tokio::spawn({
        let handle = app.handle.clone();
        async move { handle.stop(true).await }
    });
    for t in tasks {
        assert_eq!(t.await.unwrap().expect("in-flight request answered"), 200);
    }
    stopped.await.unwrap();
    app.server.await.unwrap().expect("server exits cleanly");
}

#[cfg(unix)]
#[actix_web::test]
async fn sighup_reloads_from_disk() {
    let app = spawn_app().await;
    install_bundle(&app.models_dir, "2");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..100 {
        let m: Value = app
            .get(&format!("/v1/models/{MODEL}"))
            .await
            .json()
            .await
            .unwrap();
        if m["version"] == "2" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("SIGHUP did not reload version 2");
}
