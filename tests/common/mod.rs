//! Shared test fixtures. Test databases: a SQLite file in a temporary folder, or
//! a fresh PostgreSQL database (from `TRIAGED_TEST_POSTGRES_URL`) that is dropped
//! afterwards. The committed CIFAR images, imported as the two kinds of data set.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection;
use triaged::data::csv_import::{CsvImport, LabelLayout};
use triaged::data::images::{import_images, ImageImport};
use triaged::data::Dataset;

/// Owns a test database; dropping it removes the database.
pub enum TestDb {
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        admin_url: String,
        name: String,
    },
}

impl TestDb {
    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }
}

pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("queue.db").display());
    TestDb::Sqlite { url, _dir: dir }
}

/// A fresh PostgreSQL database, or `None` (with a note) when
/// `TRIAGED_TEST_POSTGRES_URL` is unset — unless `TRIAGED_REQUIRE_POSTGRES=1`
/// (CI sets it), when a missing URL fails the test instead of skipping it, so
/// a green run cannot hide skipped PostgreSQL tests.
pub async fn postgres() -> Option<TestDb> {
    let Ok(admin_url) = std::env::var("TRIAGED_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("TRIAGED_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "TRIAGED_REQUIRE_POSTGRES=1 but TRIAGED_TEST_POSTGRES_URL is unset"
        );
        eprintln!("TRIAGED_TEST_POSTGRES_URL is unset: skipping the PostgreSQL variant");
        return None;
    };
    let name = format!("triaged_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to TRIAGED_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let url = match admin_url.rfind('/') {
        Some(i) if admin_url[..i].contains("://") && i > admin_url.find("://").unwrap() + 2 => {
            let query = admin_url[i..]
                .find('?')
                .map(|q| &admin_url[i + q..])
                .unwrap_or("");
            format!("{}/{name}{query}", &admin_url[..i])
        }
        _ => format!("{}/{name}", admin_url.trim_end_matches('/')),
    };
    Some(TestDb::Postgres {
        url,
        admin_url,
        name,
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside async: a short-lived runtime on its own thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn short_lease() -> Duration {
    Duration::from_millis(300)
}

/// A `triaged serve` process on a free loopback port.
pub struct Daemon {
    pub child: std::process::Child,
    pub base: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    /// Starts the binary against `store_url`, serving the repository's bundles,
    /// and waits until it is ready.
    pub async fn start(store_url: &str, log: &std::path::Path) -> Daemon {
        let port = free_port();
        let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_triaged"))
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--models-dir",
            ])
            .arg(&models)
            .env("TRIAGED__STORE__URL", store_url)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .spawn()
            .expect("start triaged serve");
        let d = Daemon {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = client
                .get(format!("{}/v2/health/ready", d.base))
                .send()
                .await
            {
                if r.status() == 200 {
                    return d;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "daemon not ready; log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// SIGKILL: no shutdown hook runs.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every case in the queue (admin listing, paged).
pub async fn all_cases(base: &str) -> Vec<serde_json::Value> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    loop {
        let page: Vec<serde_json::Value> = client
            .get(format!("{base}/v1/reviews?limit=1000&offset={}", out.len()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = page.len();
        out.extend(page);
        if n < 1000 {
            return out;
        }
    }
}

/// The committed CIFAR fixture (tests/fixtures/cifar): CIFAR-10N-style
/// annotator columns for training, CIFAR-10H-style counts with a split.
pub const CIFAR_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

pub fn cifar_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar")
}

fn import_cifar(csv: &str, labels: LabelLayout, split: bool) -> Dataset {
    import_images(&ImageImport {
        images: cifar_fixture(),
        labels: CsvImport {
            csv: cifar_fixture().join(csv),
            labels,
            features: None,
            reference: Some("reference".into()),
            split: split.then(|| "split".into()),
            classes: Some(CIFAR_CLASSES.iter().map(|c| c.to_string()).collect()),
            min_labels: 0,
            image_column: Some("image".into()),
            group: None,
        },
        height: 32,
        width: 32,
        resize: true,
    })
    .unwrap()
}

pub fn cifar10n() -> Dataset {
    import_cifar(
        "cifar10n-train.csv",
        LabelLayout::Annotators(vec![
            "annotator1".into(),
            "annotator2".into(),
            "annotator3".into(),
        ]),
        false,
    )
}

pub fn cifar10h() -> Dataset {
    import_cifar(
        "cifar10h-test.csv",
        LabelLayout::Counts(CIFAR_CLASSES.iter().map(|c| format!("n_{c}")).collect()),
        true,
    )
}
