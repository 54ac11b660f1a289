//! Routed cases: what the triage core hands over ([`NewCase`]), how they are
//! committed (a group-committing writer, with one deadline per group and
//! idempotency keys scoped per caller, model and protocol), and how they are
//! read back ([`Case`], listing, queue statistics).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::write::{failure_kind, is_per_job, FailureKind, WriteTx};
use super::{
    clock_now, fhir_outbox, outbox, Backend, CaseStatus, Store, StoreError, StoreOptions,
    StoreResult,
};

/// Cases committed together by the writer at most.
const GROUP_COMMIT_MAX: usize = 64;

/// A case the policy routed to review, as the triage core hands it over.
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
    /// Most labels asked for while they hold no strict majority; then adjudication.
    pub max_labels: u32,
    /// Higher first.
    pub priority: f64,
    /// The patient's identifier, when the caller sent one: kept for the FHIR
    /// Task's `for`, nothing else.
    pub patient: Option<String>,
}

/// A client's idempotency key. It is scoped to who sent it, to which model and
/// over which protocol, so one caller can never read another's answer, and it
/// remembers a hash of the request body, so a reuse with another body is refused
/// instead of silently answered with the first response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub subject: String,
    pub model: String,
    /// `v1` or `v2`: the stored answer is in that protocol's format.
    pub protocol: &'static str,
    pub request_id: String,
    /// Hex SHA-256 of the request's canonical body.
    pub body_sha256: String,
}

/// What recording a triage answer did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Committed; the cases exist.
    New,
    /// The key was seen before with the same body: its first answer, no new case.
    Existing(String),
}

pub(crate) struct RecordJob {
    key: Option<IdempotencyKey>,
    cases: Vec<NewCase>,
    response: String,
    deadline: Instant,
    reply: oneshot::Sender<StoreResult<Recorded>>,
}

/// A case as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Case {
    pub id: String,
    pub model: String,
    pub model_version: String,
    pub policy_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub instance_index: i64,
    /// Feature values in the model's order.
    pub input: Vec<f32>,
    pub feature_names: Vec<String>,
    pub class_names: Vec<String>,
    /// The model's predicted class.
    pub model_class: i64,
    pub probabilities: Vec<f32>,
    #[schema(value_type = Object)]
    pub uncertainty: serde_json::Value,
    pub reason: String,
    pub reason_code: String,
    pub audit: bool,
    /// Shadow mode: what the policy itself would have done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_route: Option<String>,
    pub reviewers_needed: i64,
    pub escalate_on_disagreement: bool,
    pub escalated: bool,
    pub priority: f64,
    pub status: CaseStatus,
    pub lease_failures: i64,
    /// Consensus label once resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consensus: Option<i64>,
    /// Pairwise disagreement of the reviewers' labels once resolved (k ≥ 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<f64>,
    /// Labels so far.
    pub labels: i64,
    /// Unix milliseconds.
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<i64>,
    /// Most labels asked for before the case goes to adjudication.
    pub max_labels: i64,
    /// Who adjudicated the case, when its reviewers held no strict majority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjudicated_by: Option<String>,
    /// The patient's identifier, for the FHIR Task only: never shown to
    /// reviewers or admins through the API.
    #[serde(skip)]
    pub patient: Option<String>,
}

pub(crate) const CASE_COLUMNS: &str = "c.id, c.model, c.model_version, c.policy_version, c.request_id, c.instance_index, c.input, \
     c.feature_names, c.class_names, c.model_class, c.probabilities, c.uncertainty, c.reason, c.reason_code, c.audit, \
     c.policy_route, c.reviewers_needed, c.escalate_on_disagreement, c.escalated, c.priority, c.status, c.lease_failures, \
     c.consensus, c.disagreement, c.created_at, c.resolved_at, c.max_labels, c.adjudicated_by, c.patient, \
     (SELECT COUNT(*) FROM labels l WHERE l.case_id = c.id) AS n_labels";

