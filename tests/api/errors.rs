use std::io::{Read, Write};

use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn every_bad_input_is_a_precise_problem() {
    let app = spawn_app_with(true, |s| s.server.max_instances = 5).await;
    let names = app.feature_names().await;
    let good: serde_json::Map<String, Value> = names
        .iter()
        .cloned()
        .zip(nodule(1).into_iter().map(|v| json!(v)))
        .collect();

    assert_problem(
        app.post_raw("/v1/triage", "{not json", "application/json")
            .await,
        400,
        "not valid JSON",
    )
    .await;
    assert_problem(
        app.post_raw("/v1/triage", "a=b", "application/x-www-form-urlencoded")
            .await,
        415,
        "application/json",
    )
    .await;
    assert_problem(
        app.post_json("/v1/triage", &json!({"instances": []})).await,
        422,
        "empty",
    )
    .await;
    assert_problem(
        app.post_json("/v1/triage", &json!({"cases": []})).await,
        422,
        "schema",
    )
    .await;
    let six: Vec<Vec<f64>> = (0..6).map(nodule).collect();
    assert_problem(
        app.post_json("/v1/triage", &triage_body(&six)).await,
        422,
        "at most 5",
    )
    .await;
    assert_problem(
        app.post_json("/v1/triage", &json!({"instances": [{"features": [1.0]}]}))
            .await,
        422,
        "has 1 values; model 'lidc-malignancy' expects 8",
    )
    .await;
    let mut nan = good.clone();
    nan.insert(names[2].clone(), json!("NaN"));
    assert_problem(
        app.post_json("/v1/triage", &json!({"instances": [{"features": nan}]}))
            .await,
        422,
        &format!("'{}' must be a finite number", names[2]),
    )
    .await;
    let mut unknown = good.clone();
    unknown.insert("shoe_size".into(), json!(42));
    assert_problem(
        app.post_json("/v1/triage", &json!({"instances": [{"features": unknown}]}))
            .await,
        422,
        "unknown feature 'shoe_size'",
    )
    .await;
    let mut missing = good.clone();
    missing.remove(&names[0]);
    assert_problem(
        app.post_json("/v1/triage", &json!({"instances": [{"features": missing}]}))
            .await,
        422,
        &format!("missing feature '{}'", names[0]),
    )
    .await;
    assert_problem(
        app.post_json("/v1/triage", &json!({"instances": [{"id": "x"}]}))
            .await,
        422,
        "'features' is missing",
    )
    .await;
    assert_problem(
        app.post_json("/v1/triage", &json!({"instances": [{"features": "1,2"}]}))
            .await,
        422,
        "array or an object",
    )
    .await;
    assert_problem(
        app.post_json("/v1/models/nope/triage", &triage_body(&[nodule(1)]))
            .await,
        404,
        "no model named 'nope'",
    )
    .await;
    assert_problem(app.get("/v1/nothing/here").await, 404, "no route").await;
    // Over the body limit: 413 as a problem, before the body is read.
    let big = format!(
        "{{\"instances\": [{}]}}",
        vec!["{\"features\":[1,2,3,4,5,6,7,8]}"; 60_000].join(",")
    );
    assert_problem(
        app.post_raw("/v1/triage", big, "application/json").await,
        413,
        "larger than the limit",
    )
    .await;
    // The Open Inference Protocol route adds the protocol's `error` member.
    let body = json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]});
    let p = assert_problem(
        app.post_json(&format!("/v2/models/{MODEL}/infer"), &body)
            .await,
        400,
        "expects [batch, 8]",
    )
    .await;
    assert_eq!(p["error"], p["detail"]);
}

#[actix_web::test]
async fn an_announced_oversized_body_gets_413_without_being_read() {
    let app = spawn_app().await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let status_line = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST /v1/triage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            64 << 20
        );
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(&vec![b'['; 1 << 16]);
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
    .await
    .unwrap();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    assert!(
        status_line.contains("application/problem+json"),
        "{status_line}"
    );
}

#[actix_web::test]
async fn a_thousand_malformed_requests_leave_the_server_up() {
    let app = spawn_app().await;
    let bad: Vec<(&str, String, &str)> = vec![
        ("/v1/triage", "{not json".into(), "application/json"),
        ("/v1/triage", r#"{"instances": []}"#.into(), "application/json"),
        ("/v1/triage", r#"{"instances": [{"features": [1.0]}]}"#.into(), "application/json"),
        ("/v1/triage", r#"{"instances": [{"features": [1,2,3,4,5,6,7,"NaN"]}]}"#.into(), "application/json"),
        ("/v1/triage", r#"{"instances": [{"features": [1,2,3,4,5,6,7,1e999]}]}"#.into(), "application/json"),
        ("/v1/triage", r#"{"instances": [{"features": {"x": 1}}]}"#.into(), "application/json"),
        ("/v1/models/nope/triage", r#"{"instances": [{"features": [1,2,3,4,5,6,7,8]}]}"#.into(), "application/json"),
        ("/v1/triage", "a=b".into(), "application/x-www-form-urlencoded"),
        ("/v1/triage", "\u{0}\u{1}\u{2}".into(), "application/json"),
        ("/v1/triage", "[]".into(), "application/json"),
        ("/v2/models/lidc-malignancy/infer", "{}".into(), "application/json"),
        ("/v2/models/lidc-malignancy/infer", r#"{"inputs": [{"name": "features", "shape": [1, 8], "datatype": "BYTES", "data": ["a"]}]}"#.into(), "application/json"),
        ("/v2/models/lidc-malignancy/infer", r#"{"inputs": [{"name": "features", "shape": [2, 8], "datatype": "FP32", "data": [1, 2]}]}"#.into(), "application/json"),
    ];
    for i in 0..1000 {
        let (path, body, ct) = &bad[i % bad.len()];
        let resp = app.post_raw(path, body.clone(), ct).await;
        let status = resp.status().as_u16();
        assert!((400..500).contains(&status), "{path} {body}: {status}");
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            ctype.starts_with("application/problem+json"),
            "{path} {body}: {ctype}"
        );
    }
    let ok = app
        .post_json("/v1/triage", &triage_body(&[nodule(2)]))
        .await;
    assert_eq!(ok.status(), 200, "the server still answers");
}

#[actix_web::test]
async fn a_missed_deadline_is_503_with_retry_after() {
    // The inference thread waits 200 ms to fill a batch; the deadline is 1 ms.
    let app = spawn_app_with(true, |s| {
        s.batch.request_timeout_ms = 1;
        s.batch.max_wait_us = 200_000;
    })
    .await;
    let resp = app
        .post_json("/v1/triage", &triage_body(&[nodule(1)]))
        .await;
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_problem(resp, 503, "deadline").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let m = app.metrics().await;
    let rejected = metric_value(
        &m,
        &format!("triaged_rejected_requests_total{{model=\"{MODEL}\",reason=\"deadline\"}}"),
    );
    assert!(rejected.unwrap() >= 1.0, "{m}");
}
