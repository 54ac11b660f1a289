//! Test databases: a SQLite file in a temporary folder, or a fresh PostgreSQL
//! database (from `TRIAGED_TEST_POSTGRES_URL`) that is dropped afterwards.
#![allow(dead_code)]

use std::time::Duration;

use sqlx::Connection;

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
/// `TRIAGED_TEST_POSTGRES_URL` is unset. CI always sets it.
pub async fn postgres() -> Option<TestDb> {
    let Ok(admin_url) = std::env::var("TRIAGED_TEST_POSTGRES_URL") else {
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
