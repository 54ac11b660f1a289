//! The reviewer's side of the queue: claim the next case under a lease, renew
//! it, label (idempotent per reviewer; consensus and `D` when the k-th label
//! lands; one more reviewer when the first label disagrees with the model), release,
//! and the rescue of expired leases (a case that keeps expiring goes to
//! `dead_letter`).

use serde::Serialize;
use sqlx::Row;

use super::{admin, now_ms, Backend, Store, StoreError, StoreResult};
use crate::data::targets::{majority, pairwise_disagreement};

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
    /// `pending`, `resolved` or `dead_letter`.
    pub status: String,
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

/// What a submitted label did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LabelOutcome {
    pub case_id: String,
    pub label: i64,
    /// True when this reviewer had already given this label (nothing changed).
    pub repeated: bool,
    pub labels: i64,
    pub reviewers_needed: i64,
    /// True when this label made the model's answer need one more reviewer.
    pub escalated: bool,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consensus: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<f64>,
    /// Set when this label resolved the case.
    #[serde(skip)]
    pub resolution: Option<Resolution>,
}

/// A case that just resolved: what the server reports to metrics and audits.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub model: String,
    pub audit: bool,
    pub model_correct: bool,
    pub labels: Vec<i64>,
    pub latency_ms: i64,
}

const CASE_COLUMNS: &str = "c.id, c.model, c.model_version, c.policy_version, c.request_id, c.instance_index, c.input, \
     c.feature_names, c.class_names, c.model_class, c.probabilities, c.uncertainty, c.reason, c.reason_code, c.audit, \
     c.policy_route, c.reviewers_needed, c.escalate_on_disagreement, c.escalated, c.priority, c.status, c.lease_failures, \
     c.consensus, c.disagreement, c.created_at, c.resolved_at, \
     (SELECT COUNT(*) FROM labels l WHERE l.case_id = c.id) AS n_labels";

pub(crate) fn case_columns() -> &'static str {
    CASE_COLUMNS
}

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
        status: row.try_get("status")?,
        lease_failures: row.try_get("lease_failures")?,
        consensus: row.try_get("consensus")?,
        disagreement: row.try_get("disagreement")?,
        labels: row.try_get("n_labels")?,
        created_at: row.try_get("created_at")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

