use serde_json::Value;
use triaged::policy::spec::{
    self, AuditSpec, Certificate, PolicySpec, ReviewerSpec, RuleSpec, FORMAT_VERSION,
};

use crate::helpers::*;

fn risk_spec(tau: Option<f64>) -> PolicySpec {
    PolicySpec {
        format_version: FORMAT_VERSION,
        rule: RuleSpec::Risk {
            certificate: Certificate {
                alpha: 0.1,
                delta: 0.1,
                n_cal: 120,
                tau,
                automation_rate: 0.3,
                errors: 1,
                automated: 40,
                p_value: Some(0.05),
                grid_size: 50,
                certified_steps: 5,
                score: "confidence".into(),
                method: "test fixture".into(),
            },
        },
        reviewers: ReviewerSpec::default(),
        audit: AuditSpec {
            rate: 0.0,
            alpha: 0.1,
            confidence: 0.95,
        },
        calibration: None,
    }
}

#[actix_web::test]
async fn the_bundles_calibrated_policy_makes_the_decisions() {
    let app = spawn_app_with(false, |_| {}).await;
    let v1 = install_bundle(&app.models_dir, "1");
    // Every LIDC prediction is far below 0.999 confidence: all reviewed.
    spec::write(&v1, &risk_spec(Some(0.999))).unwrap();
    app.reload().await;
    app.wait_ready().await;

    let m: Value = app
        .get(&format!("/v1/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["policy"]["name"], "risk");
    assert_eq!(m["policy"]["source"], "policy.json");
    assert_eq!(m["policy"]["certificate"]["tau"], 0.999);
    let v1_policy = m["policy"]["version"].as_str().unwrap().to_string();
    assert!(v1_policy.starts_with("risk-"));

    let rows: Vec<Vec<f64>> = (0..5).map(nodule).collect();
    let r: Value = app
        .post_json("/v1/triage", &triage_body(&rows))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["policy"]["version"], v1_policy.as_str());
    for res in r["results"].as_array().unwrap() {
        assert_eq!(res["decision"]["route"], "review");
        assert_eq!(res["decision"]["reason_code"], "risk_not_certified");
        let k = res["decision"]["reviewers"].as_u64().unwrap();
        assert!((1..=3).contains(&k));
    }

    // Version 2 ships with a policy that certified nothing: model and policy swap together.
    let v2 = install_bundle(&app.models_dir, "2");
    spec::write(&v2, &risk_spec(None)).unwrap();
    let reload = app.reload().await;
    assert_eq!(reload.status(), 200);
    let r: Value = app
        .post_json("/v1/triage", &triage_body(&rows))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["model"]["version"], "2");
    assert_ne!(r["policy"]["version"], v1_policy.as_str());
    assert_eq!(
        r["results"][0]["decision"]["reason_code"],
        "risk_no_valid_threshold"
    );

    // A broken policy.json refuses the whole bundle; version 2 keeps serving.
    let v3 = install_bundle(&app.models_dir, "3");
    std::fs::write(
        v3.join("policy.json"),
        "{\"format_version\": 1, \"rule\": {\"kind\": \"magic\"}}",
    )
    .unwrap();
    let reload = app.reload().await;
    assert_problem(reload, 409, "policy.json").await;
    let m: Value = app
        .get(&format!("/v1/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["version"], "2");
}

#[actix_web::test]
async fn audits_above_alpha_fall_back_to_review_all_visibly() {
    let app = spawn_app_with(false, |_| {}).await;
    let v1 = install_bundle(&app.models_dir, "1");
    // tau 0: every case automated until audits say otherwise.
    spec::write(&v1, &risk_spec(Some(0.0))).unwrap();
    app.reload().await;
    app.wait_ready().await;
    let r: Value = app
        .post_json("/v1/triage", &triage_body(&[nodule(1)]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["results"][0]["decision"]["route"], "automate");

    let audit_url = app.url(&format!("/v1/admin/models/{MODEL}/audit"));
    let s = report_audit(&app, &audit_url, 18, 2).await;
    assert_eq!(s["fallback"], false, "{s}");
    let s = report_audit(&app, &audit_url, 50, 30).await;
    assert_eq!(s["fallback"], true, "{s}");
    assert!(s["lower"].as_f64().unwrap() > 0.1);

    let r: Value = app
        .post_json("/v1/triage", &triage_body(&[nodule(1)]))
        .await
        .json()
        .await
        .unwrap();
    let d = &r["results"][0]["decision"];
    assert_eq!(d["route"], "review");
    assert_eq!(d["reason_code"], "audit_fallback");
    assert!(
        d["reason"].as_str().unwrap().contains("32 errors in 100"),
        "{d}"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            &format!("triaged_policy_fallback{{model=\"{MODEL}\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            &format!("triaged_audit_outcomes_total{{model=\"{MODEL}\",outcome=\"wrong\"}}")
        ),
        Some(32.0)
    );
    let m: Value = app
        .get(&format!("/v1/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["audit"]["fallback"], true);

    let bad = app
        .client
        .post(&audit_url)
        .json(&serde_json::json!({"correct": 0, "wrong": 0}))
        .send()
        .await
        .unwrap();
    assert_problem(bad, 422, "at least one").await;
}

/// Reports audit outcomes and returns the audit status.
async fn report_audit(app: &TestApp, url: &str, correct: u64, wrong: u64) -> Value {
    app.client
        .post(url)
        .json(&serde_json::json!({"correct": correct, "wrong": wrong}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn system_spec(setting: Option<triaged::policy::system::SystemSetting>) -> PolicySpec {
    PolicySpec {
        rule: RuleSpec::System {
            certificate: triaged::policy::system::SystemCertificate {
                alpha: 0.2,
                delta: 0.1,
                n_cert: 300,
                n_fit: 200,
                setting,
                k_max: 3,
                max_labels: 5,
                labels_per_case: 0.8,
                automation_rate: 0.4,
                total_error: 0.15,
                p_value: Some(0.01),
                grid_size: 600,
                certified: 40,
                target: "reference label".into(),
                method: "test fixture".into(),
            },
        },
        ..risk_spec(None)
    }
}

#[actix_web::test]
async fn a_system_policy_serves_its_certificate_and_each_decision_says_k() {
    let app = spawn_app_with(false, |_| {}).await;
    let v1 = install_bundle(&app.models_dir, "1");
    // Threshold −1 with a zero price: the benefit of review always exceeds it,
    // so every case is reviewed, by the panel with the smallest predicted error.
    let setting = triaged::policy::system::SystemSetting {
        threshold: -1.0,
        price: 0.0,
    };
    spec::write(&v1, &system_spec(Some(setting))).unwrap();
    app.reload().await;
    app.wait_ready().await;
    let m: Value = app
        .get(&format!("/v1/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["policy"]["name"], "system");
    let c = &m["policy"]["certificate"];
    assert_eq!(c["alpha"], 0.2);
    assert_eq!(c["n_cert"], 300);
    assert_eq!(c["labels_per_case"], 0.8);
    assert_eq!(c["setting"]["price"], 0.0);

    let rows: Vec<Vec<f64>> = (0..5).map(nodule).collect();
    let r: Value = app
        .post_json("/v1/triage", &triage_body(&rows))
        .await
        .json()
        .await
        .unwrap();
    for res in r["results"].as_array().unwrap() {
        assert_eq!(res["decision"]["route"], "review");
        assert_eq!(res["decision"]["reason_code"], "system_review");
        let k = res["decision"]["reviewers"].as_u64().unwrap();
        assert!((1..=3).contains(&k), "{k}");
    }

    // Nothing certified: every case gets k_max reviewers, and the reason says so.
    let v2 = install_bundle(&app.models_dir, "2");
    spec::write(&v2, &system_spec(None)).unwrap();
    assert_eq!(app.reload().await.status(), 200);
    let r: Value = app
        .post_json("/v1/triage", &triage_body(&rows))
        .await
        .json()
        .await
        .unwrap();
    let d = &r["results"][0]["decision"];
    assert_eq!(d["reason_code"], "system_not_certified");
    assert_eq!(d["reviewers"], 3);
}
