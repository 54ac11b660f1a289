//! Routed cases as FHIR R4 Tasks, against a real FHIR R4 server on 127.0.0.1:
//! `../shared/tools/fhir-server` (node + `@medplum/fhir-router`, installed by
//! npm into a cache folder, as the acceptance check does). The store runs on a
//! manual clock and the publisher is driven pass by pass, so nothing here
//! sleeps to wait for a delivery: leases lapse and backoffs pass by moving the
//! clock. Without node or the npm install the tests skip with a note, unless
//! `TRIAGED_REQUIRE_FHIR_SERVER` is set (CI sets it): then they fail.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::TestDb;
use serde_json::{json, Value};
use triaged::config::{FhirSettings, Settings};
use triaged::fhir::Publisher;
use triaged::metrics::Metrics;
use triaged::store::{CaseStatus, Clock, FhirScope, NewCase, Recorded, Store, StoreOptions};

const LEASE: Duration = Duration::from_secs(60);
const SYSTEM: &str = "urn:triaged:case";

// ---------------------------------------------------------------- the server

/// The folder holding `server.js` with its `node_modules`, installed once per
/// test run; `None` when node or npm cannot provide it.
fn server_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(install_server).as_deref()
}

fn install_server() -> Option<PathBuf> {
    let skip = |why: String| -> Option<PathBuf> {
        if std::env::var_os("TRIAGED_REQUIRE_FHIR_SERVER").is_some() {
            panic!("the FHIR test server is required (TRIAGED_REQUIRE_FHIR_SERVER): {why}");
        }
        eprintln!("skipping the FHIR tests: {why}");
        None
    };
    if Command::new("node").arg("--version").output().is_err() {
        return skip("node is not installed".into());
    }
    let shared = std::env::var_os("SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let source = shared.join("tools/fhir-server");
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("triaged-checks/fhir-server");
    if let Err(e) = std::fs::create_dir_all(&cache) {
        return skip(format!("creating {}: {e}", cache.display()));
    }
    for f in ["server.js", "package.json", "package-lock.json"] {
        let (from, to) = (source.join(f), cache.join(f));
        let wanted = match std::fs::read(&from) {
            Ok(bytes) => bytes,
            Err(e) => return skip(format!("reading {}: {e}", from.display())),
        };
        if std::fs::read(&to).ok().as_deref() != Some(&wanted[..]) {
            let _ = std::fs::remove_file(&to);
            if let Err(e) = std::fs::write(&to, &wanted) {
                return skip(format!("writing {}: {e}", to.display()));
            }
        }
    }
    if !cache.join("node_modules/@medplum/fhir-router").is_dir() {
        let ok = Command::new("npm")
            .args(["ci", "--silent"])
            .current_dir(&cache)
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return skip(format!("npm ci in {} failed", cache.display()));
        }
    }
    Some(cache)
}

/// One FHIR server process; killed when dropped.
struct FhirServer {
    child: Child,
    base: String,
}

