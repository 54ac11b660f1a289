//! Labels: a reviewer's label on a claimed case (idempotent per reviewer),
//! consensus and the reviewers' disagreement `D` when the k-th label lands, and
//! one more reviewer when the first label disagrees with the model.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::audit::append_audit;
use super::fhir_outbox::note_change;
use super::outbox::enqueue_event as queue_event;
use super::Subscription;
use super::{Backend, CaseStatus, Store, StoreError, StoreResult};
use crate::data::targets::pairwise_disagreement;

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
    pub status: CaseStatus,
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

impl Store {
    /// Whether `reviewer` has labeled case `id`.
    pub async fn has_labeled(&self, id: &str, reviewer: &str) -> StoreResult<bool> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM labels WHERE case_id = $1 AND reviewer = $2")
                .bind(id)
                .bind(reviewer)
                .fetch_one(self.pool())
                .await?;
        Ok(n > 0)
    }

    /// Records `reviewer`'s label. Idempotent: the same label again changes
    /// nothing; a different one is a conflict. Needs a live lease (or a previous
    /// identical label). Resolves the case when its k-th label lands.
    pub async fn label(
        &self,
        id: &str,
        (reviewer, role): (&str, &str),
        label: i64,
    ) -> StoreResult<LabelOutcome> {
        let mut tx = self.begin_write().await?;
        let result = self.label_in(&mut tx, id, (reviewer, role), label).await;
        tx.finish(result).await
    }

    async fn label_in(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        (reviewer, role): (&str, &str),
        label: i64,
    ) -> StoreResult<LabelOutcome> {
        let now = self.now_in(conn).await?;
        let row = self.locked_case(conn, id).await?;
        let model: String = row.try_get("model")?;
        let model_class: i64 = row.try_get("model_class")?;
        let classes: Vec<String> =
            serde_json::from_str(&row.try_get::<String, _>("class_names")?).unwrap_or_default();
        let status: CaseStatus = row.try_get::<String, _>("status")?.parse()?;
        let mut needed: i64 = row.try_get("reviewers_needed")?;
        let escalate: bool = row.try_get::<i64, _>("escalate_on_disagreement")? != 0;
        let already_escalated: bool = row.try_get::<i64, _>("escalated")? != 0;
        check_label(label, &model, &classes)?;
        let previous: Option<(i64,)> =
            sqlx::query_as("SELECT label FROM labels WHERE case_id = $1 AND reviewer = $2")
                .bind(id)
                .bind(reviewer)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some((prev,)) = previous {
            if prev != label {
                return Err(StoreError::Conflict(format!(
                    "you already labeled case '{id}' as {prev}; a label cannot be changed"
                )));
            }
            let labels = labels_of(conn, id).await?;
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
        if status != CaseStatus::Pending {
            return Err(StoreError::Conflict(format!(
                "case '{id}' is {}; it takes no more labels",
                status.as_str()
            )));
        }
        let leased = sqlx::query(
            "DELETE FROM leases WHERE case_id = $1 AND reviewer = $2 AND expires_at > $3",
        )
        .bind(id)
        .bind(reviewer)
        .bind(now)
        .execute(&mut *conn)
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
        .execute(&mut *conn)
        .await?;
        let labels = labels_of(conn, id).await?;
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
                .execute(&mut *conn)
                .await?;
        }
        append_audit(
            conn,
            now,
            (reviewer, role),
            "case.label",
            Some(id),
            &format!("label {label}"),
        )
        .await?;
        // The Task shows every label (and, below, a resolution or adjudication).
        note_change(conn, self.options(), id, &model, now).await?;
        let mut outcome = LabelOutcome {
            case_id: id.to_string(),
            label,
            repeated: false,
            labels: labels.len() as i64,
            reviewers_needed: needed,
            escalated,
            status: CaseStatus::Pending,
            consensus: None,
            disagreement: None,
            resolution: None,
        };
        if labels.len() as i64 >= needed {
            let mut counts = vec![0u32; classes.len()];
            for &l in &labels {
                counts[l as usize] += 1;
            }
            let d = pairwise_disagreement(&counts);
            let max_labels: i64 = row.try_get("max_labels")?;
            match strict_majority(&counts) {
                Some(consensus) => {
                    let resolution = resolve(
                        conn,
                        &self.options().webhook_targets,
                        Resolved {
                            id,
                            model: &model,
                            model_class,
                            consensus: consensus as i64,
                            disagreement: d,
                            labels,
                            audit: row.try_get::<i64, _>("audit")? != 0,
                            created_at: row.try_get("created_at")?,
                            adjudicator: None,
                        },
                        now,
                    )
                    .await?;
                    outcome.status = CaseStatus::Resolved;
                    outcome.consensus = Some(consensus as i64);
                    outcome.disagreement = d;
                    outcome.resolution = Some(resolution);
                }
                // No strict majority: never "the lowest class". One more label
                // while the policy's cap allows, then an adjudicator decides.
                None if (labels.len() as i64) < max_labels => {
                    needed = labels.len() as i64 + 1;
                    sqlx::query("UPDATE cases SET reviewers_needed = $1 WHERE id = $2")
                        .bind(needed)
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    outcome.reviewers_needed = needed;
                }
                None => {
                    sqlx::query("UPDATE cases SET status = 'adjudication' WHERE id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    append_audit(
                        conn,
                        now,
                        ("system", "system"),
                        "case.needs_adjudication",
                        Some(id),
                        &format!(
                            "no strict majority in {} labels (cap {max_labels})",
                            labels.len()
                        ),
                    )
                    .await?;
                    outcome.status = CaseStatus::Adjudication;
                    outcome.disagreement = d;
                }
            }
        }
        Ok(outcome)
    }
}

