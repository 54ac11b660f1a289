//! The FHIR outbox: which cases' FHIR Tasks are behind the queue. Every change of
//! a published case (created, claimed, released, labeled, lease expired,
//! dead-lettered, adjudicated) notes the case here in the change's own
//! transaction, so a committed change is always published eventually and a
//! rolled-back one never is. One row per case, not per change: the publisher
//! writes the whole Task as the case is when it reads it, so changes coalesce,
//! redelivery is harmless, and only one daemon holds a case at a time (per-case
//! order across daemons). A generation counter keeps a change made while a Task
//! is being written from being marked delivered with it.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Backend, Case, Store, StoreOptions, StoreResult};

/// Whose cases are kept in step with a FHIR Task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FhirScope {
    /// FHIR publishing is off: nothing is noted.
    #[default]
    Off,
    /// Every model's cases.
    AllModels,
    /// Only these models' cases.
    Models(Vec<String>),
}

impl FhirScope {
    pub fn covers(&self, model: &str) -> bool {
        match self {
            FhirScope::Off => false,
            FhirScope::AllModels => true,
            FhirScope::Models(models) => models.iter().any(|m| m == model),
        }
    }
}

/// A case whose Task is due for a write, claimed by one publisher for a while.
#[derive(Debug, Clone)]
pub struct FhirDue {
    pub case_id: String,
    /// The change count when claimed: delivering marks up to this one only.
    pub generation: i64,
    /// Failed writes since the last success (the backoff exponent).
    pub attempts: i64,
    /// The Task's id on the server and its last seen `meta.versionId`, once known.
    pub task_id: Option<String>,
    pub task_version: Option<String>,
    /// Until when this claim holds the case (the claim's token: see
    /// [`Store::fhir_extend_hold`]).
    pub held_until: i64,
}

/// What a Task is written from: the case, its labels by reviewer and its live
/// leases, read after the claim (a later change bumps the generation and is
/// written again).
#[derive(Debug, Clone)]
pub struct FhirSnapshot {
    pub case: Case,
    /// `(reviewer, label)` in the order they were given.
    pub labels: Vec<(String, i64)>,
    /// `(reviewer, expires_at)` of live leases, oldest claim first.
    pub leases: Vec<(String, i64)>,
    /// The store's "now" when read (unix milliseconds).
    pub now: i64,
}

/// The FHIR outbox at a glance (admins, metrics).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FhirOutboxStats {
    /// Cases whose Task is behind (parked ones not counted).
    pub undelivered: i64,
    /// Cases parked after repeated refusals.
    pub parked: i64,
    /// Age of the oldest change not yet on the FHIR server (parked ones included), seconds.
    pub oldest_undelivered_seconds: Option<f64>,
}

/// A case parked after the FHIR server refused its Task repeatedly.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParkedSync {
    pub case_id: String,
    pub attempts: i64,
    /// The server's answer (status and OperationOutcome summary), no payload.
    pub last_error: Option<String>,
    /// Unix milliseconds.
    pub parked_at: i64,
}