impl FhirServer {
    /// Starts the server on `port`, answering every `fail_every`-th write with
    /// 503 (0: never), and waits until it answers.
    async fn start(port: u16, fail_every: u32) -> Option<FhirServer> {
        let dir = server_dir()?;
        let child = Command::new("node")
            .arg(dir.join("server.js"))
            .arg(port.to_string())
            .env("FHIR_FAIL_EVERY", fail_every.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting node");
        let server = FhirServer {
            child,
            base: format!("http://127.0.0.1:{port}/fhir/R4"),
        };
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = client.get(format!("{}/Task", server.base)).send().await {
                if r.status().is_success() {
                    return Some(server);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the FHIR test server did not answer within 60 s");
    }

    async fn tasks(&self, case_id: &str) -> Vec<Value> {
        search(&self.base, case_id).await
    }

    /// The one Task of `case_id` (fails on none or several).
    async fn task(&self, case_id: &str) -> Value {
        let tasks = self.tasks(case_id).await;
        assert_eq!(tasks.len(), 1, "Tasks of case {case_id}: {tasks:#?}");
        tasks.into_iter().next().unwrap()
    }
}

impl Drop for FhirServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn search(base: &str, case_id: &str) -> Vec<Value> {
    let bundle: Value = reqwest::Client::new()
        .get(format!("{base}/Task"))
        .query(&[("identifier", format!("{SYSTEM}|{case_id}"))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    bundle["entry"]
        .as_array()
        .map(|entries| entries.iter().map(|e| e["resource"].clone()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- fixtures

async fn open_store(db: &TestDb, clock: &Clock) -> Arc<Store> {
    Arc::new(
        Store::connect(
            db.url(),
            StoreOptions {
                fhir: FhirScope::AllModels,
                clock: clock.clone(),
                ..StoreOptions::with_lease(LEASE)
            },
        )
        .await
        .expect("connect store"),
    )
}

fn fhir_settings(base: &str) -> FhirSettings {
    let mut s = Settings::defaults().fhir;
    s.base_url = base.into();
    s.practitioners = [("dr-a".to_string(), "Practitioner/dr-a".to_string())].into();
    s.park_after_refusals = 2;
    s.patient_identifier_system = "urn:example:mrn".into();
    s
}

fn publisher(store: &Arc<Store>, base: &str, metrics: &Metrics) -> Publisher {
    Publisher::new(store.clone(), &fhir_settings(base), None, metrics.clone()).unwrap()
}

fn new_case(reviewers: u32) -> NewCase {
    NewCase {
        id: format!("case-{}", uuid::Uuid::new_v4().simple()),
        model: "m".into(),
        model_version: "1".into(),
        policy_version: "threshold-test".into(),
        instance_index: 0,
        input: vec![1.0, 1.5],
        feature_names: vec!["a".into(), "b".into()],
        class_names: vec!["benign".into(), "malignant".into()],
        model_class: 1,
        probabilities: vec![0.3, 0.7],
        uncertainty: json!({"disagreement": 0.4375, "uvc": 0.42, "entropy": 0.61}),
        reason: "dup 0.44 >= 0.30".into(),
        reason_code: "at_or_above_threshold".into(),
        audit: false,
        policy_route: None,
        reviewers_needed: reviewers,
        escalate_on_disagreement: false,
        max_labels: 4,
        priority: 0.3,
        patient: None,
    }
}

async fn put(store: &Store, cases: Vec<NewCase>) {
    assert_eq!(
        store.record(None, cases, "{}".into()).await.unwrap(),
        Recorded::New
    );
}

/// Claims the next case for `reviewer` and labels it `label`.
async fn claim_and_label(store: &Store, reviewer: &str, id: &str, label: i64) {
    let claim = store.claim(reviewer, "reviewer").await.unwrap().unwrap();
    assert_eq!(claim.case.id, id);
    store
        .label(id, (reviewer, "reviewer"), label)
        .await
        .unwrap();
}

/// Claims the next case for `reviewer`, labels it `label`, returns its id.
async fn label_next(store: &Store, reviewer: &str, label: i64) -> String {
    let claim = store.claim(reviewer, "reviewer").await.unwrap().unwrap();
    let id = claim.case.id;
    store
        .label(&id, (reviewer, "reviewer"), label)
        .await
        .unwrap();
    id
}

/// Runs passes, moving the clock past any backoff between them, until every
/// Task is in step; panics after `passes` passes.
async fn drain(p: &Publisher, store: &Store, clock: &Clock, passes: usize) {
    for _ in 0..passes {
        p.publish_due().await.unwrap();
        let stats = store.fhir_outbox_stats().await.unwrap();
        if stats.undelivered == 0 {
            return;
        }
        clock.advance(Duration::from_secs(600));
    }
    panic!(
        "the FHIR outbox did not drain in {passes} passes: {:?}",
        store.fhir_outbox_stats().await.unwrap()
    );
}

fn entries<'a>(task: &'a Value, field: &str, code: &str) -> Vec<&'a Value> {
    task[field]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|e| e["type"]["coding"][0]["code"] == code)
        .collect()
}

fn requests(metrics: &Metrics, outcome: &str) -> u64 {
    metrics.fhir_requests.with_label_values(&[outcome]).get()
}

macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::common::sqlite();
                super::$body(&db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = super::common::postgres().await {
                    super::$body(&db).await;
                }
            }
        }
    };
}

// ---------------------------------------------------------------- tests

/// created -> ready with the predictions as inputs -> in-progress under a lease
/// (owner: the reviewer's Practitioner) -> ready when the lease lapses ->
/// completed with the consensus and every reviewer's label; one Task throughout.
async fn lifecycle(db: &TestDb) {
    let Some(server) = FhirServer::start(common::free_port(), 0).await else {
        return;
    };
    let clock = Clock::manual(1_700_000_000_000);
    let store = open_store(db, &clock).await;
    let metrics = Metrics::new();
    let p = publisher(&store, &server.base, &metrics);
    let case = NewCase {
        patient: Some("MRN-0042".into()),
        ..new_case(2)
    };
    let id = case.id.clone();
    put(&store, vec![case]).await;

    let pass = p.publish_due().await.unwrap();
    assert_eq!((pass.claimed, pass.written), (1, 1));
    let task = server.task(&id).await;
    assert_eq!(task["status"], "ready");
    assert_eq!(task["intent"], "order");
    assert_eq!(task["priority"], "asap");
    assert_eq!(task["code"]["coding"][0]["code"], "approve");
    assert_eq!(
        task["identifier"][0],
        json!({"system": SYSTEM, "value": id})
    );
    assert_eq!(task["authoredOn"], "2023-11-14T22:13:20.000Z");
    assert_eq!(
        entries(&task, "input", "predicted-disagreement")[0]["valueDecimal"],
        json!(0.4375)
    );
    assert_eq!(
        entries(&task, "input", "reviewers-needed")[0]["valuePositiveInt"],
        2
    );
    assert_eq!(task["businessStatus"]["text"], "0 of 2 labels");
    assert_eq!(task["contained"][0]["resourceType"], "Observation");
    let patient = json!({"type": "Patient", "identifier": {"system": "urn:example:mrn", "value": "MRN-0042"}});
    assert_eq!(task["for"], patient);
    // In step: nothing more to write.
    assert_eq!(p.publish_due().await.unwrap().claimed, 0);

    store.claim("dr-a", "reviewer").await.unwrap().unwrap();
    p.publish_due().await.unwrap();
    let task = server.task(&id).await;
    assert_eq!(task["status"], "in-progress");
    assert_eq!(task["owner"]["reference"], "Practitioner/dr-a");

    // The lease lapses: the rescue (its own transaction) puts the Task back.
    clock.advance(LEASE + Duration::from_secs(1));
    assert_eq!(store.rescue_expired().await.unwrap(), 1);
    p.publish_due().await.unwrap();
    let task = server.task(&id).await;
    assert_eq!(task["status"], "ready");
    assert!(task.get("owner").is_none(), "{task}");

    claim_and_label(&store, "dr-a", &id, 1).await;
    p.publish_due().await.unwrap();
    assert_eq!(
        server.task(&id).await["businessStatus"]["text"],
        "1 of 2 labels"
    );
    claim_and_label(&store, "dr-b", &id, 1).await;
    p.publish_due().await.unwrap();
    let task = server.task(&id).await;
    assert_eq!(task["status"], "completed");
    let consensus = entries(&task, "output", "consensus-label");
    assert_eq!(
        consensus[0]["valueCodeableConcept"]["coding"][0]["display"],
        "malignant"
    );
    let by: Vec<&str> = entries(&task, "output", "reviewer-label")
        .iter()
        .map(|e| e["type"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["label by dr-a", "label by dr-b"]);
    assert_eq!(
        entries(&task, "output", "reviewer-disagreement")[0]["valueDecimal"].as_f64(),
        Some(0.0)
    );
    assert_eq!(requests(&metrics, "ok"), 5);
    let stats = store.fhir_outbox_stats().await.unwrap();
    assert_eq!((stats.undelivered, stats.parked), (0, 0));
    assert_eq!(stats.oldest_undelivered_seconds, None);
}
both_backends!(lifecycle_of_a_task, lifecycle);

/// Every third write fails with 503: retried with backoff until every Task is
/// in step, and no case ever gets a second Task.
async fn faults(db: &TestDb) {
    let Some(server) = FhirServer::start(common::free_port(), 3).await else {
        return;
    };
    let clock = Clock::manual(1_700_000_000_000);
    let store = open_store(db, &clock).await;
    let metrics = Metrics::new();
    let p = publisher(&store, &server.base, &metrics);
    let cases: Vec<NewCase> = (0..5).map(|_| new_case(1)).collect();
    let ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
    put(&store, cases).await;
    drain(&p, &store, &clock, 20).await;
    for id in &ids {
        assert_eq!(server.task(id).await["status"], "ready");
    }
    for _ in &ids {
        label_next(&store, "dr-a", 0).await;
    }
    drain(&p, &store, &clock, 20).await;
    for id in &ids {
        let task = server.task(id).await;
        assert_eq!(task["status"], "completed");
        assert_eq!(
            entries(&task, "output", "consensus-label")[0]["valueCodeableConcept"]["coding"][0]
                ["code"],
            "0"
        );
    }
    assert!(
        requests(&metrics, "unavailable") >= 3,
        "injected faults were seen"
    );
    assert_eq!(requests(&metrics, "ok"), 10);
}
both_backends!(every_third_write_failing, faults);

/// The server is down at first: triage and labeling go on, the publisher backs
/// off, and once the server is up the Task appears, already completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_first_gets_its_tasks_later() {
    if server_dir().is_none() {
        return;
    }
    let db = common::sqlite();
    let clock = Clock::manual(1_700_000_000_000);
    let store = open_store(&db, &clock).await;
    let metrics = Metrics::new();
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}/fhir/R4");
    let p = publisher(&store, &base, &metrics);
    put(&store, vec![new_case(1), new_case(1)]).await;

    let pass = p.publish_due().await.unwrap();
    assert_eq!((pass.failed, pass.deferred, pass.written), (1, 1, 0));
    assert_eq!(
        requests(&metrics, "unreachable"),
        1,
        "one try per pass while down"
    );
    // Backing off: nothing is due until the clock passes the delay.
    assert_eq!(p.publish_due().await.unwrap().claimed, 0);
    // Labeling never waits for the FHIR server.
    let labeled = label_next(&store, "dr-a", 1).await;
    assert_eq!(
        store.case(&labeled).await.unwrap().status,
        CaseStatus::Resolved
    );
    let waiting = store
        .list_cases(Some(CaseStatus::Pending), None, 10, 0)
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1);
    let stats = store.fhir_outbox_stats().await.unwrap();
    assert_eq!(stats.undelivered, 2);
    assert!(stats.oldest_undelivered_seconds.is_some());

