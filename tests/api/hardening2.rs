//! Regression tests for the second outside probe (issue "Hardening, second
//! probe"), one per finding, named `finding2_<n>_…` after its numbering. The
//! store-level ones (the lease cap, distinct-reviewer dead-lettering, requeue,
//! the append-only SQLite audit log) are in tests/daemons/store.rs. Outgoing calls go
//! to small HTTP servers in this file that record what they get and answer as
//! told (or never).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use triaged::auth::Role;
use triaged::config::WebhookTarget;
use triaged::secret::{Secret, SecretUrl};

use crate::helpers::*;

// ------------------------------------------------------------------ fake peers

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a fake peer does with a request.
enum Answer {
    /// These bytes, then the connection closes.
    Bytes(Vec<u8>),
    /// Nothing, ever (the connection stays open a minute).
    Hang,
}

/// An HTTP/1.1 answer with `Content-Length`.
fn http(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    Answer::Bytes(bytes)
}

/// A peer on 127.0.0.1 that records every request it reads.
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, answer) = (seen.clone(), Arc::new(answer));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (log, answer) = (log.clone(), answer.clone());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    log.lock().unwrap().push(req.clone());
                    match answer(&req) {
                        Answer::Bytes(b) => {
                            let _ = sock.write_all(&b).await;
                            let _ = sock.shutdown().await;
                        }
                        Answer::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        Fake { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 16 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < length {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

async fn until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < end, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn target(url: &str, secret: &str) -> WebhookTarget {
    WebhookTarget {
        url: SecretUrl::new(url),
        secret: Secret::new(secret),
        events: vec!["case.created".into()],
    }
}

/// A FHIR client for a fake server's `/fhir/R4`.
fn fhir_client(fake: &Fake) -> triaged::fhir::client::FhirClient {
    triaged::fhir::client::FhirClient::new(
        &format!("{}/fhir/R4", fake.url),
        "urn:triaged:case",
        None,
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
    .unwrap()
}

/// Why writing a Task through `client` failed (it must fail).
async fn put_task(client: &triaged::fhir::client::FhirClient) -> String {
    client
        .put_by_identifier("c1", &json!({"resourceType": "Task"}))
        .await
        .unwrap_err()
        .to_string()
}

/// Routes one case per call (shadow mode routes every case); its id.
async fn route_one(app: &TestApp) -> String {
    let r = app
        .post_json("/v1/triage", &triage_body(&[nodule(3)]))
        .await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    b["results"][0]["decision"]["case_id"]
        .as_str()
        .expect("routed")
        .to_string()
}

fn shadow(s: &mut triaged::config::Settings) {
    s.triage.mode = triaged::policy::TriageMode::Shadow;
}

/// Raw bytes to the server, and what it answers within `wait`.
fn raw(app: &TestApp, request: &[u8], wait: Duration) -> String {
    let addr = app.address.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

// ------------------------------------------------------------------ findings

#[tokio::test]
async fn finding2_1_invented_methods_never_reach_the_metric_labels() {
    let app = spawn_app().await;
    let app = Arc::new(app);
    let a = app.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..100 {
            let method = if i % 10 == 0 {
                format!("LONG{}", "X".repeat(4000))
            } else {
                format!("INVENT{i}")
            };
            let req =
                format!("{method} /v1/triage HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            raw(&a, req.as_bytes(), Duration::from_secs(2));
        }
    })
    .await
    .unwrap();
    let m = app.metrics().await;
    assert!(!m.contains("INVENT") && !m.contains("LONGX"), "{m}");
    assert!(
        m.contains(r#"method="other""#),
        "invented methods count as other"
    );
    assert!(m.len() < 200_000, "/metrics is {} bytes", m.len());
}

#[tokio::test]
async fn finding2_2_postgres_lock_waits_end_within_the_write_timeout() {
    use sqlx::Connection;
    let Some(db) = crate::common::postgres().await else {
        return;
    };
    let url = db.url().to_string();
    let app = spawn_app_with(true, |s| {
        shadow(s);
        s.store.url = SecretUrl::new(url.clone());
        s.store.write_timeout_ms = 1000;
    })
    .await;
    let case = route_one(&app).await;
    let claim = app
        .as_subject(reqwest::Method::POST, "/v1/reviews/claim", "dr-a")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(claim.status(), 200);
    let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE cases IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let mut calls = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let label = app
            .as_subject(
                reqwest::Method::POST,
                &format!("/v1/reviews/{case}/labels"),
                "dr-a",
            )
            .json(&json!({"label": 1}))
            .send()
            .await
            .unwrap();
        calls.push(("label", label.status().as_u16(), t.elapsed()));
        let t = Instant::now();
        let claim = app
            .as_subject(reqwest::Method::POST, "/v1/reviews/claim", "dr-b")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        calls.push(("claim", claim.status().as_u16(), t.elapsed()));
    }
    let (waiting,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(&mut locker)
    .await
    .unwrap();
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    for (what, status, took) in &calls {
        assert_eq!(*status, 503, "{what} under a held lock: {calls:?}");
        assert!(
            *took < Duration::from_secs(3),
            "{what} took {took:?} (write timeout 1 s): {calls:?}"
        );
    }
    // Background loops (the lease rescue, queue gauges) may be waiting their
    // own lock_timeout right now; what must not happen is waits piling up past
    // the pool (8 connections), as dropped client sockets once made them.
    assert!(
        waiting <= 8,
        "{waiting} backends waiting on the lock: more than the pool"
    );
    // The lock gone, the same label lands.
    let label = app
        .as_subject(
            reqwest::Method::POST,
            &format!("/v1/reviews/{case}/labels"),
            "dr-a",
        )
        .json(&json!({"label": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(label.status(), 200);
}

#[tokio::test]
async fn finding2_3_redirects_are_never_followed_and_task_ids_are_checked() {
    let elsewhere = Fake::start(|_| http(201, &[], b"{}")).await;
    let to = elsewhere.url.clone();
    let hook =
        Fake::start(move |r| http(308, &[("Location", &format!("{to}{}", r.path))], b"")).await;
    let to = elsewhere.url.clone();
    let fhir =
        Fake::start(move |r| http(307, &[("Location", &format!("{to}{}", r.path))], b"")).await;
    let app = spawn_app_with(true, |s| {
        shadow(s);
        s.webhooks.max_backoff_seconds = 1;
        s.webhooks.targets = vec![target(&format!("{}/hook", hook.url), "s")];
        s.fhir.base_url = SecretUrl::new(format!("{}/fhir/R4", fhir.url));
        s.fhir.retry_initial_ms = 200;
        s.fhir.retry_max_seconds = 1;
    })
    .await;
    route_one(&app).await;
    until(
        "the webhook target and the FHIR server are tried twice",
        10,
        || hook.seen().len() >= 2 && fhir.seen().len() >= 2,
    )
    .await;
    assert!(
        elsewhere.seen().is_empty(),
        "a redirect was followed: {:?}",
        elsewhere.seen()
    );
    let m = app.metrics().await;
    assert!(
        metric_value(&m, r#"triaged_webhook_deliveries_total{outcome="failed"}"#).unwrap() >= 2.0,
        "a 308 is a failed delivery"
    );
    assert!(
        metric_value(&m, r#"triaged_fhir_requests_total{outcome="refused"}"#).unwrap() >= 2.0,
        "a 307 is a refusal (counted toward parking)"
    );

    // A Task id that is no FHIR id is never put in a URL.
    let evil = Fake::start(|_| {
        http(
            201,
            &[("Content-Type", "application/fhir+json")],
            br#"{"resourceType":"Task","id":"../../../evil/x?steal=","meta":{"versionId":"1"}}"#,
        )
    })
    .await;
    let client = fhir_client(&evil);
    let e = put_task(&client).await;
    assert!(e.contains("not a FHIR id"), "{e}");
    let e = client.read("../../../evil/x?steal=").await.unwrap_err();
    assert!(e.to_string().contains("not a FHIR id"), "{e}");
    assert!(
        evil.seen().iter().all(|r| !r.path.contains("evil")),
        "{:?}",
        evil.seen()
    );
}

#[tokio::test]
async fn finding2_4_a_body_that_never_ends_gets_408_within_the_deadline() {
    let app = spawn_app_with(true, |s| s.batch.request_timeout_ms = 1000).await;
    let addr = app.address.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /v1/triage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let t = Instant::now();
        let mut got = Vec::new();
        // Trickle a byte every 300 ms: each arrives well within any idle
        // timeout, but the body as a whole must not outlive the deadline.
        while t.elapsed() < Duration::from_secs(6) {
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(_) => {
                    if s.write_all(b"1\r\n \r\n").is_err() {
                        break;
                    }
                }
            }
        }
        (String::from_utf8_lossy(&got).to_string(), t.elapsed())
    })
    .await
    .unwrap();
    let (text, took) = answer;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?} after {took:?}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    // The server still serves others.
    let r = app
        .post_json("/v1/triage", &triage_body(&[nodule(1)]))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn finding2_5_a_claim_over_the_lease_cap_is_409_and_requeue_is_audited() {
    let app = spawn_app_with(true, |s| {
        shadow(s);
        s.store.max_leases_per_reviewer = 2;
    })
    .await;
    for _ in 0..4 {
        route_one(&app).await;
    }
    let claim = || {
        app.as_subject(reqwest::Method::POST, "/v1/reviews/claim", "dr-b")
            .json(&json!({}))
            .send()
    };
    assert_eq!(claim().await.unwrap().status(), 200);
    assert_eq!(claim().await.unwrap().status(), 200);
    assert_problem(claim().await.unwrap(), 409, "max_leases_per_reviewer = 2").await;
    // Requeue: only a dead-lettered case moves; a pending one is a 409.
    let pending = app.get_json("/v1/reviews?status=pending").await;
    let id = pending[0]["id"].as_str().unwrap().to_string();
    let r = app
        .post_json(
            &format!("/v1/admin/reviews/{id}/requeue"),
            &json!({"reason": "test"}),
        )
        .await;
    assert_problem(r, 409, "not dead_letter").await;
    let r = app
        .post_json("/v1/admin/reviews/requeue", &json!({"ids": [id, "nope"]}))
        .await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b[0]["outcome"], "not_dead_letter", "{b}");
    assert_eq!(b[1]["outcome"], "not_found", "{b}");
}

#[tokio::test]
async fn finding2_6_a_hanging_webhook_target_delays_no_other() {
    let hanging = Fake::start(|_| Answer::Hang).await;
    let healthy = Fake::start(|_| http(200, &[], b"")).await;
    let app = spawn_app_with(true, |s| {
        shadow(s);
        s.webhooks.targets = vec![
            target(&format!("{}/hook", hanging.url), "a"),
            target(&format!("{}/hook", healthy.url), "b"),
        ];
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(route_one(&app).await);
    }
    until(
        "the healthy target gets every event while the other hangs",
        5,
        || {
            let got = healthy.seen();
            ids.iter().all(|id| {
                got.iter()
                    .any(|r| String::from_utf8_lossy(&r.body).contains(id.as_str()))
            })
        },
    )
    .await;
    // Its loop runs beside the healthy one: its first try may land a moment later.
    until("the hanging target is tried", 5, || {
        !hanging.seen().is_empty()
    })
    .await;
}

#[tokio::test]
async fn finding2_7_fhir_answers_are_read_up_to_a_bound() {
    let huge = vec![b'a'; 3 << 20];
    let declared = Fake::start({
        let huge = huge.clone();
        move |_| http(200, &[("Content-Type", "application/fhir+json")], &huge)
    })
    .await;
    // No Content-Length: read until the connection closes.
    let streamed = Fake::start(move |_| {
        let mut b =
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/fhir+json\r\n\r\n"
                .to_vec();
        b.extend_from_slice(&huge);
        Answer::Bytes(b)
    })
    .await;
    for fake in [&declared, &streamed] {
        let e = put_task(&fhir_client(fake)).await;
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
    }
}

#[tokio::test]
async fn finding2_8_url_secrets_never_reach_the_logs_or_the_outbox() {
    let app_dir = tempfile::tempdir().unwrap();
    let db = app_dir.path().join("q.db");
    let refusing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://user:hunter2@127.0.0.1:{refusing}/hook?token=abc123sekrit");
    let db_url = format!("sqlite://{}", db.display());
    let app = spawn_app_with(true, |s| {
        shadow(s);
        s.store.url = SecretUrl::new(db_url.clone());
        s.webhooks.max_backoff_seconds = 1;
        s.webhooks.targets = vec![target(&url, "whsec-canary")];
        // The start-up line: the settings as logged, and as printed by Debug.
        let logged = format!("{} {s:?}", s.redacted());
        for secret in ["hunter2", "abc123sekrit", "whsec-canary"] {
            assert!(!logged.contains(secret), "{secret} in {logged}");
        }
    })
    .await;
    route_one(&app).await;
    // The failed delivery's error, as logged and kept in the outbox.
    let pool = sqlx::SqlitePool::connect(&db_url).await.unwrap();
    let mut last_error = None;
    for _ in 0..100 {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT last_error FROM outbox WHERE attempts > 0 LIMIT 1")
                .fetch_optional(&pool)
                .await
                .unwrap();
        if let Some((Some(e),)) = row {
            last_error = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = last_error.expect("a failed delivery");
    assert!(!e.contains("hunter2") && !e.contains("abc123sekrit"), "{e}");
}

#[tokio::test]
async fn finding2_10_reviewers_are_blind_until_they_answer() {
    const SUGGESTION: [&str; 11] = [
        "model_class",
        "probabilities",
        "uncertainty",
        "reason",
        "reason_code",
        "policy_route",
        "priority",
        "escalated",
        "reviewers_needed",
        "labels",
        "max_labels",
    ];
    let app = spawn_app_with(true, |s| {
        shadow(s);
        s.auth.tokens = vec![
            token("c", Role::Client, "app"),
            token("r", Role::Reviewer, "dr-a"),
            token("a", Role::Admin, "root"),
        ];
    })
    .await;
    let r = app
        .client
        .post(app.url("/v1/triage"))
        .bearer_auth("c")
        .json(&triage_body(&[nodule(2)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let as_ = |tok: &'static str, m: reqwest::Method, path: String| {
        app.client.request(m, app.url(&path)).bearer_auth(tok)
    };
    let claim: Value = as_("r", reqwest::Method::POST, "/v1/reviews/claim".into())
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = claim["case"]["id"].as_str().unwrap().to_string();
    let read: Value = as_("r", reqwest::Method::GET, format!("/v1/reviews/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (what, v) in [("claim", &claim["case"]), ("GET", &read)] {
        for key in SUGGESTION {
            assert!(v.get(key).is_none(), "{what} shows {key}: {v}");
        }
        assert_eq!(v["blind"], true, "{v}");
        assert!(v["class_names"].as_array().is_some_and(|c| !c.is_empty()));
    }
    let admin: Value = as_("a", reqwest::Method::GET, format!("/v1/reviews/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(admin.get("model_class").is_some(), "{admin}");
    let l = as_(
        "r",
        reqwest::Method::POST,
        format!("/v1/reviews/{id}/labels"),
    )
    .json(&json!({"label": 0}))
    .send()
    .await
    .unwrap();
    assert_eq!(l.status(), 200);
    let after: Value = as_("r", reqwest::Method::GET, format!("/v1/reviews/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        after.get("model_class").is_some(),
        "answered: the suggestion shows: {after}"
    );
}

#[tokio::test]
async fn finding2_11_cross_site_state_changes_are_refused() {
    let app = spawn_app_with(true, shadow).await;
    route_one(&app).await;
    let plain = reqwest::Client::new();
    let claim = app.url("/v1/reviews/claim");
    let own = app.address.clone();
    let cases: [(&str, reqwest::RequestBuilder, u16); 7] = [
        (
            "a percent-encoded path, as the router decodes it",
            plain
                .post(app.url("/v1/reviews/%63laim"))
                .header("origin", "http://evil.example")
                .header("content-type", "text/plain"),
            403,
        ),
        (
            "a percent-encoded path without a content type",
            plain.post(app.url("/v1/reviews/%63laim")),
            415,
        ),
        ("no Content-Type", plain.post(&claim), 415),
        (
            "text/plain",
            plain
                .post(&claim)
                .header("content-type", "text/plain")
                .body("{}"),
            415,
        ),
        (
            "a form",
            plain
                .post(app.url("/v1/admin/models/lidc-malignancy/reload"))
                .header("content-type", "application/x-www-form-urlencoded"),
            415,
        ),
        (
            "JSON from another origin",
            plain
                .post(&claim)
                .header("origin", "http://evil.example")
                .json(&json!({})),
            403,
        ),
        (
            "JSON from this origin",
            plain.post(&claim).header("origin", own).json(&json!({})),
            200,
        ),
    ];
    for (what, req, want) in cases {
        let got = req.send().await.unwrap().status().as_u16();
        assert_eq!(got, want, "{what}");
    }
    let r = plain
        .post(app.url("/v1/admin/models/lidc-malignancy/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an empty JSON action is fine");
    // A NUL names nothing, and no database is asked about it (it was a 503).
    let r = plain.get(app.url("/v1/reviews/%00")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = plain
        .get(app.url("/v1/reviews?model=%00"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn finding2_12_the_signature_covers_the_delivery_id() {
    let sink = Fake::start(|_| http(200, &[], b"")).await;
    let app = spawn_app_with(true, |s| {
        shadow(s);
        s.webhooks.targets = vec![target(&format!("{}/hook", sink.url), "sign-me")];
    })
    .await;
    route_one(&app).await;
    until("a delivery", 5, || !sink.seen().is_empty()).await;
    let d = sink.seen().remove(0);
    let id: i64 = d.header("x-triaged-delivery").unwrap().parse().unwrap();
    let sig = d.header("x-triaged-signature").unwrap();
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sig, triaged::webhooks::signature("sign-me", t, id, &d.body));
    assert_ne!(
        sig,
        triaged::webhooks::signature("sign-me", t, id + 1, &d.body),
        "a replay under a new id does not verify"
    );
    assert_eq!(d.method, "POST");
}

#[tokio::test]
async fn finding2_bonus_integers_out_of_their_datatype_are_refused() {
    let app = spawn_app().await;
    let body = json!({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "INT64",
        "data": [1.1805916207174113e21, 22, 5, 234, 110, 3, 1, 1]}]});
    let r = app
        .post_json("/v2/models/lidc-malignancy/infer", &body)
        .await;
    assert_eq!(r.status(), 400);
    let body = json!({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "INT64",
        "data": [2193, 22, 5, 234, 110, 3, 1, 1]}]});
    let r = app
        .post_json("/v2/models/lidc-malignancy/infer", &body)
        .await;
    assert_eq!(r.status(), 200);
}
