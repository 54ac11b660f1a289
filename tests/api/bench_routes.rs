//! The bench-only routes (`[server] bench_routes`, for `benches/run`): absent by
//! default and from the OpenAPI document; when on, they take the `/v1/triage`
//! request and answer in its shape, `/bench/predict` with the same predictions.

use serde_json::Value;

use crate::helpers::*;

#[actix_web::test]
async fn bench_routes_are_off_by_default_and_never_documented() {
    let app = spawn_app().await;
    let body = triage_body(&[nodule(1)]);
    for path in ["/bench/parse", "/bench/predict"] {
        assert_problem(app.post_json(path, &body).await, 404, "no route").await;
    }
    let on = spawn_app_with(true, |s| s.server.bench_routes = true).await;
    for app in [&app, &on] {
        let doc = app.get_json("/openapi.json").await;
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.keys().all(|p| !p.starts_with("/bench")), "{paths:?}");
    }
}

#[actix_web::test]
async fn bench_routes_answer_in_the_triage_shape() {
    let app = spawn_app_with(true, |s| s.server.bench_routes = true).await;
    let body = triage_body(&[nodule(2), nodule(7)]);
    let triage: Value = app
        .post_json("/v1/triage", &body)
        .await
        .json()
        .await
        .unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    for path in ["/bench/parse", "/bench/predict"] {
        let resp = app.post_json(path, &body).await;
        assert_eq!(resp.status(), 200, "{path}");
        let r: Value = resp.json().await.unwrap();
        assert_eq!(keys(&r), keys(&triage), "{path}");
        assert_eq!(r["results"].as_array().unwrap().len(), 2, "{path}");
        for (mine, theirs) in r["results"]
            .as_array()
            .unwrap()
            .iter()
            .zip(triage["results"].as_array().unwrap())
        {
            assert_eq!(keys(mine), keys(theirs), "{path}");
            assert_eq!(
                keys(&mine["prediction"]),
                keys(&theirs["prediction"]),
                "{path}"
            );
            assert_eq!(
                keys(&mine["uncertainty"]),
                keys(&theirs["uncertainty"]),
                "{path}"
            );
        }
    }
    let predicted: Value = app
        .post_json("/bench/predict", &body)
        .await
        .json()
        .await
        .unwrap();
    for (mine, theirs) in predicted["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(triage["results"].as_array().unwrap())
    {
        assert_eq!(mine["prediction"], theirs["prediction"]);
        assert_eq!(mine["uncertainty"], theirs["uncertainty"]);
    }
    // Invalid instances are refused as /v1/triage refuses them.
    let bad = serde_json::json!({"instances": [{"features": [1.0, 2.0]}]});
    for path in ["/bench/parse", "/bench/predict"] {
        assert_problem(app.post_json(path, &bad).await, 422, "expects 8").await;
    }
}