pub(crate) fn case_from_row(row: &sqlx::any::AnyRow) -> StoreResult<Case> {
    let json = |col: &str| -> StoreResult<String> { Ok(row.try_get::<String, _>(col)?) };
    let parse = |col: &str| -> StoreResult<serde_json::Value> {
        serde_json::from_str(&json(col)?)
            .map_err(|e| StoreError::Invalid(format!("column {col}: {e}")))
    };
    let list = |col: &str| -> StoreResult<Vec<f32>> {
        serde_json::from_str(&json(col)?)
            .map_err(|e| StoreError::Invalid(format!("column {col}: {e}")))
    };
    let names = |col: &str| -> StoreResult<Vec<String>> {
        serde_json::from_str(&json(col)?)
            .map_err(|e| StoreError::Invalid(format!("column {col}: {e}")))
    };
    Ok(Case {
        id: row.try_get("id")?,
        model: row.try_get("model")?,
        model_version: row.try_get("model_version")?,
        policy_version: row.try_get("policy_version")?,
        request_id: row.try_get("request_id")?,
        instance_index: row.try_get("instance_index")?,
        input: list("input")?,
        feature_names: names("feature_names")?,
        class_names: names("class_names")?,
        model_class: row.try_get("model_class")?,
        probabilities: list("probabilities")?,
        uncertainty: parse("uncertainty")?,
        reason: row.try_get("reason")?,
        reason_code: row.try_get("reason_code")?,
        audit: row.try_get::<i64, _>("audit")? != 0,
        policy_route: row.try_get("policy_route")?,
        reviewers_needed: row.try_get("reviewers_needed")?,
        escalate_on_disagreement: row.try_get::<i64, _>("escalate_on_disagreement")? != 0,
        escalated: row.try_get::<i64, _>("escalated")? != 0,
        priority: row.try_get("priority")?,
        status: row.try_get::<String, _>("status")?.parse()?,
        lease_failures: row.try_get("lease_failures")?,
        consensus: row.try_get("consensus")?,
        disagreement: row.try_get("disagreement")?,
        labels: row.try_get("n_labels")?,
        created_at: row.try_get("created_at")?,
        resolved_at: row.try_get("resolved_at")?,
        max_labels: row.try_get("max_labels")?,
        adjudicated_by: row.try_get("adjudicated_by")?,
        patient: row.try_get("patient")?,
    })
}

/// The pending cases `reviewer` may claim at time `$1` (reviewer `$2`): still
/// short of reviewers (labels plus live leases), and neither labeled nor leased
/// by this reviewer. The one definition of "claimable".
pub(crate) const CLAIMABLE: &str = "c.status = 'pending' \
   AND (SELECT COUNT(*) FROM labels l WHERE l.case_id = c.id) \
     + (SELECT COUNT(*) FROM leases s WHERE s.case_id = c.id AND s.expires_at > $1) < c.reviewers_needed \
   AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.case_id = c.id AND l.reviewer = $2) \
   AND NOT EXISTS (SELECT 1 FROM leases s WHERE s.case_id = c.id AND s.reviewer = $2 AND s.expires_at > $1)";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    /// Cases by status (`pending`, `resolved`, `dead_letter`).
    pub by_status: BTreeMap<String, i64>,
    /// Age of the oldest pending case, in seconds.
    pub oldest_pending_seconds: Option<f64>,
    /// Live leases.
    pub leased: i64,
}

impl Store {
    /// The first answer given under `key`, if any; a conflict when the key was
    /// used with another body.
    pub async fn find_response(&self, key: &IdempotencyKey) -> StoreResult<Option<String>> {
        let mut conn = self.pool().acquire().await?;
        stored_answer(&mut conn, key)
            .await?
            .map(|(hash, response)| same_body(key, &hash).map(|()| response))
            .transpose()
    }

