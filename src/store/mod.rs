//! The durable review queue (DESIGN §5): routed cases, reviewer leases, labels,
//! consensus, the append-only audit log and the webhook outbox — in SQLite (the
//! default: WAL, `synchronous=FULL`, busy timeout, foreign keys, `BEGIN IMMEDIATE`
//! writes) or PostgreSQL (several daemons on one queue, `FOR UPDATE SKIP LOCKED`
//! claims). One implementation over sqlx's portable driver; the few statements
//! that differ branch on [`Backend`], and each backend has its own migrations.
//!
//! - this file: connection, migrations, the group-committing case writer;
//! - [`queue`]: claim, renew, label (consensus, escalation), release, rescue;
//! - [`admin`]: listing, stats, export as a dataset, agreement, audit log, outbox.

pub mod admin;
pub mod queue;

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use tokio::sync::{mpsc, oneshot};

/// Cases committed together by the writer at most.
const GROUP_COMMIT_MAX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no case '{0}'")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the store's writer has stopped")]
    WriterGone,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Queue behaviour.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a claim holds a case for one reviewer.
    pub lease: Duration,
    /// Expired leases after which a case goes to `dead_letter`.
    pub max_lease_failures: u32,
    /// Webhook targets: every event is queued once per target.
    pub webhook_targets: Vec<String>,
}

/// A case the policy routed to review, as the triage handler hands it over.
#[derive(Debug, Clone, Serialize)]
pub struct NewCase {
    pub id: String,
    pub model: String,
    pub model_version: String,
    pub policy_version: String,
    pub instance_index: usize,
    pub input: Vec<f32>,
    pub feature_names: Vec<String>,
    pub class_names: Vec<String>,
    pub model_class: usize,
    pub probabilities: Vec<f32>,
    pub uncertainty: serde_json::Value,
    pub reason: String,
    pub reason_code: String,
    pub audit: bool,
    /// Shadow mode: the policy's own route.
    pub policy_route: Option<String>,
    pub reviewers_needed: u32,
    pub escalate_on_disagreement: bool,
    /// Higher first.
    pub priority: f64,
}

/// What recording a triage answer did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Committed; the cases exist.
    New,
    /// The request id was seen before: its first answer, no new case.
    Existing(String),
}

struct RecordJob {
    request_id: Option<String>,
    model: String,
    cases: Vec<NewCase>,
    response: String,
    reply: oneshot::Sender<StoreResult<Recorded>>,
}

pub struct Store {
    pool: AnyPool,
    backend: Backend,
    options: StoreOptions,
    writer: mpsc::Sender<RecordJob>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`), creates a SQLite file's
    /// folder, runs the backend's migrations and starts the writer.
    pub async fn connect(url: &str, options: StoreOptions) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Invalid(format!(
                "store.url must start with sqlite:// or postgres://, got '{}'",
                redact_url(url)
            )));
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let connect = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Per connection: durability on every commit, wait (not fail)
                        // on the write lock, enforce references.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;
        match backend {
            Backend::Sqlite => {
                sqlx::migrate!("src/store/migrations/sqlite")
                    .run(&pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("src/store/migrations/postgres")
                    .run(&pool)
                    .await?
            }
        }
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(writer(
            pool.clone(),
            backend,
            options.webhook_targets.clone(),
            rx,
        ));
        tracing::info!(backend = ?backend, "review queue store ready");
        Ok(Store {
            pool,
            backend,
            options,
            writer: tx,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Opens a write transaction: `BEGIN IMMEDIATE` on SQLite, so the write lock
    /// is taken up front and the transaction never fails half-way on a busy lock.
    pub(crate) async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// The first answer given to `request_id`, if any.
    pub async fn find_response(&self, request_id: &str) -> StoreResult<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT response FROM triage_requests WHERE request_id = $1")
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// Commits the routed `cases` and the answer `response` (remembered under
    /// `request_id`) before returning — the client hears back only about committed
    /// cases. Concurrent calls are group-committed in one transaction.
    pub async fn record(
        &self,
        request_id: Option<String>,
        model: &str,
        cases: Vec<NewCase>,
        response: String,
    ) -> StoreResult<Recorded> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(RecordJob {
                request_id,
                model: model.to_string(),
                cases,
                response,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// `sqlite://path` with the file's folder created and `mode=rwc`.
fn sqlite_url(url: &str) -> StoreResult<String> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Invalid(
            "store.url needs a SQLite file path (the queue must be durable)".into(),
        ));
    }
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Invalid(format!("creating {}: {e}", dir.display())))?;
    }
    Ok(if rest.contains('?') {
        format!("sqlite://{rest}&mode=rwc")
    } else {
        format!("sqlite://{rest}?mode=rwc")
    })
}

