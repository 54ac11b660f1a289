use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use triaged::auth::Role;

use crate::helpers::*;

/// Triage rows and return the case ids of those routed to review.
async fn routed(app: &TestApp, rows: &[Vec<f64>]) -> Vec<String> {
    let r: Value = app
        .post_json("/v1/triage", &triage_body(rows))
        .await
        .json()
        .await
        .unwrap();
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["decision"]["route"] == "review")
        .map(|x| {
            x["decision"]["case_id"]
                .as_str()
                .expect("a routed case has an id")
                .to_string()
        })
        .collect()
}

#[actix_web::test]
async fn a_routed_case_is_claimed_labeled_resolved_and_exported_for_training() {
    // Enough cases that the export's hash split (60/20/20 by case id) gives the
    // calibration split's fitting part some for sure (with 30, about 1 run in
    // 10 got none and training refused the data set).
    const CASES: usize = 60;
    // Review everything (threshold 0), so every case is queued.
    let app = spawn_app_with(true, |s| s.triage.threshold = 0.0).await;
    let rows: Vec<Vec<f64>> = (0..CASES).map(nodule).collect();
    let ids = routed(&app, &rows).await;
    assert_eq!(ids.len(), CASES);
    let pending: Value = app
        .get("/v1/reviews?status=pending")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending.as_array().unwrap().len(), CASES);

    let mut seen = std::collections::BTreeSet::new();
    for i in 0..CASES {
        let claim = app
            .as_subject(Method::POST, "/v1/reviews/claim", "dr-a")
            .send()
            .await
            .unwrap();
        assert_eq!(claim.status(), 200);
        let claim: Value = claim.json().await.unwrap();
        let id = claim["case"]["id"].as_str().unwrap().to_string();
        assert!(seen.insert(id.clone()));
        let case: Value = app
            .as_subject(Method::GET, &format!("/v1/reviews/{id}"), "dr-a")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(case["input"].as_array().unwrap().len(), 8);
        let label = app
            .as_subject(Method::POST, &format!("/v1/reviews/{id}/labels"), "dr-a")
            .json(&json!({"label": i % 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(label.status(), 200);
        let outcome: Value = label.json().await.unwrap();
        assert_eq!(outcome["status"], "resolved");
    }
    let none = app
        .as_subject(Method::POST, "/v1/reviews/claim", "dr-a")
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 204, "queue empty");
    let stats: Value = app.get("/v1/reviews/stats").await.json().await.unwrap();
    assert_eq!(stats["by_status"]["resolved"], CASES);

    let export = app.get(&format!("/v1/reviews/export?model={MODEL}")).await;
    assert_eq!(export.status(), 200);
    let bytes = export.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reviews.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let data = triaged::data::format::load(&path).unwrap();
    assert_eq!(data.len(), CASES);
    assert_eq!(data.num_classes(), 5);
    // The next model trains on what the reviewers said.
    let out = dir.path().join("models/from-reviews/1");
    let cfg = triaged::train::TrainConfig {
        epochs: 3,
        ensemble: 1,
        ..Default::default()
    };
    triaged::train::train(
        &data,
        &path,
        None,
        &out,
        &cfg,
        &candle_core::Device::Cpu,
        false,
    )
    .unwrap();
    assert!(out.join("model.safetensors").exists());
}

#[actix_web::test]
async fn a_repeated_request_id_returns_the_first_answer_and_no_second_case() {
    let app = spawn_app_with(true, |s| s.triage.threshold = 0.0).await;
    let body = json!({"request_id": "rq-42", "instances": [{"features": nodule(1)}, {"features": nodule(2)}]});
    let first = app
        .post_json("/v1/triage", &body)
        .await
        .text()
        .await
        .unwrap();
    let again = app
        .post_json("/v1/triage", &body)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(first, again);
    let stats: Value = app.get("/v1/reviews/stats").await.json().await.unwrap();
    assert_eq!(stats["by_status"]["pending"], 2);
}

#[actix_web::test]
async fn every_endpoint_checks_the_callers_role() {
    let app = spawn_app_with(true, |s| {
        s.auth.tokens = vec![
            token("client-secret", Role::Client, "ehr"),
            token("reviewer-secret", Role::Reviewer, "dr-a"),
            token("admin-secret", Role::Admin, "ops"),
        ];
        s.triage.threshold = 0.0;
    })
    .await;
    let case_body = triage_body(&[nodule(1)]);
    // (method, path, body, roles allowed)
    let endpoints: Vec<(Method, String, Option<Value>, &[&str])> = vec![
        (
            Method::POST,
            "/v1/triage".into(),
            Some(case_body.clone()),
            &["client", "admin"],
        ),
        (
            Method::POST,
            format!("/v1/models/{MODEL}/triage"),
            Some(case_body.clone()),
            &["client", "admin"],
        ),
        (
            Method::GET,
            "/v1/models".into(),
            None,
            &["client", "reviewer", "admin"],
        ),
        (
            Method::GET,
            format!("/v1/models/{MODEL}"),
            None,
            &["client", "reviewer", "admin"],
        ),
        (
            Method::POST,
            format!("/v2/models/{MODEL}/infer"),
            Some(
                json!({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": nodule(1)}]}),
            ),
            &["client", "admin"],
        ),
        (
            Method::GET,
            format!("/v2/models/{MODEL}"),
            None,
            &["client", "admin"],
        ),
        (
            Method::POST,
            "/v1/reviews/claim".into(),
            None,
            &["reviewer", "admin"],
        ),
        (Method::GET, "/v1/reviews".into(), None, &["admin"]),
        (Method::GET, "/v1/reviews/stats".into(), None, &["admin"]),
        (
            Method::GET,
            "/v1/reviews/agreement".into(),
            None,
            &["admin"],
        ),
        (Method::GET, "/v1/audit".into(), None, &["admin"]),
        (
            Method::POST,
            format!("/v1/admin/models/{MODEL}/reload"),
            None,
            &["admin"],
        ),
        (
            Method::POST,
            format!("/v1/admin/models/{MODEL}/audit"),
            Some(json!({"correct": 1, "wrong": 0})),
            &["admin"],
        ),
    ];
    let callers: [(&str, Option<&str>); 5] = [
        ("none", None),
        ("bad", Some("wrong-secret")),
        ("client", Some("client-secret")),
        ("reviewer", Some("reviewer-secret")),
        ("admin", Some("admin-secret")),
    ];
    for (method, path, body, allowed) in &endpoints {
        for (who, secret) in &callers {
            let mut req = app.client.request(method.clone(), app.url(path));
            if let Some(s) = secret {
                req = req.bearer_auth(s);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            if matches!(status, 401 | 403) && path.starts_with("/v2") {
                // Refusals on the inference protocol carry its `error` member too.
                let p: Value = resp.json().await.unwrap();
                assert_eq!(p["error"], p["detail"], "{who} {method} {path}: {p}");
            }
            let expected_ok = allowed.contains(who);
            match *who {
                "none" | "bad" => assert_eq!(status, 401, "{who} {method} {path}"),
                _ if expected_ok => assert!(
                    status != 401 && status != 403,
                    "{who} {method} {path}: {status}"
                ),
                _ => assert_eq!(status, 403, "{who} {method} {path}"),
            }
        }
    }
    // Open endpoints stay open.
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/metrics",
        "/openapi.json",
    ] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    // A reviewer sees only the cases it claimed.
    let ids = {
        let r: Value = app
            .client
            .post(app.url("/v1/triage"))
            .bearer_auth("client-secret")
            .json(&triage_body(&[nodule(5)]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["results"][0]["decision"]["case_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let peek = app
        .client
        .get(app.url(&format!("/v1/reviews/{ids}")))
        .bearer_auth("reviewer-secret")
        .send()
        .await
        .unwrap();
    assert_problem(peek, 403, "not claimed by you").await;
    let admin_read = app
        .client
        .get(app.url(&format!("/v1/reviews/{ids}")))
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(admin_read.status(), 200);
}

#[actix_web::test]
async fn audit_rows_match_the_calls() {
    let app = spawn_app_with(true, |s| s.triage.threshold = 0.0).await;
    let id = routed(&app, &[nodule(3)]).await.remove(0);
    app.as_subject(Method::POST, "/v1/reviews/claim", "dr-b")
        .send()
        .await
        .unwrap();
    app.as_subject(Method::GET, &format!("/v1/reviews/{id}"), "dr-b")
        .send()
        .await
        .unwrap();
    app.as_subject(Method::POST, &format!("/v1/reviews/{id}/renew"), "dr-b")
        .send()
        .await
        .unwrap();
    app.as_subject(Method::POST, &format!("/v1/reviews/{id}/labels"), "dr-b")
        .json(&json!({"label": 2}))
        .send()
        .await
        .unwrap();
    app.as_subject(Method::GET, &format!("/v1/reviews/{id}"), "ops")
        .send()
        .await
        .unwrap();
    let log: Value = app
        .get(&format!("/v1/audit?case_id={id}"))
        .await
        .json()
        .await
        .unwrap();
    let rows: Vec<(String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("dr-b", "case.claim"),
        ("dr-b", "case.read"),
        ("dr-b", "case.renew"),
        ("dr-b", "case.label"),
        ("ops", "case.read"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(rows, want);
    app.get(&format!("/v1/reviews/export?model={MODEL}")).await;
    let all: Value = app.get("/v1/audit").await.json().await.unwrap();
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "cases.export"));
}

#[actix_web::test]
async fn shadow_mode_agreement_is_queryable() {
    let app = spawn_app_with(true, |s| {
        s.triage.mode = triaged::config::TriageMode::Shadow
    })
    .await;
    let ids = routed(&app, &(0..6).map(nodule).collect::<Vec<_>>()).await;
    assert_eq!(ids.len(), 6, "shadow mode reviews everything");
    for _ in 0..6 {
        let claim: Value = app
            .as_subject(Method::POST, "/v1/reviews/claim", "dr-c")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = claim["case"]["id"].as_str().unwrap();
        let model_class = claim["case"]["model_class"].as_i64().unwrap();
        app.as_subject(Method::POST, &format!("/v1/reviews/{id}/labels"), "dr-c")
            .json(&json!({"label": model_class}))
            .send()
            .await
            .unwrap();
    }
    let a: Value = app
        .get(&format!("/v1/reviews/agreement?model={MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["n"], 6);
    assert_eq!(a["model_accuracy"], 1.0);
    let would = a["policy_would_automate"].as_u64().unwrap();
    assert!(would <= 6);
}

#[actix_web::test]
async fn webhooks_are_signed_and_retried_until_the_receiver_accepts() {
    // A receiver that fails the first two deliveries.
    let calls = Arc::new(AtomicUsize::new(0));
    // (event, signature, body, delivery id) of each accepted delivery.
    type Delivery = (String, String, String, String);
    let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let (c, r) = (calls.clone(), received.clone());
    let receiver = actix_web::HttpServer::new(move || {
        let (c, r) = (c.clone(), r.clone());
        actix_web::App::new().default_service(actix_web::web::to(
            move |req: actix_web::HttpRequest, body: actix_web::web::Bytes| {
                let (c, r) = (c.clone(), r.clone());
                async move {
                    if c.fetch_add(1, Ordering::SeqCst) < 2 {
                        return actix_web::HttpResponse::InternalServerError().finish();
                    }
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    r.lock().unwrap().push((
                        h("x-triaged-event"),
                        h("x-triaged-signature"),
                        String::from_utf8_lossy(&body).to_string(),
                        h("x-triaged-delivery"),
                    ));
                    actix_web::HttpResponse::Ok().finish()
                }
            },
        ))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = receiver.addrs()[0].port();
    let receiver = receiver.run();
    tokio::spawn(receiver);
    let url = format!("http://127.0.0.1:{port}/hook");
    let app = spawn_app_with(true, |s| {
        s.triage.threshold = 0.0;
        s.webhooks.max_backoff_seconds = 1;
        s.webhooks.targets = vec![triaged::config::WebhookTarget {
            url: url.clone().into(),
            secret: "hook-secret".into(),
            events: vec!["case.created".into(), "case.resolved".into()],
        }];
    })
    .await;
    let id = routed(&app, &[nodule(4)]).await.remove(0);
    for _ in 0..100 {
        if !received.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        1,
        "delivered once after {} calls",
        calls.load(Ordering::SeqCst)
    );
    let (event, signature, body, delivery) = &got[0];
    let delivery: i64 = delivery
        .parse()
        .expect("X-Triaged-Delivery is the outbox id");
    assert_eq!(event, "case.created");
    assert!(body.contains(&id));
    // The signature covers a timestamp, the delivery id and the body: a receiver recomputes it
    // from the `t=` it carries and rejects stale ones.
    let t: i64 = signature
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .and_then(|t| t.parse().ok())
        .expect("t=<unix seconds>");
    assert!(
        (chrono::Utc::now().timestamp() - t).abs() < 120,
        "{signature}"
    );
    assert_eq!(
        signature,
        &triaged::webhooks::signature("hook-secret", t, delivery, body.as_bytes())
    );
    assert!(calls.load(Ordering::SeqCst) >= 3);
    let m = app.metrics().await;
    assert!(
        metric_value(&m, r#"triaged_webhook_deliveries_total{outcome="failed"}"#).unwrap() >= 2.0
    );
    assert_eq!(
        metric_value(
            &m,
            r#"triaged_webhook_deliveries_total{outcome="delivered"}"#
        ),
        Some(1.0)
    );
}

#[actix_web::test]
async fn a_public_bind_without_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = triaged::config::Settings::defaults();
    settings.server.bind = "0.0.0.0:0".parse().unwrap();
    settings.store.url = format!("sqlite://{}", dir.path().join("q.db").display()).into();
    let err = triaged::startup::Application::build(settings)
        .await
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("without auth tokens"), "{err}");
}

#[actix_web::test]
async fn concurrent_identical_labels_are_recorded_once() {
    let app = spawn_app_with(true, |s| s.triage.threshold = 0.0).await;
    let id = routed(&app, &[nodule(8)]).await.remove(0);
    app.as_subject(Method::POST, "/v1/reviews/claim", "dr-d")
        .send()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let req = app
            .as_subject(Method::POST, &format!("/v1/reviews/{id}/labels"), "dr-d")
            .json(&json!({"label": 1}));
        tasks.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 409),
        "{statuses:?}"
    );
    let case: Value = app
        .get(&format!("/v1/reviews/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(case["labels"], 1);
    assert_eq!(case["status"], "resolved");
}