    /// Commits the routed `cases` and the answer `response` (remembered under
    /// `key`) before returning — the client hears back only about committed
    /// cases. Concurrent calls are group-committed in one transaction that must
    /// commit within `write_timeout`.
    pub async fn record(
        &self,
        key: Option<IdempotencyKey>,
        cases: Vec<NewCase>,
        response: String,
    ) -> StoreResult<Recorded> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(RecordJob {
                key,
                cases,
                response,
                deadline: Instant::now() + self.options().write_timeout,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// A case by id, for anyone allowed to see every case (admins).
    pub async fn case(&self, id: &str) -> StoreResult<Case> {
        let row = sqlx::query(&format!(
            "SELECT {CASE_COLUMNS} FROM cases c WHERE c.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        case_from_row(&row)
    }

    /// A case for a reviewer: only one the reviewer holds a live lease on, or
    /// has labeled.
    pub async fn case_for_reviewer(&self, id: &str, reviewer: &str) -> StoreResult<Case> {
        let case = self.case(id).await?;
        let now = self.now().await?;
        let (held,): (i64,) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM leases WHERE case_id = $1 AND reviewer = $2 AND expires_at > $3) \
                  + (SELECT COUNT(*) FROM labels WHERE case_id = $1 AND reviewer = $2)",
        )
        .bind(id)
        .bind(reviewer)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        if held == 0 {
            return Err(StoreError::Forbidden(format!(
                "case '{id}' is not claimed by you"
            )));
        }
        Ok(case)
    }

    /// Cases, newest first, optionally by status and model.
    pub async fn list_cases(
        &self,
        status: Option<CaseStatus>,
        model: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<Case>> {
        let rows = sqlx::query(&format!(
            "SELECT {CASE_COLUMNS} FROM cases c WHERE ($1 IS NULL OR c.status = $1) AND ($2 IS NULL OR c.model = $2) \
             ORDER BY c.created_at DESC, c.id LIMIT $3 OFFSET $4"
        ))
        .bind(status.map(CaseStatus::as_str))
        .bind(model)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(case_from_row).collect()
    }

    pub async fn stats(&self) -> StoreResult<QueueStats> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM cases GROUP BY status")
                .fetch_all(self.pool())
                .await?;
        let mut by_status: BTreeMap<String, i64> = CaseStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
        by_status.extend(rows);
        let (oldest,): (Option<i64>,) =
            sqlx::query_as("SELECT MIN(created_at) FROM cases WHERE status = 'pending'")
                .fetch_one(self.pool())
                .await?;
        let now = self.now().await?;
        let (leased,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM leases WHERE expires_at > $1")
            .bind(now)
            .fetch_one(self.pool())
            .await?;
        Ok(QueueStats {
            by_status,
            oldest_pending_seconds: oldest.map(|t| (now - t).max(0) as f64 / 1000.0),
            leased,
        })
    }
}

/// The body hash and answer stored under `key`, if any.
async fn stored_answer(
    conn: &mut AnyConnection,
    key: &IdempotencyKey,
) -> StoreResult<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT body_sha256, response FROM idempotency_keys \
         WHERE subject = $1 AND model = $2 AND protocol = $3 AND request_id = $4",
    )
    .bind(&key.subject)
    .bind(&key.model)
    .bind(key.protocol)
    .bind(&key.request_id)
    .fetch_optional(conn)
    .await?)
}

fn same_body(key: &IdempotencyKey, stored_hash: &str) -> StoreResult<()> {
    if stored_hash == key.body_sha256 {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "request_id '{}' was already used with a different request body; use a new request_id for a new request",
        key.request_id
    )))
}

/// Starts the writer task that group-commits [`Store::record`] calls.
pub(crate) fn spawn_writer(
    pool: AnyPool,
    backend: Backend,
    options: StoreOptions,
) -> mpsc::Sender<RecordJob> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(writer(pool, backend, options, rx));
    tx
}

async fn writer(
    pool: AnyPool,
    backend: Backend,
    options: StoreOptions,
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
        // A job whose deadline passed while it waited fails now, without waiting again.
        let now = Instant::now();
        let (late, jobs): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.deadline <= now);
        for job in late {
            let _ = job
                .reply
                .send(Err(StoreError::Deadline(options.write_timeout)));
        }
        let Some(deadline) = jobs.iter().map(|j| j.deadline).min() else {
            continue;
        };
        let started = Instant::now();
        let result = tokio::time::timeout_at(
            deadline.into(),
            commit_group(&pool, backend, &options, &jobs),
        )
        .await;
        tracing::debug!(
            jobs = jobs.len(),
            micros = started.elapsed().as_micros() as u64,
            "group commit"
        );
        match result {
            Ok(Ok(outcomes)) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            Ok(Err(StoreError::Database(e))) if is_per_job(&e) && jobs.len() > 1 => {
                // One job's constraint failed the group: commit the others one by one.
                tracing::warn!(error = %e, jobs = jobs.len(), "group commit failed; committing one by one");
                for job in jobs {
                    let one = tokio::time::timeout_at(
                        job.deadline.into(),
                        commit_group(&pool, backend, &options, std::slice::from_ref(&job)),
                    )
                    .await;
                    let outcome = match one {
                        Ok(Ok(mut o)) => o.remove(0),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(StoreError::Deadline(options.write_timeout)),
                    };
                    let _ = job.reply.send(outcome);
                }
            }
            Ok(Err(e)) => {
                // The database itself failed (locked, full, gone): every job of
                // the group fails now, with one log line for all of them.
                tracing::error!(error = %e, jobs = jobs.len(), "group commit failed");
                let kind = match &e {
                    StoreError::Database(db) => failure_kind(db),
                    _ => FailureKind::Other,
                };
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Unavailable(kind)));
                }
            }
            Err(_) => {
                tracing::error!(jobs = jobs.len(), timeout = ?options.write_timeout, "group commit missed its deadline");
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Deadline(options.write_timeout)));
                }
            }
        }
    }
}

