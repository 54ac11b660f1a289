//! Reviewer leases: claim the next case under a lease (at most
//! `max_leases_per_reviewer` live at once per reviewer, so one reviewer cannot
//! hoard the queue), renew it, give it back, the rescue of expired leases (a
//! case whose leases lapsed for `max_lease_failures` distinct reviewers goes to
//! `dead_letter`), and an admin's requeue of dead-lettered cases. Lease times
//! come from the store's clock (the database's, so daemons with skewed clocks
//! agree on who holds what).

use serde::Serialize;

use super::audit::append_audit;
use super::cases::{case_from_row, CASE_COLUMNS, CLAIMABLE};
use super::fhir_outbox::{note_change, note_change_of};
use super::{Backend, Case, CaseStatus, Store, StoreError, StoreResult};

/// What a requeue did to one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    pub id: String,
    #[serde(flatten)]
    pub outcome: RequeueOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "outcome", content = "status", rename_all = "snake_case")]
pub enum RequeueOutcome {
    /// Back to `pending`.
    Requeued,
    /// No such case.
    NotFound,
    /// The case is in this status, not `dead_letter`: unchanged.
    NotDeadLetter(String),
    /// The case is of this model, not the one asked for: unchanged.
    OtherModel(String),
}

/// A claimed case and the lease on it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Claim {
    pub case: Case,
    pub lease: Lease,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Lease {
    pub case_id: String,
    pub reviewer: String,
    /// Unix milliseconds.
    pub expires_at: i64,
}

impl Store {
    /// Claims the next case for `reviewer` (acting with `role`, as the audit log
    /// records it): highest priority first, then oldest, among the claimable
    /// cases. `None` when there is nothing to do.
    pub async fn claim(&self, reviewer: &str, role: &str) -> StoreResult<Option<Claim>> {
        let mut tx = self.begin_write().await?;
        let now = self.now_in(&mut tx).await?;
        if self.backend() == Backend::Postgres {
            // Claims of one reviewer run one at a time, so two at once cannot
            // both pass the cap below (SQLite's BEGIN IMMEDIATE already
            // serialises every write).
            sqlx::query(
                "SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS l",
            )
            .bind(format!("triaged.claim:{reviewer}"))
            .execute(&mut *tx)
            .await?;
        }
        let cap = i64::from(self.options().max_leases_per_reviewer);
        let (live,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM leases WHERE reviewer = $1 AND expires_at > $2")
                .bind(reviewer)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
        if live >= cap {
            return tx
                .finish(Err(StoreError::Conflict(format!(
                    "you hold {live} live leases, the most one reviewer may hold \
                     (store.max_leases_per_reviewer = {cap}): label or release one before claiming another"
                ))))
                .await;
        }
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE OF c SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // PostgreSQL re-checks a row locked with FOR UPDATE against its new version
        // only, not the sub-queries over leases and labels (those use the
        // statement's snapshot, which may predate another claim's commit). So,
        // holding the lock, check again in a fresh statement; on a stale pick, pick
        // again (the next statement sees the other claim).
        let mut picked = None;
        for _ in 0..16 {
            let candidate: Option<(String,)> = sqlx::query_as(&format!(
                "SELECT c.id FROM cases c WHERE {CLAIMABLE} \
                 ORDER BY c.priority DESC, c.created_at ASC, c.id ASC LIMIT 1{lock}"
            ))
            .bind(now)
            .bind(reviewer)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((id,)) = candidate else { break };
            let (still_open,): (i64,) = sqlx::query_as(&format!(
                "SELECT COUNT(*) FROM cases c WHERE {CLAIMABLE} AND c.id = $3"
            ))
            .bind(now)
            .bind(reviewer)
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            if still_open == 1 {
                picked = Some(id);
                break;
            }
        }
        let Some(id) = picked else {
            tx.commit().await?;
            return Ok(None);
        };
        let expires_at = now + self.options().lease.as_millis() as i64;
        // An expired lease of the same reviewer may still be there (the rescue
        // has not run yet): it lapsed all the same, so it is counted, then replaced.
        let stale: Vec<(i64,)> = sqlx::query_as(
            "DELETE FROM leases WHERE case_id = $1 AND reviewer = $2 RETURNING expires_at",
        )
        .bind(&id)
        .bind(reviewer)
        .fetch_all(&mut *tx)
        .await?;
        if stale.iter().any(|(expires_at,)| *expires_at <= now) {
            self.note_lapse(&mut tx, &id, reviewer, now).await?;
        }
        sqlx::query("INSERT INTO leases (case_id, reviewer, expires_at, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(reviewer)
            .bind(expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            now,
            (reviewer, role),
            "case.claim",
            Some(&id),
            &format!("lease until {expires_at}"),
        )
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {CASE_COLUMNS} FROM cases c WHERE c.id = $1"
        ))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        let case = case_from_row(&row)?;
        note_change(&mut tx, self.options(), &id, &case.model, now).await?;
        tx.commit().await?;
        Ok(Some(Claim {
            case,
            lease: Lease {
                case_id: id,
                reviewer: reviewer.to_string(),
                expires_at,
            },
        }))
    }