/// A label must be one of the case's classes.
fn check_label(label: i64, model: &str, classes: &[String]) -> StoreResult<()> {
    if label < 0 || label as usize >= classes.len() {
        return Err(StoreError::Invalid(format!(
            "label {label} is not a class of model '{model}' (0..{}: {})",
            classes.len(),
            classes.join(", ")
        )));
    }
    Ok(())
}

/// The class more than half of the labels name, if any.
pub fn strict_majority(counts: &[u32]) -> Option<usize> {
    let n: u32 = counts.iter().sum();
    let (best, &top) = counts.iter().enumerate().max_by_key(|(_, c)| **c)?;
    (2 * top > n).then_some(best)
}

/// A case about to be resolved, by vote or by an adjudicator.
struct Resolved<'a> {
    id: &'a str,
    model: &'a str,
    model_class: i64,
    consensus: i64,
    disagreement: Option<f64>,
    labels: Vec<i64>,
    audit: bool,
    created_at: i64,
    adjudicator: Option<&'a str>,
}

/// Marks the case resolved, queues `case.resolved`, and says what the server
/// reports to metrics and to the audit monitor.
async fn resolve(
    conn: &mut AnyConnection,
    targets: &[Subscription],
    r: Resolved<'_>,
    now: i64,
) -> StoreResult<Resolution> {
    // A NULL double does not bind portably (PostgreSQL rejects its format):
    // write the literal instead.
    match r.disagreement {
        Some(d) => {
            sqlx::query(
                "UPDATE cases SET status = 'resolved', consensus = $1, disagreement = $2, resolved_at = $3, \
                 adjudicated_by = $4 WHERE id = $5",
            )
            .bind(r.consensus)
            .bind(d)
            .bind(now)
            .bind(r.adjudicator)
            .bind(r.id)
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query(
                "UPDATE cases SET status = 'resolved', consensus = $1, disagreement = NULL, resolved_at = $2, \
                 adjudicated_by = $3 WHERE id = $4",
            )
            .bind(r.consensus)
            .bind(now)
            .bind(r.adjudicator)
            .bind(r.id)
            .execute(&mut *conn)
            .await?;
        }
    }
    let payload = serde_json::json!({
        "event": "case.resolved",
        "case": {"id": r.id, "model": r.model, "consensus": r.consensus, "disagreement": r.disagreement,
                 "labels": r.labels, "model_class": r.model_class, "adjudicated_by": r.adjudicator},
    })
    .to_string();
    queue_event(conn, targets, "case.resolved", &payload, now).await?;
    Ok(Resolution {
        model: r.model.to_string(),
        audit: r.audit,
        model_correct: r.consensus == r.model_class,
        labels: r.labels,
        latency_ms: now - r.created_at,
    })
}

