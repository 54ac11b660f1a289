//! Finding 1 of the hardening probe: after the disk fills, the SQLite queue must
//! recover as soon as space returns (a connection whose COMMIT failed used to go
//! back to the pool and fail every later BEGIN). The store lives on a 512 KiB
//! tmpfs, filled through the HTTP API until it answers 503; the tmpfs then grows
//! and triage and claims must succeed at once, and after a restart every
//! acknowledged case is still there. Needs root for the mount: CI runs as root;
//! as another user the test says so and does nothing (like the PostgreSQL
//! variants without their database).

use crate::common;

use std::process::Command;

use serde_json::{json, Value};

struct Tmpfs(std::path::PathBuf);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("running mount");
        assert!(ok.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn triage(i: usize, n: usize) -> Value {
    let rows: Vec<Value> = (0..n)
        .map(|j| json!({"features": [100.0 + (i * n + j) as f64, 5.0, 3.0, 150.0, 200.0, 1.25, 0.6, 1.0]}))
        .collect();
    json!({ "instances": rows })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_a_full_disk_fails_fast_and_the_queue_recovers_when_space_returns() {
    if !is_root() {
        eprintln!(
            "not root: cannot mount the small tmpfs this test fills; skipped (CI runs it as root)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("full");
    std::fs::create_dir_all(&mnt).unwrap();
    let tmpfs = Tmpfs::mount(&mnt, "512k");
    let url = format!("sqlite://{}/q.db", mnt.display());
    let log = dir.path().join("daemon.log");
    // Shadow mode: every case is routed, so every request writes.
    std::env::set_var("TRIAGED__TRIAGE__MODE", "shadow");
    let daemon = common::Daemon::start(&url, &log).await;
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    let mut full = false;
    for i in 0..3000 {
        let r = client
            .post(format!("{}/v1/triage", daemon.base))
            .json(&triage(i, 32))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {
                let v: Value = r.json().await.unwrap();
                for res in v["results"].as_array().unwrap() {
                    acked.push(res["decision"]["case_id"].as_str().unwrap().to_string());
                }
            }
            503 | 507 => {
                full = true;
                break;
            }
            other => panic!("unexpected status {other} while filling the disk"),
        }
    }
    assert!(full, "the store never reported a full disk");
    assert!(!acked.is_empty());
    tmpfs.resize("64m");
    // Space is back: the very next calls succeed (no broken pooled connection).
    for i in 0..20 {
        let r = client
            .post(format!("{}/v1/triage", daemon.base))
            .json(&triage(10_000 + i, 1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "triage {i} after space returned");
        let c = client
            .post(format!("{}/v1/reviews/claim", daemon.base))
            .header("x-triaged-subject", format!("dr-{i}"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert!(
            c.status() == 200 || c.status() == 204,
            "claim {i} after space returned: {}",
            c.status()
        );
    }
    daemon.kill();
    let daemon = common::Daemon::start(&url, &log).await;
    for id in &acked {
        let r = client
            .get(format!("{}/v1/reviews/{id}", daemon.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged case {id} lost");
    }
    daemon.kill();
}
