//! The reviewer console's server side: the page and its assets under a strict
//! Content-Security-Policy, the settings the sign-in form needs, who the caller
//! is, the adjudicator's tied cases and the reviewers' agreement. (The page
//! itself is driven in a real browser by tests/console/.)

use reqwest::Method;
use serde_json::{json, Value};
use triaged::auth::Role;

use crate::helpers::*;
use crate::openapi::{response_schema, validate};

#[tokio::test]
async fn the_page_and_its_assets_come_from_the_binary_under_a_strict_policy() {
    let app = spawn_app_with(false, |_| {}).await;
    for (path, kind) in [
        ("/console/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
    }
    let html = app.get("/console/").await.text().await.unwrap();
    // No inline script: every <script> names its file (the CSP would block the rest).
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script src=").count()
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    let js = app.get("/console/console.js").await.text().await.unwrap();
    // What the server sends is set as text: the script never parses HTML.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(sink), "console.js uses {sink}");
    }
}

#[tokio::test]
async fn the_console_path_redirects_and_unknown_files_are_problems() {
    let app = spawn_app_with(false, |_| {}).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "/console/");
    assert_problem(app.get("/console/nope.js").await, 404, "no route").await;
    // The page is not an API operation: it stays out of the OpenAPI document.
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.keys().all(|p| !p.starts_with("/console")));
}

#[tokio::test]
async fn settings_tell_the_sign_in_form_how_this_deployment_authenticates() {
    let open = spawn_app_with(false, |_| {}).await;
    let doc: Value = open.get("/openapi.json").await.json().await.unwrap();
    let settings = open.get_json("/v1/console/settings").await;
    validate(
        &doc,
        response_schema(&doc, "/v1/console/settings", "get", "200"),
        &settings,
        "settings",
    )
    .unwrap();
    assert_eq!(settings["auth"], "open");
    assert_eq!(settings["show_suggestion"], false, "blind by default");
    assert_eq!(settings["lease_seconds"], 600);

    let tokens = spawn_app_with(false, |s| {
        s.auth.tokens = vec![token("reviewer-secret", Role::Reviewer, "dr-a")];
        s.console.show_suggestion = true;
    })
    .await;
    // No token needed: the form is shown before anyone signs in.
    let settings = tokens.get_json("/v1/console/settings").await;
    assert_eq!(settings["auth"], "tokens");
    assert_eq!(settings["show_suggestion"], true);
}

