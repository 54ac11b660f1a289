//! The durable review queue (docs/review-queue.md): routed cases, reviewer leases,
//! labels, consensus, the append-only audit log and the webhook outbox — in SQLite
//! (the default: WAL, `synchronous=FULL`, a bounded busy wait, foreign keys,
//! `BEGIN IMMEDIATE` writes) or PostgreSQL (several daemons on one queue,
//! `FOR UPDATE SKIP LOCKED` claims). One implementation over sqlx's portable
//! driver; the few statements that differ branch on [`Backend`], and each backend
//! has its own migrations.
//!
//! Split by what is stored:
//! - this file: connection, options, the clock, errors;
//! - [`write`]: write transactions that never hand a broken connection back;
//! - [`cases`]: routed cases, their group-committing writer and idempotency keys;
//! - [`leases`]: claim, renew, release, and the rescue of expired leases;
//! - [`labels`]: labels, consensus and escalation;
//! - [`audit`]: the append-only audit log;
//! - [`outbox`]: webhook events waiting for delivery;
//! - [`fhir_outbox`]: cases whose FHIR Task is not yet in step with them;
//! - [`monitors`]: the audit monitors' state (it survives restarts, daemons share it);
//! - [`export`]: resolved cases as a training data set, and model-vs-reviewer agreement;
//! - [`reviewers`]: labels and agreement per reviewer, and the adjudicator's tied cases.

pub mod audit;
pub mod cases;
pub mod export;
pub mod fhir_outbox;
pub mod labels;
pub mod leases;
pub mod monitors;
pub mod outbox;
pub mod reviewers;
pub mod write;

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor};
use tokio::sync::mpsc;

pub use audit::AuditEntry;
pub use cases::{Case, IdempotencyKey, NewCase, QueueStats, Recorded};
pub use export::Agreement;
pub use fhir_outbox::{FhirDue, FhirOutboxStats, FhirScope, FhirSnapshot, ParkedSync};
pub use labels::{LabelOutcome, Resolution};
pub use leases::{Claim, Lease, RequeueOutcome, Requeued};
pub use outbox::OutboxEvent;
pub use reviewers::{ReviewerLabel, ReviewerStats, TiedCase};

/// The shortest PostgreSQL `statement_timeout` (and idle-in-transaction
/// timeout): the bound on any one statement, reads included.
const STATEMENT_TIMEOUT_FLOOR: Duration = Duration::from_secs(30);

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
    /// The write could not be committed before its deadline (the database is
    /// locked by someone else, or too slow).
    #[error("the store did not commit within {0:?}")]
    Deadline(Duration),
    /// The database failed for every write of a group (locked, full, gone);
    /// the full error is logged once by the writer.
    #[error("{}", .0.describe())]
    Unavailable(write::FailureKind),
    #[error("the store's writer has stopped")]
    WriterGone,
}

impl StoreError {
    /// What a client may be told: the kind of failure, never the database's own
    /// text (which can name tables, paths or hosts; it is logged instead).
    pub fn public_reason(&self) -> &'static str {
        match self {
            StoreError::Database(e) => write::failure_kind(e).describe(),
            StoreError::Unavailable(kind) => kind.describe(),
            StoreError::Migrate(_) => "the database schema could not be migrated",
            StoreError::Deadline(_) => "the database did not commit in time",
            StoreError::WriterGone => "the store is shutting down",
            _ => "the request conflicts with the queue",
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The status of a case in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Waiting for (more) reviewers' labels.
    Pending,
    /// Every needed label is in; consensus and disagreement are set.
    Resolved,
    /// Its leases expired too often; an admin must look at it.
    DeadLetter,
    /// The capped number of labels holds no strict majority: an adjudicator
    /// decides (never the lowest class index).
    Adjudication,
}

impl CaseStatus {
    pub const ALL: [CaseStatus; 4] = [
        CaseStatus::Pending,
        CaseStatus::Resolved,
        CaseStatus::DeadLetter,
        CaseStatus::Adjudication,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Pending => "pending",
            CaseStatus::Resolved => "resolved",
            CaseStatus::DeadLetter => "dead_letter",
            CaseStatus::Adjudication => "adjudication",
        }
    }
}

impl FromStr for CaseStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> StoreResult<Self> {
        CaseStatus::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "status '{s}' is not pending, resolved, dead_letter or adjudication"
                ))
            })
    }
}

/// A webhook target and the events it subscribed to: only those are queued for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The target's URL, also the outbox rows' key (may carry credentials).
    pub url: crate::secret::SecretUrl,
    pub events: Vec<String>,
}

/// Queue behaviour.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a claim holds a case for one reviewer.
    pub lease: Duration,
    /// Distinct reviewers whose leases lapsed after which a case goes to `dead_letter`.
    pub max_lease_failures: u32,
    /// Live leases one reviewer may hold at once (a claim over it: 409).
    pub max_leases_per_reviewer: u32,
    /// Webhook targets: an event is queued once per target subscribed to it.
    pub webhook_targets: Vec<Subscription>,
    /// How long a write may wait for the database (a lock, a slow disk) before
    /// it fails with 503: one deadline for a whole group commit.
    pub write_timeout: Duration,
    /// Whose cases are kept in step with a FHIR Task (each change then notes the
    /// case in the FHIR outbox, in the change's transaction).
    pub fhir: FhirScope,
    /// Where "now" comes from for leases and timestamps.
    pub clock: Clock,
}