    let server = FhirServer::start(port, 0).await.unwrap();
    drain(&p, &store, &clock, 5).await;
    assert_eq!(server.task(&labeled).await["status"], "completed");
    assert_eq!(server.task(&waiting[0].id).await["status"], "ready");
}

/// Restart safety: changes committed by a daemon that stopped before
/// publishing them, and cases a crashed publisher had claimed, are published
/// by the next one (after the claim's hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_publishes_what_the_last_one_left() {
    let Some(server) = FhirServer::start(common::free_port(), 0).await else {
        return;
    };
    let db = common::sqlite();
    let clock = Clock::manual(1_700_000_000_000);
    let (a, b) = (new_case(1), new_case(1));
    let (id_a, id_b) = (a.id.clone(), b.id.clone());
    {
        let before = open_store(&db, &clock).await;
        put(&before, vec![a]).await;
    }
    let store = open_store(&db, &clock).await;
    put(&store, vec![b]).await;
    // A publisher that claims both and dies before writing.
    assert_eq!(store.due_fhir_syncs(16, 60_000).await.unwrap().len(), 2);
    let p = publisher(&store, &server.base, &Metrics::new());
    assert_eq!(p.publish_due().await.unwrap().claimed, 0, "still held");
    clock.advance(Duration::from_secs(61));
    assert_eq!(p.publish_due().await.unwrap().written, 2);
    assert_eq!(server.task(&id_a).await["status"], "ready");
    assert_eq!(server.task(&id_b).await["status"], "ready");
}

