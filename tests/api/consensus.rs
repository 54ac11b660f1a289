//! Consensus that never breaks a tie by class index, and the audit monitor kept
//! with the queue: ties ask for more labels, then an adjudicator decides; the
//! monitor's state survives a restart, and an admin clears a fall-back.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use triaged::auth::Role;

use crate::helpers::*;

async fn claim_and_label(app: &TestApp, reviewer: &str, label: i64) -> (u16, Value) {
    let claim = app
        .as_subject(Method::POST, "/v1/reviews/claim", reviewer)
        .send()
        .await
        .unwrap();
    if claim.status() == 204 {
        return (204, Value::Null);
    }
    let claim: Value = claim.json().await.unwrap();
    let id = claim["case"]["id"].as_str().unwrap().to_string();
    let resp = app
        .as_subject(Method::POST, &format!("/v1/reviews/{id}/labels"), reviewer)
        .json(&json!({ "label": label }))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn reviewers_who_all_disagree_send_the_case_to_adjudication_not_to_class_0() {
    let app = spawn_app_with(true, |s| {
        s.triage.threshold = 0.0;
        s.triage.reviewers = 2;
    })
    .await;
    let resp: Value = app
        .post_json("/v1/triage", &triage_body(&[nodule(5)]))
        .await
        .json()
        .await
        .unwrap();
    let id = resp["results"][0]["decision"]["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Five classes, five reviewers, five different labels (the cap is 5).
    for (i, label) in [4, 3, 2, 1, 0].into_iter().enumerate() {
        let (status, outcome) = claim_and_label(&app, &format!("dr-{i}"), label).await;
        assert_eq!(status, 200, "{outcome}");
        assert_ne!(outcome["status"], "resolved", "resolved by vote: {outcome}");
    }
    let case = app.get_json(&format!("/v1/reviews/{id}")).await;
    assert_eq!(case["status"], "adjudication", "{case}");
    assert!(case.get("consensus").is_none());
    let (status, _) = claim_and_label(&app, "dr-9", 1).await;
    assert_eq!(status, 204, "a case in adjudication is not claimable");
    let listed: Value = app.get_json("/v1/reviews?status=adjudication").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let done: Value = app
        .as_subject(
            Method::POST,
            &format!("/v1/reviews/{id}/adjudicate"),
            "chief",
        )
        .json(&json!({"label": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (done["status"].as_str(), done["consensus"].as_i64()),
        (Some("resolved"), Some(3))
    );
    let case = app.get_json(&format!("/v1/reviews/{id}")).await;
    assert_eq!(case["adjudicated_by"], "chief");
    let log: Vec<Value> = app
        .get(&format!("/v1/audit?case_id={id}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(log
        .iter()
        .any(|e| e["action"] == "case.adjudicate" && e["actor"] == "chief"));
}

#[tokio::test]
async fn only_adjudicators_and_admins_adjudicate() {
    let app = spawn_app_with(true, |s| {
        s.auth.tokens = vec![
            token("reviewer-secret", Role::Reviewer, "dr-a"),
            token("adjudicator-secret", Role::Adjudicator, "chief"),
        ];
    })
    .await;
    let path = "/v1/reviews/no-such-case/adjudicate";
    let as_reviewer = app
        .client
        .post(app.url(path))
        .bearer_auth("reviewer-secret")
        .json(&json!({"label": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_reviewer.status(), 403);
    let as_adjudicator = app
        .client
        .post(app.url(path))
        .bearer_auth("adjudicator-secret")
        .json(&json!({"label": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        as_adjudicator.status(),
        404,
        "allowed, but there is no such case"
    );
}

#[tokio::test]
async fn the_audit_monitor_survives_a_restart_and_an_admin_clears_its_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let path = format!("/v1/admin/models/{MODEL}/audit");
    let app = spawn_app_with(true, |s| s.store.url = url.clone().into()).await;
    let status: Value = app
        .post_json(&path, &json!({"correct": 10, "wrong": 60}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["fallback"], true, "{status}");
    assert!(status["fallback_reason"]
        .as_str()
        .unwrap()
        .contains("alpha"));
    app.handle.stop(true).await;

    let app = spawn_app_with(true, |s| s.store.url = url.clone().into()).await;
    let mut audit = Value::Null;
    for _ in 0..100 {
        audit = app.get_json(&format!("/v1/models/{MODEL}")).await["audit"].clone();
        if audit["fallback"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        audit["fallback"], true,
        "the fall-back outlives the restart: {audit}"
    );
    assert_eq!(audit["audited"], 70);
    let d: Value = app
        .post_json("/v1/triage", &triage_body(&[nodule(1)]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["results"][0]["decision"]["reason_code"], "audit_fallback");

    let refused = app
        .post_json(&format!("{path}/clear"), &json!({"reason": " "}))
        .await;
    assert_eq!(refused.status(), 422, "a clearing says what was done");
    let cleared: Value = app
        .post_json(
            &format!("{path}/clear"),
            &json!({"reason": "model retrained"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["fallback"], false, "{cleared}");
    let log: Vec<Value> = app.get("/v1/audit").await.json().await.unwrap();
    assert!(log.iter().any(|e| e["action"] == "audit.clear"
        && e["detail"].as_str().unwrap().contains("model retrained")));
}