impl Store {
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
        let (held,): (i64,) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM leases WHERE case_id = $1 AND reviewer = $2 AND expires_at > $3) \
                  + (SELECT COUNT(*) FROM labels WHERE case_id = $1 AND reviewer = $2)",
        )
        .bind(id)
        .bind(reviewer)
        .bind(now_ms())
        .fetch_one(self.pool())
        .await?;
        if held == 0 {
            return Err(StoreError::Forbidden(format!(
                "case '{id}' is not claimed by you"
            )));
        }
        Ok(case)
    }

    /// Claims the next case for `reviewer`: highest priority first, then oldest,
    /// among pending cases that still need reviewers and that this reviewer has
    /// neither labeled nor leased. `None` when there is nothing to do.
    pub async fn claim(&self, reviewer: &str) -> StoreResult<Option<Claim>> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE OF c SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // PostgreSQL re-checks a row locked with FOR UPDATE against its new version
        // only, not the sub-queries over leases and labels (those use the
        // statement's snapshot, which may predate another claim's commit). So,
        // holding the lock, count again in a fresh statement; on a stale pick, pick
        // again (the next statement sees the other claim).
        let mut picked = None;
        for _ in 0..16 {
            let candidate: Option<(String,)> = sqlx::query_as(&format!(
                "SELECT c.id FROM cases c \
                 WHERE c.status = 'pending' \
                   AND (SELECT COUNT(*) FROM labels l WHERE l.case_id = c.id) \
                     + (SELECT COUNT(*) FROM leases s WHERE s.case_id = c.id AND s.expires_at > $1) < c.reviewers_needed \
                   AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.case_id = c.id AND l.reviewer = $2) \
                   AND NOT EXISTS (SELECT 1 FROM leases s WHERE s.case_id = c.id AND s.reviewer = $2 AND s.expires_at > $1) \
                 ORDER BY c.priority DESC, c.created_at ASC, c.id ASC LIMIT 1{lock}"
            ))
            .bind(now)
            .bind(reviewer)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((id,)) = candidate else { break };
            let (still_open,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM cases c WHERE c.id = $1 AND c.status = 'pending' \
                   AND (SELECT COUNT(*) FROM labels l WHERE l.case_id = c.id) \
                     + (SELECT COUNT(*) FROM leases s WHERE s.case_id = c.id AND s.expires_at > $2) < c.reviewers_needed \
                   AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.case_id = c.id AND l.reviewer = $3) \
                   AND NOT EXISTS (SELECT 1 FROM leases s WHERE s.case_id = c.id AND s.reviewer = $3 AND s.expires_at > $2)",
            )
            .bind(&id)
            .bind(now)
            .bind(reviewer)
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
        admin::append_audit(
            &mut tx,
            reviewer,
            "reviewer",
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
    pub async fn renew(&self, id: &str, reviewer: &str) -> StoreResult<Lease> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
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
            return finish(
                tx,
                Err(StoreError::Conflict(format!(
                    "you hold no live lease on case '{id}': claim it again"
                ))),
            )
            .await;
        }
        admin::append_audit(
            &mut tx,
            reviewer,
            "reviewer",
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
    pub async fn release(&self, id: &str, reviewer: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM leases WHERE case_id = $1 AND reviewer = $2")
            .bind(id)
            .bind(reviewer)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return finish(
                tx,
                Err(StoreError::Conflict(format!(
                    "you hold no lease on case '{id}'"
                ))),
            )
            .await;
        }
        admin::append_audit(&mut tx, reviewer, "reviewer", "case.release", Some(id), "").await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records `reviewer`'s label. Idempotent: the same label again changes
    /// nothing; a different one is a conflict. Needs a live lease (or a previous
    /// identical label). Resolves the case when its k-th label lands.
    pub async fn label(&self, id: &str, reviewer: &str, label: i64) -> StoreResult<LabelOutcome> {
        let mut tx = self.begin_write().await?;
        let result = self.label_in(&mut tx, id, reviewer, label).await;
        finish(tx, result).await
    }

    async fn label_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: &str,
        reviewer: &str,
        label: i64,
    ) -> StoreResult<LabelOutcome> {
        let now = now_ms();
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT model, model_class, class_names, status, reviewers_needed, escalate_on_disagreement, escalated, \
             audit, created_at, consensus, disagreement FROM cases WHERE id = $1{lock}"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let model: String = row.try_get("model")?;
        let model_class: i64 = row.try_get("model_class")?;
        let classes: Vec<String> =
            serde_json::from_str(&row.try_get::<String, _>("class_names")?).unwrap_or_default();
        let status: String = row.try_get("status")?;
        let mut needed: i64 = row.try_get("reviewers_needed")?;
        let escalate: bool = row.try_get::<i64, _>("escalate_on_disagreement")? != 0;
        let already_escalated: bool = row.try_get::<i64, _>("escalated")? != 0;
        if label < 0 || label as usize >= classes.len() {
            return Err(StoreError::Invalid(format!(
                "label {label} is not a class of model '{model}' (0..{}: {})",
                classes.len(),
                classes.join(", ")
            )));
        }
        let previous: Option<(i64,)> =
            sqlx::query_as("SELECT label FROM labels WHERE case_id = $1 AND reviewer = $2")
                .bind(id)
                .bind(reviewer)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some((prev,)) = previous {
            if prev != label {
                return Err(StoreError::Conflict(format!(
                    "you already labeled case '{id}' as {prev}; a label cannot be changed"
                )));
            }
            let labels = labels_of(tx, id).await?;
            return Ok(LabelOutcome {
                case_id: id.to_string(),
                label,
                repeated: true,
                labels: labels.len() as i64,
                reviewers_needed: needed,
                escalated: false,
                status,
                consensus: row.try_get("consensus")?,
                disagreement: row.try_get("disagreement")?,
                resolution: None,
            });
        }
        if status != "pending" {
            return Err(StoreError::Conflict(format!(
                "case '{id}' is {status}; it takes no more labels"
            )));
        }
        let leased = sqlx::query(
            "DELETE FROM leases WHERE case_id = $1 AND reviewer = $2 AND expires_at > $3",
        )
        .bind(id)
        .bind(reviewer)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if leased == 0 {
            return Err(StoreError::Forbidden(format!(
                "case '{id}' is not claimed by you (or your lease expired): claim it first"
            )));
        }
        sqlx::query(
            "INSERT INTO labels (case_id, reviewer, label, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(reviewer)
        .bind(label)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        let labels = labels_of(tx, id).await?;
        let mut escalated = false;
        // "A second opinion when the first disagrees with the model": only a case
        // planned for one reviewer needs it; with k ≥ 2 a second is coming anyway.
        if escalate
            && !already_escalated
            && needed == 1
            && labels.len() == 1
            && label != model_class
        {
            needed += 1;
            escalated = true;
            sqlx::query("UPDATE cases SET reviewers_needed = $1, escalated = 1 WHERE id = $2")
                .bind(needed)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        admin::append_audit(
            tx,
            reviewer,
            "reviewer",
            "case.label",
            Some(id),
            &format!("label {label}"),
        )
        .await?;
        let mut outcome = LabelOutcome {
            case_id: id.to_string(),
            label,
            repeated: false,
            labels: labels.len() as i64,
            reviewers_needed: needed,
            escalated,
            status: "pending".into(),
            consensus: None,
            disagreement: None,
            resolution: None,
        };
        if labels.len() as i64 >= needed {
            let mut counts = vec![0u32; classes.len()];
            for &l in &labels {
                counts[l as usize] += 1;
            }
            let consensus = majority(&counts).map(|c| c as i64);
            let d = pairwise_disagreement(&counts);
            // A NULL double does not bind portably (PostgreSQL rejects its format):
            // write the literal instead.
            match d {
                Some(d) => {
                    sqlx::query("UPDATE cases SET status = 'resolved', consensus = $1, disagreement = $2, resolved_at = $3 WHERE id = $4")
                        .bind(consensus)
                        .bind(d)
                        .bind(now)
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                }
                None => {
                    sqlx::query("UPDATE cases SET status = 'resolved', consensus = $1, disagreement = NULL, resolved_at = $2 WHERE id = $3")
                        .bind(consensus)
                        .bind(now)
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                }
            }
            let payload = serde_json::json!({
                "event": "case.resolved",
                "case": {"id": id, "model": model, "consensus": consensus, "disagreement": d, "labels": labels,
                         "model_class": model_class},
            })
            .to_string();
            for target in &self.options().webhook_targets {
                admin::enqueue_event(tx, "case.resolved", target, &payload, now).await?;
            }
            let created_at: i64 = row.try_get("created_at")?;
            outcome.status = "resolved".into();
            outcome.consensus = consensus;
            outcome.disagreement = d;
            outcome.resolution = Some(Resolution {
                model,
                audit: row.try_get::<i64, _>("audit")? != 0,
                model_correct: consensus == Some(model_class),
                labels,
                latency_ms: now - created_at,
            });
        }
        Ok(outcome)
    }

    /// Frees expired leases; a case whose leases expired `max_lease_failures`
    /// times goes to `dead_letter`. Returns how many leases expired.
    pub async fn rescue_expired(&self) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let expired: Vec<(String, String)> =
            sqlx::query_as("SELECT case_id, reviewer FROM leases WHERE expires_at <= $1")
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
        if expired.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        for (case_id, reviewer) in &expired {
            sqlx::query("DELETE FROM leases WHERE case_id = $1 AND reviewer = $2")
                .bind(case_id)
                .bind(reviewer)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE cases SET lease_failures = lease_failures + 1, \
                 status = CASE WHEN status = 'pending' AND lease_failures + 1 >= $1 THEN 'dead_letter' ELSE status END \
                 WHERE id = $2",
            )
            .bind(i64::from(self.options().max_lease_failures))
            .bind(case_id)
            .execute(&mut *tx)
            .await?;
            admin::append_audit(
                &mut tx,
                "system",
                "system",
                "lease.expired",
                Some(case_id),
                reviewer,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(expired.len() as u64)
    }
}

async fn labels_of(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
) -> StoreResult<Vec<i64>> {
    let rows: Vec<(i64,)> =
        sqlx::query_as("SELECT label FROM labels WHERE case_id = $1 ORDER BY created_at, reviewer")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Commits on success; on failure rolls back now, so no lock outlives the
/// call (a dropped transaction would roll back only when its connection is
/// next used).
pub(crate) async fn finish<T>(
    tx: sqlx::Transaction<'static, sqlx::Any>,
    result: StoreResult<T>,
) -> StoreResult<T> {
    match result {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}