/// The URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}://{user}:***{}", &url[..s], &url[at..])
        }
        _ => url.to_string(),
    }
}

async fn writer(
    pool: AnyPool,
    backend: Backend,
    targets: Vec<String>,
    mut rx: mpsc::Receiver<RecordJob>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        match commit_group(&pool, backend, &targets, &jobs).await {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                // One bad job must not fail the others: retry each on its own.
                tracing::warn!(error = %e, jobs = jobs.len(), "group commit failed; committing one by one");
                for job in jobs {
                    let outcome =
                        commit_group(&pool, backend, &targets, std::slice::from_ref(&job))
                            .await
                            .map(|mut o| o.remove(0));
                    let _ = job.reply.send(outcome);
                }
            }
        }
    }
}

async fn commit_group(
    pool: &AnyPool,
    backend: Backend,
    targets: &[String],
    jobs: &[RecordJob],
) -> StoreResult<Vec<Recorded>> {
    let mut tx = match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    };
    let now = now_ms();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(rid) = &job.request_id {
            let inserted = sqlx::query(
                "INSERT INTO triage_requests (request_id, model, response, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (request_id) DO NOTHING",
            )
            .bind(rid)
            .bind(&job.model)
            .bind(&job.response)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                let (first,): (String,) =
                    sqlx::query_as("SELECT response FROM triage_requests WHERE request_id = $1")
                        .bind(rid)
                        .fetch_one(&mut *tx)
                        .await?;
                outcomes.push(Recorded::Existing(first));
                continue;
            }
        }
        for c in &job.cases {
            insert_case(&mut tx, c, job.request_id.as_deref(), now).await?;
            let payload =
                serde_json::json!({"event": "case.created", "case": case_event_payload(c)})
                    .to_string();
            for target in targets {
                admin::enqueue_event(&mut tx, "case.created", target, &payload, now).await?;
            }
        }
        outcomes.push(Recorded::New);
    }
    tx.commit().await?;
    Ok(outcomes)
}

fn case_event_payload(c: &NewCase) -> serde_json::Value {
    serde_json::json!({
        "id": c.id, "model": c.model, "model_version": c.model_version, "policy_version": c.policy_version,
        "reviewers_needed": c.reviewers_needed, "priority": c.priority, "audit": c.audit, "reason": c.reason,
    })
}

async fn insert_case(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    c: &NewCase,
    request_id: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO cases (id, model, model_version, policy_version, request_id, instance_index, input, \
         feature_names, class_names, model_class, probabilities, uncertainty, reason, reason_code, audit, \
         policy_route, reviewers_needed, escalate_on_disagreement, priority, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, 'pending', $20)",
    )
    .bind(&c.id)
    .bind(&c.model)
    .bind(&c.model_version)
    .bind(&c.policy_version)
    .bind(request_id)
    .bind(c.instance_index as i64)
    .bind(to_json(&c.input))
    .bind(to_json(&c.feature_names))
    .bind(to_json(&c.class_names))
    .bind(c.model_class as i64)
    .bind(to_json(&c.probabilities))
    .bind(c.uncertainty.to_string())
    .bind(&c.reason)
    .bind(&c.reason_code)
    .bind(i64::from(c.audit))
    .bind(c.policy_route.as_deref())
    .bind(i64::from(c.reviewers_needed))
    .bind(i64::from(c.escalate_on_disagreement))
    .bind(c.priority)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}
