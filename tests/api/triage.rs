use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn triage_returns_prediction_uncertainty_and_decision() {
    let app = spawn_app().await;
    let names = app.feature_names().await;
    assert_eq!(names.len(), 8);
    let row = nodule(3);
    let as_object: serde_json::Map<String, Value> = names
        .iter()
        .cloned()
        .zip(row.iter().map(|v| json!(v)))
        .collect();
    let body = json!({
        "request_id": "req-1",
        "instances": [{"id": "a", "features": row}, {"id": "b", "features": as_object}],
    });
    let resp = app.post_json("/v1/triage", &body).await;
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["model"]["name"], MODEL);
    assert_eq!(r["model"]["version"], "1");
    assert_eq!(r["request_id"], "req-1");
    assert_eq!(r["policy"]["name"], "threshold");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["id"], "a");
    assert_eq!(
        results[0]["prediction"], results[1]["prediction"],
        "array and object forms agree"
    );
    let p: Vec<f64> =
        serde_json::from_value(results[0]["prediction"]["probabilities"].clone()).unwrap();
    assert_eq!(p.len(), 5);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    let class = results[0]["prediction"]["class"].as_u64().unwrap() as usize;
    assert!(p.iter().all(|&q| q <= p[class]));
    let u = &results[0]["uncertainty"];
    for key in ["disagreement", "uvc", "entropy"] {
        let v = u[key].as_f64().unwrap();
        assert!((0.0..=2.0).contains(&v), "{key} {v}");
    }
    let uvc = 1.0 - p.iter().map(|q| q * q).sum::<f64>();
    assert!((u["uvc"].as_f64().unwrap() - uvc).abs() < 1e-4);
    let d = &results[0]["decision"];
    let dup = u["disagreement"].as_f64().unwrap();
    let expected = if dup >= 0.5 { "review" } else { "automate" };
    assert_eq!(
        d["route"], expected,
        "default policy: review when dup >= 0.5"
    );
    assert!(d["reason"].as_str().unwrap().contains("dup"));
    assert_eq!(d["audit"], false);
}

#[actix_web::test]
async fn named_and_default_routes_agree() {
    let app = spawn_app().await;
    let body = triage_body(&[nodule(7)]);
    let a: Value = app
        .post_json("/v1/triage", &body)
        .await
        .json()
        .await
        .unwrap();
    let b: Value = app
        .post_json(&format!("/v1/models/{MODEL}/triage"), &body)
        .await
        .json()
        .await
        .unwrap();
    // Same answer; each routed case is its own queue entry.
    for key in ["prediction", "uncertainty"] {
        assert_eq!(a["results"][0][key], b["results"][0][key]);
    }
    assert_eq!(
        a["results"][0]["decision"]["route"],
        b["results"][0]["decision"]["route"]
    );
}

#[actix_web::test]
async fn batched_request_equals_one_by_one() {
    let app = spawn_app().await;
    let rows: Vec<Vec<f64>> = (0..20).map(nodule).collect();
    let batched: Value = app
        .post_json("/v1/triage", &triage_body(&rows))
        .await
        .json()
        .await
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        let single: Value = app
            .post_json("/v1/triage", &triage_body(std::slice::from_ref(row)))
            .await
            .json()
            .await
            .unwrap();
        let a = &batched["results"][i];
        let b = &single["results"][0];
        assert_eq!(a["prediction"]["class"], b["prediction"]["class"]);
        assert_eq!(a["decision"]["route"], b["decision"]["route"]);
        for (x, y) in a["prediction"]["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["prediction"]["probabilities"].as_array().unwrap())
        {
            assert!(
                (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5,
                "case {i}"
            );
        }
        let (da, db) = (
            a["uncertainty"]["disagreement"].as_f64().unwrap(),
            b["uncertainty"]["disagreement"].as_f64().unwrap(),
        );
        assert!((da - db).abs() < 1e-5, "case {i}");
    }
}

#[actix_web::test]
async fn concurrent_requests_are_batched_and_all_answered() {
    let app = spawn_app_with(true, |s| s.batch.max_wait_us = 2_000).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = app.client.clone();
        let url = app.url("/v1/triage");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&triage_body(&[nodule(i)]))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let m = app.metrics().await;
    let batches = metric_value(
        &m,
        &format!("triaged_batch_size_count{{model=\"{MODEL}\"}}"),
    )
    .unwrap();
    let cases = metric_value(&m, &format!("triaged_batch_size_sum{{model=\"{MODEL}\"}}")).unwrap();
    assert_eq!(cases, 40.0);
    assert!(batches <= 40.0);
}

#[actix_web::test]
async fn shadow_mode_reviews_everything_and_records_the_policy() {
    let app = spawn_app_with(true, |s| {
        s.triage.mode = triaged::config::TriageMode::Shadow
    })
    .await;
    let rows: Vec<Vec<f64>> = (0..10).map(nodule).collect();
    let r: Value = app
        .post_json("/v1/triage", &triage_body(&rows))
        .await
        .json()
        .await
        .unwrap();
    for res in r["results"].as_array().unwrap() {
        assert_eq!(res["decision"]["route"], "review");
        assert!(res["decision"]["policy_route"].is_string());
        assert!(res["decision"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("shadow mode"));
    }
}
