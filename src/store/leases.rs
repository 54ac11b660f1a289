//! Reviewer leases: claim the next case under a lease, renew it, give it back,
//! and the rescue of expired leases (a case whose leases keep expiring goes to
//! `dead_letter`). Lease times come from the store's clock (the database's, so
//! daemons with skewed clocks agree on who holds what).

use serde::Serialize;

use super::audit::append_audit;
use super::cases::{case_from_row, CASE_COLUMNS, CLAIMABLE};
use super::fhir_outbox::{note_change, note_change_of};
use super::{Backend, Case, Store, StoreError, StoreResult};

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
        // An expired lease of the same reviewer may still be there: replace it.
        sqlx::query("DELETE FROM leases WHERE case_id = $1 AND reviewer = $2")
            .bind(&id)
            .bind(reviewer)
            .execute(&mut *tx)
            .await?;
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
        let expired: Vec<(String, String)> =
            sqlx::query_as("DELETE FROM leases WHERE expires_at <= $1 RETURNING case_id, reviewer")
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
        for (case_id, reviewer) in &expired {
            sqlx::query(
                "UPDATE cases SET lease_failures = lease_failures + 1, \
                 status = CASE WHEN status = 'pending' AND lease_failures + 1 >= $1 THEN 'dead_letter' ELSE status END \
                 WHERE id = $2",
            )
            .bind(i64::from(self.options().max_lease_failures))
            .bind(case_id)
            .execute(&mut *tx)
            .await?;
            append_audit(
                &mut tx,
                now,
                ("system", "system"),
                "lease.expired",
                Some(case_id),
                reviewer,
            )
            .await?;
            // No transaction of its own marks a lease's lapse: this one moves the
            // case's Task back to `ready` (or to `failed` when dead-lettered).
            note_change_of(&mut tx, self.options(), case_id, now).await?;
        }
        tx.commit().await?;
        Ok(expired.len() as u64)
    }
}
