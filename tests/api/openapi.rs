//! The OpenAPI document describes the responses the server really sends: each
//! real response is checked against its schema with a small validator.

use serde_json::{json, Value};

use crate::helpers::*;

/// Checks `value` against `schema`, resolving `#/components/schemas/…` refs in
/// `doc`. Supports what utoipa emits: type (string or list), properties,
/// required, items, oneOf/anyOf/allOf, enum.
pub(crate) fn validate(
    doc: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
) -> Result<(), String> {
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

pub(crate) fn response_schema<'a>(
    doc: &'a Value,
    path: &str,
    method: &str,
    status: &str,
) -> &'a Value {
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
        "/v2/models/{model}/versions/{version}",
        "/v2/models/{model}/versions/{version}/ready",
        "/v2/models/{model}/versions/{version}/infer",
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

/// Every path of the document, its `{param}` segments filled in.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| {
            if s == "{model}" {
                MODEL
            } else if s.starts_with('{') {
                "x"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[actix_web::test]
async fn a_wrong_method_on_a_known_path_is_405_with_allow() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let trace = reqwest::Method::from_bytes(b"TRACE").unwrap();
    for (template, item) in doc["paths"].as_object().unwrap() {
        let mut declared: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
            .map(|m| m.to_uppercase())
            .collect();
        declared.sort();
        let path = concrete(template);
        let resp = app
            .client
            .request(trace.clone(), app.url(&path))
            .send()
            .await
            .unwrap();
        let allow = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let mut allowed: Vec<String> = allow.split(", ").map(str::to_string).collect();
        allowed.sort();
        assert_eq!(allowed, declared, "Allow of TRACE {path}");
        let problem = assert_problem(resp, 405, "TRACE is not allowed").await;
        validate(
            &doc,
            &json!({"$ref": "#/components/schemas/Problem"}),
            &problem,
            "405",
        )
        .unwrap();
    }

    // A literal segment names its own resource: claim is POST only, though
    // `/v1/reviews/{case_id}` (GET) matches the same path.
    let resp = app
        .client
        .delete(app.url("/v1/reviews/claim"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    assert_problem(resp, 405, "DELETE is not allowed on /v1/reviews/claim").await;
    // On /v2 the problem carries the protocol's `error` member too.
    let resp = app
        .get(&format!("/v2/models/{MODEL}/versions/1/infer"))
        .await;
    assert_eq!(resp.headers()["allow"], "POST");
    let body = assert_problem(resp, 405, "GET is not allowed").await;
    assert_eq!(body["error"], body["detail"]);
    // A path the API does not have stays 404, whatever the method.
    assert_problem(app.get("/v1/nothing/here").await, 404, "no route").await;
    let resp = app
        .client
        .delete(app.url("/v1/models/"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 404, "no route").await;
}

#[actix_web::test]
async fn integral_numbers_are_integers_and_fractions_are_refused() {
    let app = spawn_app_with(true, |s| s.triage.threshold = 0.0).await;
    let triaged: Value = app
        .post_json("/v1/triage", &triage_body(&[nodule(1)]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(triaged["results"][0]["decision"]["route"], "review");
    let claim: Value = app
        .as_subject(reqwest::Method::POST, "/v1/reviews/claim", "dr-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let labels = format!(
        "/v1/reviews/{}/labels",
        claim["case"]["id"].as_str().unwrap()
    );
    let label = |body: Value| {
        app.as_subject(reqwest::Method::POST, &labels, "dr-a")
            .json(&body)
            .send()
    };

    let refused = label(json!({"label": 0.5})).await.unwrap();
    assert_problem(refused, 422, "expected an integer").await;
    let accepted = label(json!({"label": 1.0})).await.unwrap();
    assert_eq!(accepted.status(), 200);
    let outcome: Value = accepted.json().await.unwrap();
    assert_eq!(outcome["label"], 1);

    // The audit report's counts, likewise.
    let audit = format!("/v1/admin/models/{MODEL}/audit");
    let resp = app
        .post_json(&audit, &json!({"correct": 3.0, "wrong": 0}))
        .await;
    assert_eq!(resp.status(), 200);
    let resp = app
        .post_json(&audit, &json!({"correct": 2.5, "wrong": 0}))
        .await;
    assert_problem(resp, 422, "expected an integer").await;
}

#[actix_web::test]
async fn query_and_export_errors_are_documented_problems() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for (path, template, needle) in [
        (
            "/v1/audit?limit=0",
            "/v1/audit",
            "limit must be in 1..=10000",
        ),
        ("/v1/audit?after=-1", "/v1/audit", "after >= 0"),
        (
            "/v1/audit?limit=99999999999999999999",
            "/v1/audit",
            "query string does not match",
        ),
        (
            "/v1/reviews?limit=abc",
            "/v1/reviews",
            "query string does not match",
        ),
        ("/v1/reviews?status=lost", "/v1/reviews", "status 'lost'"),
        (
            "/v1/reviews/agreement?model=a&model=b",
            "/v1/reviews/agreement",
            "duplicate field",
        ),
    ] {
        let problem = assert_problem(app.get(path).await, 422, needle).await;
        validate(
            &doc,
            response_schema(&doc, template, "get", "422"),
            &problem,
            path,
        )
        .unwrap();
    }
    let problem = assert_problem(
        app.get(&format!("/v1/reviews/export?model={MODEL}")).await,
        404,
        &format!("model '{MODEL}' has no resolved cases"),
    )
    .await;
    validate(
        &doc,
        response_schema(&doc, "/v1/reviews/export", "get", "404"),
        &problem,
        "export",
    )
    .unwrap();
}
