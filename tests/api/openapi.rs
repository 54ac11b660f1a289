//! The OpenAPI document describes the responses the server really sends: each
//! real response is checked against its schema with a small validator.

use serde_json::{json, Value};

use crate::helpers::*;

/// Checks `value` against `schema`, resolving `#/components/schemas/…` refs in
/// `doc`. Supports what utoipa emits: type (string or list), properties,
/// required, items, oneOf/anyOf/allOf, enum.
fn validate(doc: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{path}: unresolved {r}"));
        }
        return validate(doc, target, value, path);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            if !options
                .iter()
                .any(|s| validate(doc, s, value, path).is_ok())
            {
                return Err(format!("{path}: matches none of {key}"));
            }
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(doc, s, value, path)?;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{path}: {value} not in {allowed:?}"));
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{path}: {value} is not {types:?}"));
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = req.as_str().unwrap();
            if !obj.contains_key(name) {
                return Err(format!("{path}: required '{name}' missing"));
            }
        }
        for (k, v) in obj {
            match props.get(k) {
                Some(s) => validate(doc, s, v, &format!("{path}.{k}"))?,
                None => return Err(format!("{path}: '{k}' is not in the schema")),
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(doc, items, v, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: &str) -> &'a Value {
    let content = &doc["paths"][path][method]["responses"][status]["content"];
    let media = content
        .as_object()
        .and_then(|c| c.values().next())
        .unwrap_or_else(|| panic!("no content for {method} {path} {status}"));
    &media["schema"]
}

#[actix_web::test]
async fn openapi_describes_real_responses() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/v1/triage",
        "/v1/models/{model}/triage",
        "/v1/models",
        "/v1/models/{model}",
        "/v2/models/{model}/infer",
        "/metrics",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
    }

    let triage: Value = app
        .post_json("/v1/triage", &triage_body(&[nodule(1), nodule(2)]))
        .await
        .json()
        .await
        .unwrap();
    validate(
        &doc,
        response_schema(&doc, "/v1/triage", "post", "200"),
        &triage,
        "triage",
    )
    .unwrap();

    let model: Value = app
        .get(&format!("/v1/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    validate(
        &doc,
        response_schema(&doc, "/v1/models/{model}", "get", "200"),
        &model,
        "model",
    )
    .unwrap();
    let list: Value = app.get("/v1/models").await.json().await.unwrap();
    validate(
        &doc,
        response_schema(&doc, "/v1/models", "get", "200"),
        &list,
        "models",
    )
    .unwrap();

    let problem: Value = app
        .post_json("/v1/triage", &json!({"instances": []}))
        .await
        .json()
        .await
        .unwrap();
    validate(
        &doc,
        response_schema(&doc, "/v1/triage", "post", "422"),
        &problem,
        "problem",
    )
    .unwrap();

    let infer_body = json!({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": nodule(1)}]});
    let infer: Value = app
        .post_json(&format!("/v2/models/{MODEL}/infer"), &infer_body)
        .await
        .json()
        .await
        .unwrap();
    validate(
        &doc,
        response_schema(&doc, "/v2/models/{model}/infer", "post", "200"),
        &infer,
        "infer",
    )
    .unwrap();

    // The validator itself rejects a wrong document.
    let mut wrong = triage.clone();
    wrong["results"][0]["prediction"]["class"] = json!("three");
    assert!(validate(
        &doc,
        response_schema(&doc, "/v1/triage", "post", "200"),
        &wrong,
        "wrong"
    )
    .is_err());
}