/// Notes that case `case_id` of `model` changed, inside the caller's
/// transaction, when FHIR publishing covers the model. A row in step becomes due
/// now; one already waiting keeps its backoff; a parked one is tried afresh.
pub(crate) async fn note_change(
    conn: &mut AnyConnection,
    options: &StoreOptions,
    case_id: &str,
    model: &str,
    now: i64,
) -> StoreResult<()> {
    if !options.fhir.covers(model) {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO fhir_outbox (case_id, generation, changed_at, pending_since, due_at) VALUES ($1, 1, $2, $2, $2) \
         ON CONFLICT (case_id) DO UPDATE SET generation = fhir_outbox.generation + 1, changed_at = $2, \
         pending_since = COALESCE(fhir_outbox.pending_since, $2), \
         due_at = CASE WHEN fhir_outbox.due_at IS NULL THEN $2 ELSE fhir_outbox.due_at END, \
         parked_at = NULL, refusals = 0",
    )
    .bind(case_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`note_change`] for a case known by id only (its model is read first).
pub(crate) async fn note_change_of(
    conn: &mut AnyConnection,
    options: &StoreOptions,
    case_id: &str,
    now: i64,
) -> StoreResult<()> {
    if options.fhir == FhirScope::Off {
        return Ok(());
    }
    let model: Option<(String,)> = sqlx::query_as("SELECT model FROM cases WHERE id = $1")
        .bind(case_id)
        .fetch_optional(&mut *conn)
        .await?;
    match model {
        Some((model,)) => note_change(conn, options, case_id, &model, now).await,
        None => Ok(()),
    }
}

impl Store {
    /// Claims up to `limit` cases whose Task is due for `hold_ms`, oldest due
    /// first (`FOR UPDATE SKIP LOCKED` on PostgreSQL: daemons never hold the same
    /// case at once).
    pub async fn due_fhir_syncs(&self, limit: i64, hold_ms: i64) -> StoreResult<Vec<FhirDue>> {
        let mut tx = self.begin_write().await?;
        let now = self.now_in(&mut tx).await?;
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let rows = sqlx::query(&format!(
            "SELECT case_id, generation, attempts, task_id, task_version FROM fhir_outbox \
             WHERE due_at IS NOT NULL AND due_at <= $1 AND locked_until <= $1 ORDER BY due_at, case_id LIMIT $2{lock}"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut due = Vec::with_capacity(rows.len());
        for r in &rows {
            let case_id: String = r.try_get("case_id")?;
            sqlx::query("UPDATE fhir_outbox SET locked_until = $1 WHERE case_id = $2")
                .bind(now + hold_ms)
                .bind(&case_id)
                .execute(&mut *tx)
                .await?;
            due.push(FhirDue {
                case_id,
                generation: r.try_get("generation")?,
                attempts: r.try_get("attempts")?,
                task_id: r.try_get("task_id")?,
                task_version: r.try_get("task_version")?,
                held_until: now + hold_ms,
            });
        }
        tx.commit().await?;
        Ok(due)
    }

    /// Extends this claim on `due`'s case to `hold_ms` from now, before its
    /// write starts (the claim was taken for a whole batch). False when the
    /// claim lapsed and another publisher took the case: leave it to that one.
    pub async fn fhir_extend_hold(&self, due: &mut FhirDue, hold_ms: i64) -> StoreResult<bool> {
        let until = self.now().await? + hold_ms;
        let n = sqlx::query(
            "UPDATE fhir_outbox SET locked_until = $1 WHERE case_id = $2 AND locked_until = $3",
        )
        .bind(until)
        .bind(&due.case_id)
        .bind(due.held_until)
        .execute(self.pool())
        .await?
        .rows_affected();
        if n == 1 {
            due.held_until = until;
        }
        Ok(n == 1)
    }

    /// The case as its Task must show it now.
    pub async fn fhir_snapshot(&self, case_id: &str) -> StoreResult<FhirSnapshot> {
        let case = self.case(case_id).await?;
        let now = self.now().await?;
        let labels: Vec<(String, i64)> = sqlx::query_as(
            "SELECT reviewer, label FROM labels WHERE case_id = $1 ORDER BY created_at, reviewer",
        )
        .bind(case_id)
        .fetch_all(self.pool())
        .await?;
        let leases: Vec<(String, i64)> = sqlx::query_as(
            "SELECT reviewer, expires_at FROM leases WHERE case_id = $1 AND expires_at > $2 \
             ORDER BY created_at, reviewer",
        )
        .bind(case_id)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        Ok(FhirSnapshot {
            case,
            labels,
            leases,
            now,
        })
    }

    /// The Task now shows the case as of `generation`; remembers the Task's id
    /// and version for the next write's `If-Match`. A change noted meanwhile
    /// stays due.
    pub async fn fhir_synced(
        &self,
        due: &FhirDue,
        task_id: &str,
        task_version: Option<&str>,
    ) -> StoreResult<()> {
        let now = self.now().await?;
        sqlx::query(
            "UPDATE fhir_outbox SET \
             delivered_generation = CASE WHEN delivered_generation > $2 THEN delivered_generation ELSE $2 END, \
             due_at = CASE WHEN generation > $2 THEN $3 ELSE NULL END, \
             pending_since = CASE WHEN generation > $2 THEN changed_at ELSE NULL END, \
             task_id = $4, task_version = $5, attempts = 0, refusals = 0, last_error = NULL, locked_until = 0 \
             WHERE case_id = $1",
        )
        .bind(&due.case_id)
        .bind(due.generation)
        .bind(now)
        .bind(task_id)
        .bind(task_version)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A failed write: retried after `retry_in_ms`; a refusal (the server said
    /// no, 4xx) counts toward parking, which happens at `park_after` refusals
    /// in a row. Returns true when the case is now parked.
    pub async fn fhir_failed(
        &self,
        due: &FhirDue,
        error: &str,
        retry_in_ms: i64,
        refused: bool,
        park_after: u32,
    ) -> StoreResult<bool> {
        let now = self.now().await?;
        let refusal = i64::from(refused);
        sqlx::query(
            "UPDATE fhir_outbox SET attempts = attempts + 1, refusals = refusals + $2, last_error = $3, locked_until = 0, \
             parked_at = CASE WHEN refusals + $2 >= $4 THEN $5 ELSE NULL END, \
             due_at = CASE WHEN refusals + $2 >= $4 THEN NULL ELSE $6 END \
             WHERE case_id = $1",
        )
        .bind(&due.case_id)
        .bind(refusal)
        .bind(error)
        .bind(i64::from(park_after))
        .bind(now)
        .bind(now + retry_in_ms)
        .execute(self.pool())
        .await?;
        let (parked,): (Option<i64>,) =
            sqlx::query_as("SELECT parked_at FROM fhir_outbox WHERE case_id = $1")
                .bind(&due.case_id)
                .fetch_one(self.pool())
                .await?;
        Ok(parked.is_some())
    }

    /// Gives claimed cases back untried (the server is unreachable: trying the
    /// rest of a batch now would only wait for the same timeout again), due
    /// again in `retry_in_ms`, without counting an attempt.
    pub async fn fhir_defer(&self, due: &[FhirDue], retry_in_ms: i64) -> StoreResult<()> {
        let now = self.now().await?;
        for d in due {
            sqlx::query("UPDATE fhir_outbox SET locked_until = 0, due_at = $1 WHERE case_id = $2 AND due_at IS NOT NULL")
                .bind(now + retry_in_ms)
                .bind(&d.case_id)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    pub async fn fhir_outbox_stats(&self) -> StoreResult<FhirOutboxStats> {
        let now = self.now().await?;
        let row = sqlx::query(
            "SELECT \
             (SELECT COUNT(*) FROM fhir_outbox WHERE due_at IS NOT NULL) AS undelivered, \
             (SELECT COUNT(*) FROM fhir_outbox WHERE parked_at IS NOT NULL) AS parked, \
             (SELECT MIN(pending_since) FROM fhir_outbox WHERE pending_since IS NOT NULL) AS oldest",
        )
        .fetch_one(self.pool())
        .await?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok(FhirOutboxStats {
            undelivered: row.try_get("undelivered")?,
            parked: row.try_get("parked")?,
            oldest_undelivered_seconds: oldest.map(|t| (now - t).max(0) as f64 / 1000.0),
        })
    }

    /// Parked cases, most recently parked first.
    pub async fn fhir_parked(&self, limit: i64) -> StoreResult<Vec<ParkedSync>> {
        let rows = sqlx::query(
            "SELECT case_id, attempts, last_error, parked_at FROM fhir_outbox WHERE parked_at IS NOT NULL \
             ORDER BY parked_at DESC, case_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ParkedSync {
                    case_id: r.try_get("case_id")?,
                    attempts: r.try_get("attempts")?,
                    last_error: r.try_get("last_error")?,
                    parked_at: r.try_get("parked_at")?,
                })
            })
            .collect()
    }

    /// Makes every parked case due now (after the cause was fixed). Returns how many.
    pub async fn fhir_retry_parked(&self) -> StoreResult<u64> {
        let now = self.now().await?;
        Ok(sqlx::query(
            "UPDATE fhir_outbox SET parked_at = NULL, refusals = 0, attempts = 0, due_at = $1, locked_until = 0 \
             WHERE parked_at IS NOT NULL",
        )
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected())
    }
}