/// One transaction for every job; a job whose key was used before gets the
/// first answer (or a conflict when its body differs) and adds no case.
async fn commit_group(
    pool: &AnyPool,
    backend: Backend,
    options: &StoreOptions,
    jobs: &[RecordJob],
) -> StoreResult<Vec<StoreResult<Recorded>>> {
    let mut tx = WriteTx::begin(pool, backend).await?;
    let now = clock_now(&options.clock, backend, &mut tx).await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    // Every new case of the group, inserted together after the keys are settled.
    let mut new_cases: Vec<(&NewCase, Option<&str>)> = Vec::new();
    for job in jobs {
        if let Some(key) = &job.key {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (subject, model, protocol, request_id, body_sha256, response, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (subject, model, protocol, request_id) DO NOTHING",
            )
            .bind(&key.subject)
            .bind(&key.model)
            .bind(key.protocol)
            .bind(&key.request_id)
            .bind(&key.body_sha256)
            .bind(&job.response)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                let (hash, first) = stored_answer(&mut tx, key).await?.ok_or_else(|| {
                    StoreError::Invalid("an idempotency key vanished mid-transaction".into())
                })?;
                outcomes.push(same_body(key, &hash).map(|()| Recorded::Existing(first)));
                continue;
            }
        }
        let request_id = job.key.as_ref().map(|k| k.request_id.as_str());
        new_cases.extend(job.cases.iter().map(|c| (c, request_id)));
        outcomes.push(Ok(Recorded::New));
    }
    for chunk in new_cases.chunks(CASES_PER_INSERT) {
        insert_cases(&mut tx, chunk, now).await?;
    }
    let announce = outbox::subscribed(&options.webhook_targets, "case.created");
    for (c, _) in &new_cases {
        fhir_outbox::note_change(&mut tx, options, &c.id, &c.model, now).await?;
        if announce {
            let payload =
                serde_json::json!({"event": "case.created", "case": case_event_payload(c)})
                    .to_string();
            outbox::enqueue_event(
                &mut tx,
                &options.webhook_targets,
                "case.created",
                &payload,
                now,
            )
            .await?;
        }
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

/// Columns of one `cases` row as the writer inserts it.
const CASE_INSERT_COLUMNS: &str = "id, model, model_version, policy_version, request_id, instance_index, input, \
     feature_names, class_names, model_class, probabilities, uncertainty, reason, reason_code, audit, \
     policy_route, reviewers_needed, escalate_on_disagreement, priority, status, created_at, max_labels, patient";

/// Bound values per inserted case (`status` is a literal).
const CASE_INSERT_PARAMS: usize = 22;

/// Cases per multi-row `INSERT`: one statement (one round trip to the database
/// thread) per this many routed cases, well under SQLite's 32,766 and
/// PostgreSQL's 65,535 bound values per statement.
const CASES_PER_INSERT: usize = 128;

/// Inserts `cases` (each with its request's id) as one multi-row statement.
async fn insert_cases(
    conn: &mut AnyConnection,
    cases: &[(&NewCase, Option<&str>)],
    now: i64,
) -> StoreResult<()> {
    if cases.is_empty() {
        return Ok(());
    }
    let mut sql = format!("INSERT INTO cases ({CASE_INSERT_COLUMNS}) VALUES ");
    for i in 0..cases.len() {
        let p = |j: usize| format!("${}", i * CASE_INSERT_PARAMS + j);
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&(1..=19).map(p).collect::<Vec<_>>().join(", "));
        sql.push_str(&format!(", 'pending', {}, {}, {})", p(20), p(21), p(22)));
    }
    let mut query = sqlx::query(&sql);
    for &(c, request_id) in cases {
        query = query
            .bind(c.id.as_str())
            .bind(c.model.as_str())
            .bind(c.model_version.as_str())
            .bind(c.policy_version.as_str())
            .bind(request_id)
            .bind(c.instance_index as i64)
            .bind(to_json(&c.input))
            .bind(to_json(&c.feature_names))
            .bind(to_json(&c.class_names))
            .bind(c.model_class as i64)
            .bind(to_json(&c.probabilities))
            .bind(c.uncertainty.to_string())
            .bind(c.reason.as_str())
            .bind(c.reason_code.as_str())
            .bind(i64::from(c.audit))
            .bind(c.policy_route.as_deref())
            .bind(i64::from(c.reviewers_needed))
            .bind(i64::from(c.escalate_on_disagreement))
            .bind(c.priority)
            .bind(now)
            .bind(i64::from(c.max_labels.max(c.reviewers_needed)))
            .bind(c.patient.as_deref());
    }
    query.execute(conn).await?;
    Ok(())
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}