/// Someone else writes the Task between our writes: our `If-Match` gets 412,
/// the publisher reads the new version and the case again, and writes the
/// case's state. A Task deleted on the server is written again by identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_412_rereads_and_a_deleted_task_is_written_again() {
    let Some(server) = FhirServer::start(common::free_port(), 0).await else {
        return;
    };
    let db = common::sqlite();
    let clock = Clock::manual(1_700_000_000_000);
    let store = open_store(&db, &clock).await;
    let metrics = Metrics::new();
    let p = publisher(&store, &server.base, &metrics);
    let case = new_case(1);
    let id = case.id.clone();
    put(&store, vec![case]).await;
    p.publish_due().await.unwrap();
    let mut task = server.task(&id).await;
    let task_id = task["id"].as_str().unwrap().to_string();
    task["status"] = json!("on-hold");
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/Task/{task_id}", server.base))
        .header("content-type", "application/fhir+json")
        .body(task.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    store.claim("dr-b", "reviewer").await.unwrap().unwrap();
    assert_eq!(p.publish_due().await.unwrap().written, 1);
    assert_eq!(requests(&metrics, "precondition_failed"), 1);
    let task = server.task(&id).await;
    assert_eq!(task["status"], "in-progress");
    assert_eq!(task["id"], task_id.as_str());

    let r = http
        .delete(format!("{}/Task/{task_id}", server.base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    store.label(&id, ("dr-b", "reviewer"), 0).await.unwrap();
    assert_eq!(p.publish_due().await.unwrap().written, 1);
    assert_eq!(server.task(&id).await["status"], "completed");
}

/// A server that refuses the Task (here: no FHIR endpoint at that path, 404
/// with an OperationOutcome) parks the case after `park_after_refusals`; it is
/// listed for admins and tried again on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tasks_are_parked_and_can_be_retried() {
    let Some(server) = FhirServer::start(common::free_port(), 0).await else {
        return;
    };
    let db = common::sqlite();
    let clock = Clock::manual(1_700_000_000_000);
    let store = open_store(&db, &clock).await;
    let metrics = Metrics::new();
    let wrong = server.base.replace("/fhir/R4", "/not-fhir");
    let p = publisher(&store, &wrong, &metrics);
    let case = new_case(1);
    let id = case.id.clone();
    put(&store, vec![case]).await;
    assert_eq!(p.publish_due().await.unwrap().failed, 1);
    clock.advance(Duration::from_secs(600));
    assert_eq!(p.publish_due().await.unwrap().parked, 1);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        p.publish_due().await.unwrap().claimed,
        0,
        "parked: not retried"
    );
    let parked = store.fhir_parked(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].case_id, id);
    let why = parked[0].last_error.as_deref().unwrap();
    assert!(why.contains("404") && why.contains("not-found"), "{why}");
    assert_eq!(store.fhir_outbox_stats().await.unwrap().parked, 1);
    assert_eq!(metrics.fhir_parked.get(), 1);

    assert_eq!(store.fhir_retry_parked().await.unwrap(), 1);
    let right = publisher(&store, &server.base, &metrics);
    assert_eq!(right.publish_due().await.unwrap().written, 1);
    assert_eq!(server.task(&id).await["status"], "ready");
}

