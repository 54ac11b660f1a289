//! Durability: the daemon is killed with SIGKILL again and again while clients
//! send triage requests; after each restart, every case acknowledged as routed
//! is in the queue exactly once, and retrying an acknowledged request id returns
//! the same case. Runs on SQLite, and on PostgreSQL when
//! `TRIAGED_TEST_POSTGRES_URL` is set.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Daemon, TestDb};
use serde_json::{json, Value};

/// SIGKILLs per backend.
const ROUNDS: usize = 20;
const CLIENTS: usize = 6;

fn nodule(i: usize) -> Vec<f64> {
    let f = i as f64;
    vec![
        100.0 + f,
        5.0 + f / 100.0,
        3.0,
        150.0,
        200.0,
        1.25,
        0.6,
        (i % 2) as f64,
    ]
}

/// request id → case id for every 200 answer.
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

async fn load(
    base: String,
    acked: Acked,
    round: usize,
    client_no: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut unanswered = Vec::new();
    let mut i = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let rid = format!("r{round}-c{client_no}-{i}");
        let body = json!({"request_id": rid, "instances": [{"features": nodule(i)}]});
        match client
            .post(format!("{base}/v1/triage"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                let v: Value = r.json().await.unwrap_or_default();
                match v["results"][0]["decision"]["case_id"].as_str() {
                    Some(case) => {
                        acked.lock().unwrap().insert(rid, case.to_string());
                    }
                    None => unanswered.push(rid), // body cut by the kill
                }
            }
            _ => unanswered.push(rid),
        }
        i += 1;
    }
    unanswered
}

async fn crash_and_recover(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let acked: Acked = Arc::default();
    let mut unanswered: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let daemon = Daemon::start(db.url(), &log).await;
        // Retry what got no answer before the last kill: committed or not, the
        // retry must not create a second case.
        let client = reqwest::Client::new();
        for rid in unanswered.drain(..) {
            let i: usize = rid.rsplit('-').next().unwrap().parse().unwrap();
            let r = client
                .post(format!("{}/v1/triage", daemon.base))
                .json(&json!({"request_id": rid, "instances": [{"features": nodule(i)}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            let case = v["results"][0]["decision"]["case_id"]
                .as_str()
                .unwrap()
                .to_string();
            acked.lock().unwrap().insert(rid, case);
        }
        // Retrying an acknowledged request returns the acknowledged case.
        let sample: Vec<(String, String)> = acked
            .lock()
            .unwrap()
            .iter()
            .take(5)
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect();
        for (rid, case) in sample {
            let i: usize = rid.rsplit('-').next().unwrap().parse().unwrap();
            let v: Value = client
                .post(format!("{}/v1/triage", daemon.base))
                .json(&json!({"request_id": rid, "instances": [{"features": nodule(i)}]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["results"][0]["decision"]["case_id"], case.as_str());
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(load(
                    daemon.base.clone(),
                    acked.clone(),
                    round,
                    c,
                    stop.clone(),
                ))
            })
            .collect();
        // Kill at varied points of the load (0.3 s to 0.65 s into it).
        tokio::time::sleep(Duration::from_millis(300 + 50 * (round % 8) as u64)).await;
        daemon.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            unanswered.extend(t.await.unwrap());
        }
    }
    let daemon = Daemon::start(db.url(), &log).await;
    let cases = all_cases_by_request(&daemon.base).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "only {} requests acknowledged",
        acked.len()
    );
    for (rid, case) in &acked {
        let found = cases
            .get(rid)
            .unwrap_or_else(|| panic!("acknowledged {rid} ({case}) is not in the queue"));
        assert_eq!(
            found,
            &vec![case.clone()],
            "request {rid} must map to exactly its acknowledged case"
        );
    }
    for (rid, ids) in &cases {
        assert_eq!(ids.len(), 1, "request {rid} has {} cases", ids.len());
    }
    eprintln!(
        "crash test: {} acknowledged requests over {ROUNDS} SIGKILLs, all present exactly once",
        acked.len()
    );
}

async fn all_cases_by_request(base: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_request: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in common::all_cases(base).await {
        if let Some(rid) = c["request_id"].as_str() {
            by_request
                .entry(rid.to_string())
                .or_default()
                .push(c["id"].as_str().unwrap().to_string());
        }
    }
    by_request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_load_loses_no_acknowledged_case_sqlite() {
    crash_and_recover(&common::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_load_loses_no_acknowledged_case_postgres() {
    if let Some(db) = common::postgres().await {
        crash_and_recover(&db).await;
    }
}
