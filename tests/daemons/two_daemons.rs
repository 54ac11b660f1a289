//! Several daemons on one PostgreSQL queue: reviewers spread over two daemons
//! drain it without any case being held twice or getting more (or fewer)
//! reviewers than it needs. Needs `TRIAGED_TEST_POSTGRES_URL` (CI sets it).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::Daemon;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_share_one_queue_without_double_assignment() {
    let Some(db) = common::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(db.url(), &dir.path().join("a.log")).await;
    let b = Daemon::start(db.url(), &dir.path().join("b.log")).await;
    let client = reqwest::Client::new();
    // 40 cases through daemon A; the shipped policy routes every LIDC case.
    let rows: Vec<Value> = (0..40)
        .map(|i| json!({"features": [100.0 + i as f64, 6.0, 3.0, 150.0, 200.0, 1.25, 0.6, 0.0]}))
        .collect();
    let r: Value = client
        .post(format!("{}/v1/triage", a.base))
        .json(&json!({"instances": rows}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let needed: BTreeMap<String, u64> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["decision"]["case_id"].as_str().unwrap().to_string(),
                x["decision"]["reviewers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(needed.len(), 40);

    let mut tasks = Vec::new();
    for w in 0..6 {
        let base = if w % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let me = format!("dr-{w}");
            let mut done = Vec::new();
            for _ in 0..3000 {
                let claim = client
                    .post(format!("{base}/v1/reviews/claim"))
                    .header("x-triaged-subject", &me)
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .unwrap();
                if claim.status() == 204 {
                    let stats: Value = client
                        .get(format!("{base}/v1/reviews/stats"))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    if stats["by_status"]["pending"] == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let c: Value = claim.json().await.unwrap();
                let id = c["case"]["id"].as_str().unwrap().to_string();
                assert!(!done.contains(&id), "{me} held {id} twice");
                let model_class = c["case"]["model_class"].as_i64().unwrap();
                let l = client
                    .post(format!("{base}/v1/reviews/{id}/labels"))
                    .header("x-triaged-subject", &me)
                    .json(&json!({"label": model_class}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(l.status(), 200, "{me} labeling {id}");
                done.push(id);
            }
            (me, done)
        }));
    }
    let mut reviewers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in tasks {
        let (me, done) = t.await.unwrap();
        for id in done {
            assert!(reviewers.entry(id).or_default().insert(me.clone()));
        }
    }
    for (id, k) in &needed {
        assert_eq!(
            reviewers.get(id).map_or(0, |r| r.len()) as u64,
            *k,
            "case {id}"
        );
    }
    let cases = common::all_cases(&b.base).await;
    assert!(cases.iter().all(|c| c["status"] == "resolved"));
}
