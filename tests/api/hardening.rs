//! Regression tests for the findings of a probe of the running server, one per
//! finding, named after it (the probe's numbering). Store-level ones are in
//! tests/daemons/store.rs; image decoding's budget is in images.rs; the disk-full case
//! is in tests/daemons/disk_full.rs.

use std::time::Duration;

use serde_json::{json, Value};
use triaged::auth::Role;

use crate::helpers::*;

const NODULE: [f64; 8] = [2193.25, 22.61, 5.5, 234.6, 110.2, 3.0, 0.65, 1.0];

/// A server with two clients, a reviewer and an admin, in shadow mode (every
/// case is routed, so every request commits).
async fn spawn_with_tokens() -> TestApp {
    spawn_app_with(true, |s| {
        s.triage.mode = triaged::policy::TriageMode::Shadow;
        s.auth.tokens = vec![
            token("client-a-secret", Role::Client, "clinic-a"),
            token("client-b-secret", Role::Client, "clinic-b"),
            token("reviewer-secret", Role::Reviewer, "dr-a"),
            token("admin-secret", Role::Admin, "root"),
        ];
    })
    .await
}

async fn triage_as(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/triage"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn one_case(id: &str, request_id: &str) -> Value {
    json!({"request_id": request_id, "instances": [{"id": id, "features": NODULE}]})
}

#[tokio::test]
async fn finding_2_request_ids_never_return_another_callers_answer() {
    let app = spawn_with_tokens().await;
    let a = triage_as(&app, "client-a-secret", &one_case("patient-A", "order-1")).await;
    assert_eq!(a.status(), 200);
    let b = triage_as(&app, "client-b-secret", &one_case("patient-B", "order-1")).await;
    assert_eq!(b.status(), 200);
    let b: Value = b.json().await.unwrap();
    assert_eq!(b["results"][0]["id"], "patient-B", "{b}");
    assert!(
        !b.to_string().contains("patient-A"),
        "clinic-a's answer leaked: {b}"
    );
}