#[tokio::test]
async fn me_names_the_caller_and_its_role() {
    let app = spawn_app_with(false, |s| {
        s.auth.tokens = vec![
            token("reviewer-secret", Role::Reviewer, "dr-a"),
            token("adjudicator-secret", Role::Adjudicator, "chief"),
        ];
    })
    .await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for (secret, subject, role) in [
        ("reviewer-secret", "dr-a", "reviewer"),
        ("adjudicator-secret", "chief", "adjudicator"),
    ] {
        let me: Value = app
            .client
            .get(app.url("/v1/me"))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me, json!({"subject": subject, "role": role}));
        validate(
            &doc,
            response_schema(&doc, "/v1/me", "get", "200"),
            &me,
            "me",
        )
        .unwrap();
    }
    assert_problem(app.get("/v1/me").await, 401, "").await;
    let wrong = app
        .client
        .get(app.url("/v1/me"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_problem(wrong, 401, "").await;
}

async fn claim_and_label(app: &TestApp, reviewer: &str, label: i64) -> Value {
    let claim: Value = app
        .as_subject(Method::POST, "/v1/reviews/claim", reviewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = claim["case"]["id"].as_str().unwrap();
    let resp = app
        .as_subject(Method::POST, &format!("/v1/reviews/{id}/labels"), reviewer)
        .json(&json!({ "label": label }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{reviewer}");
    resp.json().await.unwrap()
}

async fn route_one(app: &TestApp, row: usize) -> String {
    let resp: Value = app
        .post_json("/v1/triage", &triage_body(&[nodule(row)]))
        .await
        .json()
        .await
        .unwrap();
    resp["results"][0]["decision"]["case_id"]
        .as_str()
        .expect("routed")
        .to_string()
}

#[tokio::test]
async fn adjudicators_see_tied_cases_with_every_reviewers_label() {
    let app = spawn_app_with(true, |s| {
        s.triage.threshold = 0.0;
        s.triage.reviewers = 2;
    })
    .await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(app.get_json("/v1/reviews/adjudication").await, json!([]));
    let id = route_one(&app, 5).await;
    // The cap is five labels; no class holds more than half of them.
    for (reviewer, label) in [
        ("dr-a", 0),
        ("dr-b", 1),
        ("dr-c", 2),
        ("dr-d", 0),
        ("dr-e", 1),
    ] {
        claim_and_label(&app, reviewer, label).await;
    }
    let tied = app.get_json("/v1/reviews/adjudication").await;
    validate(
        &doc,
        response_schema(&doc, "/v1/reviews/adjudication", "get", "200"),
        &tied,
        "tied",
    )
    .unwrap();
    let tied = tied.as_array().unwrap();
    assert_eq!(tied.len(), 1);
    assert_eq!(tied[0]["case"]["id"], id.as_str());
    let labels: Vec<(String, i64)> = tied[0]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["reviewer"].as_str().unwrap().to_string(),
                l["label"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut sorted = labels.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("dr-a", 0),
            ("dr-b", 1),
            ("dr-c", 2),
            ("dr-d", 0),
            ("dr-e", 1)
        ]
        .map(|(r, l)| (r.to_string(), l))
    );
    // Listing the cases' contents is an access like any other: audited.
    let log: Vec<Value> = app.get("/v1/audit").await.json().await.unwrap();
    assert!(log
        .iter()
        .any(|e| e["action"] == "cases.list" && e["detail"] == "status=adjudication n=1"));
    assert_problem(
        app.get("/v1/reviews/adjudication?limit=0").await,
        422,
        "limit",
    )
    .await;
}

#[tokio::test]
async fn only_adjudicators_and_admins_list_tied_cases_and_only_admins_read_reviewer_stats() {
    let app = spawn_app_with(false, |s| {
        s.auth.tokens = vec![
            token("reviewer-secret", Role::Reviewer, "dr-a"),
            token("adjudicator-secret", Role::Adjudicator, "chief"),
            token("admin-secret", Role::Admin, "root"),
        ];
    })
    .await;
    let status = |path: &'static str, secret: &'static str| {
        let req = app.client.get(app.url(path)).bearer_auth(secret);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        status("/v1/reviews/adjudication", "reviewer-secret").await,
        403
    );
    assert_eq!(
        status("/v1/reviews/adjudication", "adjudicator-secret").await,
        200
    );
    assert_eq!(
        status("/v1/reviews/adjudication", "admin-secret").await,
        200
    );
    assert_eq!(
        status("/v1/reviews/reviewers", "reviewer-secret").await,
        403
    );
    assert_eq!(
        status("/v1/reviews/reviewers", "adjudicator-secret").await,
        403
    );
    assert_eq!(status("/v1/reviews/reviewers", "admin-secret").await, 200);
}

#[tokio::test]
async fn reviewer_stats_count_labels_and_agreement_with_the_consensus() {
    let app = spawn_app_with(true, |s| {
        s.triage.threshold = 0.0;
        s.triage.reviewers = 3;
    })
    .await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(app.get_json("/v1/reviews/reviewers").await, json!([]));
    route_one(&app, 1).await;
    // 1, 1, 2: resolved as 1 by a strict majority.
    claim_and_label(&app, "dr-a", 1).await;
    claim_and_label(&app, "dr-b", 1).await;
    let outcome = claim_and_label(&app, "dr-c", 2).await;
    assert_eq!(outcome["status"], "resolved", "{outcome}");
    // A second case, still pending: dr-a's label there has nothing to agree with yet.
    route_one(&app, 2).await;
    claim_and_label(&app, "dr-a", 0).await;

    let stats = app.get_json("/v1/reviews/reviewers").await;
    validate(
        &doc,
        response_schema(&doc, "/v1/reviews/reviewers", "get", "200"),
        &stats,
        "reviewers",
    )
    .unwrap();
    assert_eq!(
        stats,
        json!([
            {"reviewer": "dr-a", "labels": 2, "resolved": 1, "agreed": 1, "agreement": 1.0},
            {"reviewer": "dr-b", "labels": 1, "resolved": 1, "agreed": 1, "agreement": 1.0},
            {"reviewer": "dr-c", "labels": 1, "resolved": 1, "agreed": 0, "agreement": 0.0},
        ])
    );
}