/// Models that do not publish leave no trace in the FHIR outbox.
#[tokio::test]
async fn only_the_configured_models_publish() {
    let db = common::sqlite();
    let store = Store::connect(
        db.url(),
        StoreOptions {
            fhir: FhirScope::Models(vec!["other".into()]),
            ..StoreOptions::with_lease(LEASE)
        },
    )
    .await
    .unwrap();
    put(&store, vec![new_case(1)]).await;
    assert!(store.due_fhir_syncs(16, 1_000).await.unwrap().is_empty());
    assert_eq!(store.fhir_outbox_stats().await.unwrap().undelivered, 0);
}

/// Through the HTTP API and the server's own publishing loop: a triaged
/// instance carrying a patient identifier becomes a Task `for` that Patient,
/// while the review API never shows the identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_api_publishes_a_task_for_the_patient() {
    let Some(server) = FhirServer::start(common::free_port(), 0).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::defaults();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.server.workers = 1;
    settings.models.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    settings.store.url = format!("sqlite://{}", dir.path().join("q.db").display()).into();
    settings.triage.mode = triaged::config::TriageMode::Shadow;
    settings.fhir = fhir_settings(&server.base);
    let app = triaged::startup::Application::build(settings)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let running = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/v2/health/ready")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer: Value = http
        .post(format!("{base}/v1/models/lidc-malignancy/triage"))
        .json(&json!({"instances": [{"patient": "MRN-7", "features": [2193.25, 22.61, 5.5, 234.6, 110.2, 3.0, 0.65, 1]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["results"][0]["decision"]["case_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no case routed: {answer}"))
        .to_string();
    assert!(
        !answer.to_string().contains("MRN-7"),
        "not echoed: {answer}"
    );
    let mut tasks = Vec::new();
    for _ in 0..300 {
        tasks = server.tasks(&id).await;
        if !tasks.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tasks.len(), 1, "the server published the case's Task");
    assert_eq!(tasks[0]["for"]["identifier"]["value"], "MRN-7");
    let case = http
        .get(format!("{base}/v1/reviews/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(case.contains(&id) && !case.contains("MRN-7"), "{case}");
    let blank: Value = http
        .post(format!("{base}/v1/models/lidc-malignancy/triage"))
        .json(&json!({"instances": [{"patient": " ", "features": [2193.25, 22.61, 5.5, 234.6, 110.2, 3.0, 0.65, 1]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(blank["status"], 422, "{blank}");
    handle.stop(true).await;
    running.await.unwrap().unwrap();
}