impl StoreOptions {
    /// Options with the defaults of `config/default.toml` for everything but the lease.
    pub fn with_lease(lease: Duration) -> StoreOptions {
        StoreOptions {
            lease,
            max_lease_failures: 3,
            max_leases_per_reviewer: 3,
            webhook_targets: Vec::new(),
            write_timeout: Duration::from_secs(5),
            fhir: FhirScope::Off,
            clock: Clock::Database,
        }
    }
}

/// The time leases are measured in. Several daemons share one PostgreSQL queue,
/// so lease expiry must not depend on each daemon's own clock: by default "now"
/// is the database's (SQLite runs in-process, so its clock is this machine's).
/// Tests use a manual clock and move it instead of sleeping.
#[derive(Debug, Clone)]
pub enum Clock {
    Database,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at `start_ms` (unix milliseconds).
    pub fn manual(start_ms: i64) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start_ms)))
    }

    /// Moves a manual clock forward (no-op on the database clock).
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }
}

pub struct Store {
    pool: AnyPool,
    backend: Backend,
    options: StoreOptions,
    writer: mpsc::Sender<cases::RecordJob>,
}

/// This process's wall clock in unix milliseconds.
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
        let busy_ms = options.write_timeout.as_millis().max(1);
        // Reads (an export of a large queue) may take longer than a write may
        // wait for a lock, but nothing runs unbounded.
        let statement_ms = options
            .write_timeout
            .max(STATEMENT_TIMEOUT_FLOOR)
            .as_millis();
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(options.write_timeout.max(Duration::from_secs(1)))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Per connection: durability on every commit, wait (not
                        // fail) on the write lock but never past one write
                        // deadline, enforce references.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute(format!("PRAGMA busy_timeout = {busy_ms}").as_str())
                            .await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // 16 MiB of page cache (SQLite's default is 2 MiB): the
                        // queue index's pages stay in memory between commits.
                        conn.execute("PRAGMA cache_size = -16384").await?;
                    } else {
                        // The deadline on the server too: a statement waiting on a
                        // lock gives up there after one write deadline (a client
                        // that timed out and dropped its socket would otherwise
                        // leave its query waiting, holding a backend), and no
                        // statement or idle transaction outlives the bound.
                        conn.execute(format!("SET lock_timeout = {busy_ms}").as_str())
                            .await?;
                        conn.execute(format!("SET statement_timeout = {statement_ms}").as_str())
                            .await?;
                        conn.execute(
                            format!("SET idle_in_transaction_session_timeout = {statement_ms}")
                                .as_str(),
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect.clone())
            .await?;
        match backend {
            Backend::Sqlite => {
                sqlx::migrate!("src/store/migrations/sqlite")
                    .run(&pool)
                    .await?
            }
            Backend::Postgres => {
                // On a connection of its own, without the pool's lock and
                // statement timeouts: a daemon that starts while another
                // migrates waits for sqlx's migration lock instead of failing,
                // and a long migration is not cancelled half-way.
                let mut conn = sqlx::AnyConnection::connect_with(&connect).await?;
                let migrated = sqlx::migrate!("src/store/migrations/postgres")
                    .run(&mut conn)
                    .await;
                let _ = conn.close().await;
                migrated?
            }
        }
        let writer = cases::spawn_writer(pool.clone(), backend, options.clone());
        tracing::info!(backend = ?backend, "review queue store ready");
        Ok(Store {
            pool,
            backend,
            options,
            writer,
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

    /// Opens a write transaction (see [`write::WriteTx`]).
    pub(crate) async fn begin_write(&self) -> StoreResult<write::WriteTx> {
        write::WriteTx::begin(&self.pool, self.backend).await
    }

    /// "Now" in unix milliseconds by the store's clock, read inside `conn`'s
    /// transaction where the database keeps the time.
    pub(crate) async fn now_in(&self, conn: &mut sqlx::AnyConnection) -> StoreResult<i64> {
        clock_now(&self.options.clock, self.backend, conn).await
    }

    /// "Now" by the store's clock, outside a transaction.
    pub async fn now(&self) -> StoreResult<i64> {
        let mut conn = self.pool.acquire().await?;
        clock_now(&self.options.clock, self.backend, &mut conn).await
    }
}

pub(crate) async fn clock_now(
    clock: &Clock,
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
) -> StoreResult<i64> {
    match (clock, backend) {
        (Clock::Manual(t), _) => Ok(t.load(Ordering::SeqCst)),
        (Clock::Database, Backend::Sqlite) => Ok(now_ms()),
        (Clock::Database, Backend::Postgres) => {
            let (t,): (i64,) = sqlx::query_as(
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            )
            .fetch_one(conn)
            .await?;
            Ok(t)
        }
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

pub use crate::secret::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_status_round_trips() {
        for s in CaseStatus::ALL {
            assert_eq!(s.as_str().parse::<CaseStatus>().unwrap(), s);
        }
        assert!("done".parse::<CaseStatus>().is_err());
    }
}