    /// Extends the reviewer's live lease on a case.
    pub async fn renew(&self, id: &str, reviewer: &str, role: &str) -> StoreResult<Lease> {
        let mut tx = self.begin_write().await?;
        let now = self.now_in(&mut tx).await?;
        let expires_at = now + self.options().lease.as_millis() as i64;
        let n = sqlx::query("UPDATE leases SET expires_at = $1 WHERE case_id = $2 AND reviewer = $3 AND expires_at > $4")
            .bind(expires_at)
            .bind(id)
            .bind(reviewer)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return tx
                .finish(Err(StoreError::Conflict(format!(
                    "you hold no live lease on case '{id}': claim it again"
                ))))
                .await;
        }
        append_audit(
            &mut tx,
            now,
            (reviewer, role),
            "case.renew",
            Some(id),
            &format!("lease until {expires_at}"),
        )
        .await?;
        tx.commit().await?;
        Ok(Lease {
            case_id: id.to_string(),
            reviewer: reviewer.to_string(),
            expires_at,
        })
    }

    /// Gives a claimed case back to the queue.
    pub async fn release(&self, id: &str, reviewer: &str, role: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let now = self.now_in(&mut tx).await?;
        let n = sqlx::query("DELETE FROM leases WHERE case_id = $1 AND reviewer = $2")
            .bind(id)
            .bind(reviewer)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return tx
                .finish(Err(StoreError::Conflict(format!(
                    "you hold no lease on case '{id}'"
                ))))
                .await;
        }
        append_audit(&mut tx, now, (reviewer, role), "case.release", Some(id), "").await?;
        note_change_of(&mut tx, self.options(), id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Frees expired leases; a case whose leases expired `max_lease_failures`
    /// times goes to `dead_letter`. Returns how many leases expired. The leases
    /// are deleted with `RETURNING`, so when several daemons rescue at once each
    /// expiry is counted by exactly one of them.
    pub async fn rescue_expired(&self) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let now = self.now_in(&mut tx).await?;
        if self.backend() == Backend::Postgres {
            // Case rows first, in id order, as a claim takes them (case, then
            // lease): the reverse order could deadlock with a reviewer who
            // re-claims a case while it is rescued. A second rescuer waits here
            // and then finds the leases gone, so lapses are counted once and in
            // order.
            sqlx::query(
                "SELECT c.id FROM cases c WHERE c.id IN \
                 (SELECT l.case_id FROM leases l WHERE l.expires_at <= $1) ORDER BY c.id FOR UPDATE",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        }
        let expired: Vec<(String, String)> =
            sqlx::query_as("DELETE FROM leases WHERE expires_at <= $1 RETURNING case_id, reviewer")
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
        for (case_id, reviewer) in &expired {
            self.note_lapse(&mut tx, case_id, reviewer, now).await?;
            // No transaction of its own marks a lease's lapse: this one moves the
            // case's Task back to `ready` (or to `failed` when dead-lettered).
            note_change_of(&mut tx, self.options(), case_id, now).await?;
        }
        tx.commit().await?;
        Ok(expired.len() as u64)
    }

    /// Counts `reviewer`'s lapsed lease on `case_id`, inside the caller's
    /// transaction: every lapse adds to `lease_failures`, but the case goes to
    /// `dead_letter` only once the leases of `max_lease_failures` distinct
    /// reviewers lapsed.
    async fn note_lapse(
        &self,
        conn: &mut sqlx::AnyConnection,
        case_id: &str,
        reviewer: &str,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO lease_lapses (case_id, reviewer, lapses, last_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (case_id, reviewer) DO UPDATE SET lapses = lease_lapses.lapses + 1, last_at = $3",
        )
        .bind(case_id)
        .bind(reviewer)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE cases SET lease_failures = lease_failures + 1, \
             status = CASE WHEN status = 'pending' \
               AND (SELECT COUNT(*) FROM lease_lapses x WHERE x.case_id = $2) >= $1 \
               THEN 'dead_letter' ELSE status END \
             WHERE id = $2",
        )
        .bind(i64::from(self.options().max_lease_failures))
        .bind(case_id)
        .execute(&mut *conn)
        .await?;
        append_audit(
            conn,
            now,
            ("system", "system"),
            "lease.expired",
            Some(case_id),
            reviewer,
        )
        .await
    }

    /// Brings dead-lettered cases back to `pending` (an admin looked at them),
    /// with their lapse counts cleared, each audited with `reason`; with
    /// `model`, only cases of that model. Returns what happened to each id, in
    /// order; one transaction for all.
    pub async fn requeue(
        &self,
        ids: &[String],
        model: Option<&str>,
        (actor, role): (&str, &str),
        reason: &str,
    ) -> StoreResult<Vec<Requeued>> {
        let mut tx = self.begin_write().await?;
        let now = self.now_in(&mut tx).await?;
        let mut outcomes = Vec::with_capacity(ids.len());
        for id in ids {
            // No stored id holds a control character (and PostgreSQL cannot
            // even be asked about a NUL).
            if id.chars().any(char::is_control) {
                outcomes.push(Requeued {
                    id: id.clone(),
                    outcome: RequeueOutcome::NotFound,
                });
                continue;
            }
            let found: Option<(String, String)> =
                sqlx::query_as("SELECT status, model FROM cases WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let outcome = match found {
                None => RequeueOutcome::NotFound,
                Some((_, m)) if model.is_some_and(|want| want != m) => {
                    RequeueOutcome::OtherModel(m)
                }
                Some((s, _)) if s != CaseStatus::DeadLetter.as_str() => {
                    RequeueOutcome::NotDeadLetter(s)
                }
                Some(_) => {
                    sqlx::query(
                        "UPDATE cases SET status = 'pending', lease_failures = 0 WHERE id = $1",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM lease_lapses WHERE case_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    append_audit(
                        &mut tx,
                        now,
                        (actor, role),
                        "case.requeue",
                        Some(id),
                        reason,
                    )
                    .await?;
                    note_change_of(&mut tx, self.options(), id, now).await?;
                    RequeueOutcome::Requeued
                }
            };
            outcomes.push(Requeued {
                id: id.clone(),
                outcome,
            });
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Ids of dead-lettered cases (of `model`, when given), oldest first, at most `limit`.
    pub async fn dead_letter_ids(
        &self,
        model: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM cases WHERE status = 'dead_letter' AND ($1 IS NULL OR model = $1) \
             ORDER BY created_at, id LIMIT $2",
        )
        .bind(model)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}