impl Store {
    /// The case's row, locked for this transaction on PostgreSQL (SQLite's
    /// write transaction holds the database).
    async fn locked_case(
        &self,
        conn: &mut AnyConnection,
        id: &str,
    ) -> StoreResult<sqlx::any::AnyRow> {
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        sqlx::query(&format!(
            "SELECT model, model_class, class_names, status, reviewers_needed, escalate_on_disagreement, escalated, \
             audit, created_at, consensus, disagreement, max_labels FROM cases WHERE id = $1{lock}"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    /// Resolves a case in `adjudication` (no strict majority among the capped
    /// number of labels) with the adjudicator's `label`, recorded as an
    /// adjudication in the case, the audit log and the export.
    pub async fn adjudicate(
        &self,
        id: &str,
        (adjudicator, role): (&str, &str),
        label: i64,
    ) -> StoreResult<LabelOutcome> {
        let mut tx = self.begin_write().await?;
        let result = self
            .adjudicate_in(&mut tx, id, (adjudicator, role), label)
            .await;
        tx.finish(result).await
    }

    async fn adjudicate_in(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        (adjudicator, role): (&str, &str),
        label: i64,
    ) -> StoreResult<LabelOutcome> {
        let now = self.now_in(conn).await?;
        let row = self.locked_case(conn, id).await?;
        let model: String = row.try_get("model")?;
        let classes: Vec<String> =
            serde_json::from_str(&row.try_get::<String, _>("class_names")?).unwrap_or_default();
        let status: CaseStatus = row.try_get::<String, _>("status")?.parse()?;
        if status != CaseStatus::Adjudication {
            return Err(StoreError::Conflict(format!(
                "case '{id}' is {}; only cases in adjudication are adjudicated",
                status.as_str()
            )));
        }
        check_label(label, &model, &classes)?;
        let labels = labels_of(conn, id).await?;
        let disagreement: Option<f64> = row.try_get("disagreement")?;
        append_audit(
            conn,
            now,
            (adjudicator, role),
            "case.adjudicate",
            Some(id),
            &format!("label {label} after {} tied labels", labels.len()),
        )
        .await?;
        note_change(conn, self.options(), id, &model, now).await?;
        let n_labels = labels.len() as i64;
        let resolution = resolve(
            conn,
            &self.options().webhook_targets,
            Resolved {
                id,
                model: &model,
                model_class: row.try_get("model_class")?,
                consensus: label,
                disagreement,
                labels,
                audit: row.try_get::<i64, _>("audit")? != 0,
                created_at: row.try_get("created_at")?,
                adjudicator: Some(adjudicator),
            },
            now,
        )
        .await?;
        Ok(LabelOutcome {
            case_id: id.to_string(),
            label,
            repeated: false,
            labels: n_labels,
            reviewers_needed: row.try_get("reviewers_needed")?,
            escalated: false,
            status: CaseStatus::Resolved,
            consensus: Some(label),
            disagreement,
            resolution: Some(resolution),
        })
    }
}

async fn labels_of(conn: &mut AnyConnection, id: &str) -> StoreResult<Vec<i64>> {
    let rows: Vec<(i64,)> =
        sqlx::query_as("SELECT label FROM labels WHERE case_id = $1 ORDER BY created_at, reviewer")
            .bind(id)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}