#[tokio::test]
async fn finding_3_a_replay_with_another_body_is_refused() {
    let app = spawn_with_tokens().await;
    let first = triage_as(&app, "client-a-secret", &one_case("p1", "order-7")).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    // The same body again: the first answer, byte for byte in meaning.
    let again: Value = triage_as(&app, "client-a-secret", &one_case("p1", "order-7"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, first);
    // Another body under the same id: refused, and nothing triaged.
    let changed = json!({"request_id": "order-7", "instances": [
        {"id": "p2", "features": NODULE}, {"id": "p3", "features": NODULE}]});
    assert_problem(
        triage_as(&app, "client-a-secret", &changed).await,
        409,
        "different request body",
    )
    .await;
    let stats: Value = app
        .client
        .get(app.url("/v1/reviews/stats"))
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_status"]["pending"], 1, "{stats}");
}

#[tokio::test]
async fn finding_4_extreme_finite_inputs_are_a_422_not_an_outage() {
    for mode in [
        triaged::policy::TriageMode::Policy,
        triaged::policy::TriageMode::AutomateAll,
    ] {
        let app = spawn_app_with(true, |s| s.triage.mode = mode).await;
        let big = [3e38, -3e38, 3e38, 3e38, -3e38, 3e38, 3e38, 3e38];
        let resp = app
            .post_json(
                "/v1/triage",
                &json!({"instances": [{"features": NODULE}, {"features": big}]}),
            )
            .await;
        assert!(
            resp.headers().get("retry-after").is_none(),
            "{mode:?}: not an outage"
        );
        assert_problem(resp, 422, "not finite").await;
        // The same numbers on /v2.
        let body = json!({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": big}]});
        let resp = app
            .post_json(&format!("/v2/models/{MODEL}/infer"), &body)
            .await;
        assert_eq!(resp.status(), 400, "{mode:?}");
        // And the server still triages ordinary cases.
        let ok = app
            .post_json("/v1/triage", &json!({"instances": [{"features": NODULE}]}))
            .await;
        assert_eq!(ok.status(), 200, "{mode:?}");
    }
}

#[tokio::test]
async fn finding_5_audit_reports_are_bounded_and_overflow_is_refused() {
    let app = spawn_app().await;
    let path = format!("/v1/admin/models/{MODEL}/audit");
    let huge = app
        .post_json(
            &path,
            &json!({"correct": 1_000_000_000_000u64, "wrong": 1_000_000_000_000u64}),
        )
        .await;
    assert_problem(huge, 422, "at most").await;
    let overflow = app
        .post_json(&path, &json!({"correct": u64::MAX, "wrong": 1}))
        .await;
    assert_eq!(overflow.status(), 422);
    // Nothing was recorded; a sane report still is.
    let ok: Value = app
        .post_json(&path, &json!({"correct": 999_999, "wrong": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok["audited"], 1_000_000, "{ok}");
    let m = app.get_json(&format!("/v1/models/{MODEL}")).await;
    assert_eq!(m["audit"]["audited"], 1_000_000, "{m}");
}

#[tokio::test]
async fn finding_6_v2_checks_requested_outputs_before_anything_is_queued() {
    let app = spawn_app_with(true, |s| {
        s.triage.mode = triaged::policy::TriageMode::Shadow;
    })
    .await;
    let data: Vec<f64> = NODULE
        .iter()
        .chain(&NODULE)
        .chain(&NODULE)
        .copied()
        .collect();
    let body = json!({
        "inputs": [{"name": "features", "shape": [3, 8], "datatype": "FP32", "data": data}],
        "outputs": [{"name": "no_such_output"}],
    });
    let resp = app
        .post_json(&format!("/v2/models/{MODEL}/infer"), &body)
        .await;
    let problem = assert_problem(resp, 400, "unknown output 'no_such_output'").await;
    assert!(problem["error"].is_string(), "the protocol's error member");
    let stats = app.get_json("/v1/reviews/stats").await;
    assert_eq!(stats["by_status"]["pending"], 0, "no orphan cases: {stats}");
}

#[tokio::test]
async fn finding_6_v2_request_ids_replay_the_first_answer() {
    let app = spawn_app_with(true, |s| {
        s.triage.mode = triaged::policy::TriageMode::Shadow;
    })
    .await;
    let path = format!("/v2/models/{MODEL}/infer");
    let body = |rows: usize| {
        let data: Vec<f64> = (0..rows).flat_map(|_| NODULE).collect();
        json!({
            "parameters": {"request_id": "batch-42"},
            "inputs": [{"name": "features", "shape": [rows, 8], "datatype": "FP32", "data": data}],
        })
    };
    let first: Value = app.post_json(&path, &body(2)).await.json().await.unwrap();
    let again: Value = app.post_json(&path, &body(2)).await.json().await.unwrap();
    assert_eq!(first, again, "a replay returns the first answer");
    let stats = app.get_json("/v1/reviews/stats").await;
    assert_eq!(stats["by_status"]["pending"], 2, "no second copy: {stats}");
    assert_problem(
        app.post_json(&path, &body(3)).await,
        409,
        "different request body",
    )
    .await;
}

#[tokio::test]
async fn finding_7_model_names_never_reach_the_filesystem() {
    let app = spawn_app().await;
    // A real bundle outside models.dir, named through an encoded path.
    let outside = tempfile::tempdir().unwrap();
    install_bundle(outside.path(), "1");
    let evil = outside.path().join(MODEL).display().to_string();
    let absolute = evil.replace('/', "%2F");
    let relative = format!(
        "{}{}",
        "..%2F".repeat(12),
        evil.trim_start_matches('/').replace('/', "%2F")
    );
    for path in [
        format!("/v1/models/{absolute}"),
        format!("/v1/models/{relative}"),
        format!("/v2/models/{relative}"),
    ] {
        let resp = app.get(&path).await;
        let body = assert_problem(resp, 404, "no such model").await;
        assert!(!body.to_string().contains(&evil), "{body}");
    }
    let resp = app
        .post_json(
            &format!("/v1/models/{relative}/triage"),
            &triage_body(&[nodule(1)]),
        )
        .await;
    assert_problem(resp, 404, "no such model").await;
    let resp = app
        .post_json(&format!("/v1/admin/models/{relative}/reload"), &json!({}))
        .await;
    let body = assert_problem(resp, 404, "no such model").await;
    let text = body.to_string();
    assert!(!text.contains("/tmp") && !text.contains(&evil), "{text}");
}

#[tokio::test]
async fn finding_7_a_refused_reload_names_no_absolute_path() {
    let app = spawn_app().await;
    let v2 = app.models_dir.join(MODEL).join("2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("model.json"), "{ not json").unwrap();
    let resp = app.reload().await;
    let body = assert_problem(resp, 409, "not reloaded").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        !detail.contains(&app.models_dir.display().to_string()),
        "{detail}"
    );
}

#[tokio::test]
async fn finding_9_a_locked_store_fails_fast_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("locked.db");
    let url = format!("sqlite://{}", db.display());
    let app = spawn_app_with(true, |s| {
        s.triage.mode = triaged::policy::TriageMode::Shadow;
        s.store.url = url.clone().into();
        s.store.write_timeout_ms = 300;
    })
    .await;
    let ok = app
        .post_json("/v1/triage", &triage_body(&[nodule(1)]))
        .await;
    assert_eq!(ok.status(), 200);
    // Another process-like writer holds the database's write lock.
    use sqlx::Connection;
    let mut holder = sqlx::SqliteConnection::connect(&format!("{url}?mode=rw"))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..7 {
        let (client, url) = (client.clone(), app.url("/v1/triage"));
        pending.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&triage_body(&[nodule(i)]))
                .send()
                .await
                .expect("answered before the client's 30 s timeout")
        }));
    }
    for p in pending {
        let resp = p.await.unwrap();
        assert!(resp.headers().get("retry-after").is_some());
        let body = assert_problem(resp, 503, "unavailable").await;
        // finding 11: the database's own error text stays in the server's log.
        let detail = body["detail"].as_str().unwrap();
        assert!(
            !detail.contains("code:") && !detail.contains("SQLITE"),
            "{detail}"
        );
    }
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    drop(holder);
    let after = app
        .post_json("/v1/triage", &triage_body(&[nodule(9)]))
        .await;
    assert_eq!(
        after.status(),
        200,
        "the store recovers once the lock is gone"
    );
}

#[tokio::test]
async fn finding_10_the_audit_log_pages_past_any_limit() {
    let app = spawn_app_with(true, |s| {
        s.triage.mode = triaged::policy::TriageMode::Shadow
    })
    .await;
    app.post_json(
        "/v1/triage",
        &triage_body(&[nodule(1), nodule(2), nodule(3)]),
    )
    .await;
    for _ in 0..3 {
        app.as_subject(reqwest::Method::POST, "/v1/reviews/claim", "root")
            .send()
            .await
            .unwrap();
    }
    let page = app.get("/v1/audit?limit=2").await;
    let next = page
        .headers()
        .get("link")
        .expect("a full page links to the next")
        .to_str()
        .unwrap()
        .to_string();
    let first: Vec<Value> = page.json().await.unwrap();
    assert_eq!(first.len(), 2);
    // Open mode: the caller is an admin, and the log says so.
    assert!(first.iter().all(|e| e["role"] == "admin"), "{first:?}");
    let next = next.trim_start_matches('<').split('>').next().unwrap();
    let second: Vec<Value> = app.get(next).await.json().await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(second[0]["id"].as_i64() > first[1]["id"].as_i64());
}

#[tokio::test]
async fn finding_12_the_bearer_scheme_is_case_insensitive() {
    let app = spawn_with_tokens().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let resp = app
            .client
            .get(app.url("/v1/models"))
            .header("authorization", format!("{scheme} client-a-secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{scheme}");
    }
    let basic = app
        .client
        .get(app.url("/v1/models"))
        .header("authorization", "Basic client-a-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
}

#[tokio::test]
async fn the_reviewer_disagreement_metric_observes_every_case_resolved_by_two_or_more() {
    let app = spawn_app_with(true, |s| {
        s.triage.threshold = 0.0;
        s.triage.reviewers = 2;
    })
    .await;
    let resp = app
        .post_json("/v1/triage", &triage_body(&[nodule(3)]))
        .await;
    assert_eq!(resp.status(), 200);
    // 1–1 asks a third reviewer (no strict majority); 2–1 resolves.
    for (reviewer, label) in [("dr-a", 0), ("dr-b", 1), ("dr-c", 1)] {
        let claim: Value = app
            .as_subject(reqwest::Method::POST, "/v1/reviews/claim", reviewer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = claim["case"]["id"].as_str().unwrap().to_string();
        let labeled = app
            .as_subject(
                reqwest::Method::POST,
                &format!("/v1/reviews/{id}/labels"),
                reviewer,
            )
            .json(&json!({ "label": label }))
            .send()
            .await
            .unwrap();
        assert_eq!(labeled.status(), 200);
    }
    let m = app.metrics().await;
    assert_eq!(
        metric_value(&m, "triaged_review_reviewer_disagreement_count"),
        Some(1.0),
        "one case resolved by three reviewers"
    );
    let sum = metric_value(&m, "triaged_review_reviewer_disagreement_sum").unwrap();
    assert!((sum - 2.0 / 3.0).abs() < 1e-9, "D of 0,1,1 is 2/3: {sum}");
}
