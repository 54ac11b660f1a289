use serde_json::Value;

use crate::helpers::*;

#[actix_web::test]
async fn models_are_listed_and_described() {
    let app = spawn_app().await;
    let list: Value = app.get("/v1/models").await.json().await.unwrap();
    let models = list["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["name"], MODEL);
    assert_eq!(models[0]["default"], true);

    let m: Value = app
        .get(&format!("/v1/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["version"], "1");
    assert_eq!(m["versions"], serde_json::json!(["1"]));
    assert_eq!(m["classes"].as_array().unwrap().len(), 5);
    assert_eq!(m["classes"][4], "highly_suspicious");
    assert_eq!(m["heads"], serde_json::json!(["class", "disagreement"]));
    assert_eq!(m["input"]["kind"], "features");
    assert_eq!(m["input"]["features"][0], "mean_volume_mm3");
    assert_eq!(m["policy"]["name"], "threshold");
    assert!(m["metrics"]["test"]["dup_auc_any"].is_number());

    assert_problem(
        app.get("/v1/models/unknown").await,
        404,
        "no model named 'unknown'",
    )
    .await;
}
