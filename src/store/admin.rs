//! The administrator's side of the queue: listing and stats, the export of
//! resolved cases as a training dataset, model-vs-reviewer agreement (how a
//! clinic judges a shadow deployment), the append-only audit log, and the webhook
//! outbox.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::queue::{case_columns, case_from_row, Case};
use super::{now_ms, Backend, Store, StoreError, StoreResult};
use crate::data::{Dataset, Inputs, Split};
use crate::stats::clopper_pearson;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    /// Cases by status (`pending`, `resolved`, `dead_letter`).
    pub by_status: BTreeMap<String, i64>,
    /// Age of the oldest pending case, in seconds.
    pub oldest_pending_seconds: Option<f64>,
    /// Live leases.
    pub leased: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Agreement {
    pub model: String,
    /// Resolved cases compared.
    pub n: usize,
    /// How often the model's class equals the reviewers' consensus.
    pub model_accuracy: Option<f64>,
    pub model_accuracy_lower: f64,
    pub model_accuracy_upper: f64,
    /// Mean pairwise disagreement among reviewers (cases with ≥ 2 labels).
    pub mean_reviewer_disagreement: Option<f64>,
    /// Shadow cases the policy would have automated, and the model's error on them.
    pub policy_would_automate: usize,
    pub policy_automated_error: Option<f64>,
    pub policy_automated_error_upper: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub actor: String,
    pub role: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    pub detail: String,
}

/// A webhook event due for delivery.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: i64,
    pub event: String,
    pub target: String,
    pub payload: String,
    pub attempts: i64,
}

/// Appends one audit row inside the caller's transaction.
pub(crate) async fn append_audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    actor: &str,
    role: &str,
    action: &str,
    case_id: Option<&str>,
    detail: &str,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO audit_log (at, actor, role, action, case_id, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(now_ms())
        .bind(actor)
        .bind(role)
        .bind(action)
        .bind(case_id)
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Queues a webhook event inside the caller's transaction.
pub(crate) async fn enqueue_event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    event: &str,
    target: &str,
    payload: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO outbox (event, target, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $4)")
        .bind(event)
        .bind(target)
        .bind(payload)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Records who did what (reads and exports; writes log inside their own transaction).
    pub async fn audit(
        &self,
        actor: &str,
        role: &str,
        action: &str,
        case_id: Option<&str>,
        detail: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        append_audit(&mut tx, actor, role, action, case_id, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn audit_entries(
        &self,
        case_id: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, role, action, case_id, detail FROM audit_log \
             WHERE ($1 IS NULL OR case_id = $1) ORDER BY id LIMIT $2",
        )
        .bind(case_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    role: r.try_get("role")?,
                    action: r.try_get("action")?,
                    case_id: r.try_get("case_id")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Cases, newest first, optionally by status and model.
    pub async fn list_cases(
        &self,
        status: Option<&str>,
        model: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<Case>> {
        if let Some(s) = status {
            if !["pending", "resolved", "dead_letter"].contains(&s) {
                return Err(StoreError::Invalid(format!(
                    "status '{s}' is not pending, resolved or dead_letter"
                )));
            }
        }
        let rows = sqlx::query(&format!(
            "SELECT {} FROM cases c WHERE ($1 IS NULL OR c.status = $1) AND ($2 IS NULL OR c.model = $2) \
             ORDER BY c.created_at DESC, c.id LIMIT $3 OFFSET $4",
            case_columns()
        ))
        .bind(status)
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
        let mut by_status: BTreeMap<String, i64> = ["pending", "resolved", "dead_letter"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        by_status.extend(rows);
        let (oldest,): (Option<i64>,) =
            sqlx::query_as("SELECT MIN(created_at) FROM cases WHERE status = 'pending'")
                .fetch_one(self.pool())
                .await?;
        let (leased,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM leases WHERE expires_at > $1")
            .bind(now_ms())
            .fetch_one(self.pool())
            .await?;
        Ok(QueueStats {
            by_status,
            oldest_pending_seconds: oldest.map(|t| (now_ms() - t) as f64 / 1000.0),
            leased,
        })
    }

    /// Resolved cases of `model` as a dataset (DESIGN §3) that `triaged train`
    /// reads: inputs as served, reviewers' labels as counts, a split by a hash of
    /// the case id (60/20/20, stable across exports). `image` is the served
    /// model's image size (H, W, C), if it takes images: its cases stored pixels,
    /// and export as an image data set.
    pub async fn export(
        &self,
        model: &str,
        image: Option<(usize, usize, usize)>,
    ) -> StoreResult<Dataset> {
        let cases = self.resolved_cases(model).await?;
        let first = cases
            .first()
            .ok_or_else(|| StoreError::NotFound(format!("resolved cases of model '{model}'")))?;
        let names = first.feature_names.clone();
        let classes = first.class_names.clone();
        let k = classes.len();
        let mut values = Vec::new();
        let mut counts = vec![0u32; cases.len() * k];
        let mut split = Vec::with_capacity(cases.len());
        let labels: Vec<(String, i64)> = sqlx::query_as(
            "SELECT l.case_id, l.label FROM labels l JOIN cases c ON c.id = l.case_id \
             WHERE c.model = $1 AND c.status = 'resolved'",
        )
        .bind(model)
        .fetch_all(self.pool())
        .await?;
        let index: BTreeMap<&str, usize> = cases
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        for (case_id, label) in &labels {
            if let (Some(&i), Ok(l)) = (index.get(case_id.as_str()), usize::try_from(*label)) {
                if l < k {
                    counts[i * k + l] += 1;
                }
            }
        }
        for c in &cases {
            if c.feature_names != names || c.class_names != classes {
                return Err(StoreError::Invalid(format!(
                    "case '{}' has another input schema or class list than the first; export by model version",
                    c.id
                )));
            }
            values.extend_from_slice(&c.input);
            split.push(split_of(&c.id));
        }
        let inputs = match image {
            Some((height, width, channels)) if names.is_empty() => {
                let len = height * width * channels;
                if let Some(c) = cases.iter().find(|c| c.input.len() != len) {
                    return Err(StoreError::Invalid(format!(
                        "case '{}' holds {} values, not a {height}x{width}x{channels} image; export by model version",
                        c.id,
                        c.input.len()
                    )));
                }
                Inputs::Images {
                    height,
                    width,
                    channels,
                    // Served pixels were decoded from u8, so this is exact.
                    pixels: values.iter().map(|v| v.clamp(0.0, 255.0) as u8).collect(),
                }
            }
            _ => Inputs::Features {
                dim: names.len(),
                names,
                values,
            },
        };
        Dataset::new(
            inputs,
            classes,
            counts,
            None,
            Some(split),
            format!(
                "triaged review queue export, model {model}, {} resolved cases",
                cases.len()
            ),
        )
        .map_err(|e| StoreError::Invalid(format!("{e:#}")))
    }

    async fn resolved_cases(&self, model: &str) -> StoreResult<Vec<Case>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM cases c WHERE c.model = $1 AND c.status = 'resolved' ORDER BY c.created_at, c.id",
            case_columns()
        ))
        .bind(model)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(case_from_row).collect()
    }

    /// How the model compares with the reviewers on resolved cases — in shadow
    /// mode, the evidence for going live.
    pub async fn agreement(&self, model: &str) -> StoreResult<Agreement> {
        let cases = self.resolved_cases(model).await?;
        let n = cases.len();
        let hits = cases
            .iter()
            .filter(|c| c.consensus == Some(c.model_class))
            .count();
        let (lo, hi) = clopper_pearson(hits as u64, n as u64, 0.05);
        let d: Vec<f64> = cases.iter().filter_map(|c| c.disagreement).collect();
        let would: Vec<&Case> = cases
            .iter()
            .filter(|c| c.policy_route.as_deref() == Some("automate"))
            .collect();
        let wrong = would
            .iter()
            .filter(|c| c.consensus != Some(c.model_class))
            .count();
        let (_, wrong_hi) = clopper_pearson(wrong as u64, would.len() as u64, 0.05);
        Ok(Agreement {
            model: model.to_string(),
            n,
            model_accuracy: (n > 0).then(|| hits as f64 / n as f64),
            model_accuracy_lower: lo,
            model_accuracy_upper: hi,
            mean_reviewer_disagreement: (!d.is_empty())
                .then(|| d.iter().sum::<f64>() / d.len() as f64),
            policy_would_automate: would.len(),
            policy_automated_error: (!would.is_empty()).then(|| wrong as f64 / would.len() as f64),
            policy_automated_error_upper: wrong_hi,
        })
    }

    /// Claims up to `limit` due webhook events for `hold_ms` (so several daemons do
    /// not deliver the same event at once).
    pub async fn due_events(&self, limit: i64, hold_ms: i64) -> StoreResult<Vec<OutboxEvent>> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let rows = sqlx::query(&format!(
            "SELECT id, event, target, payload, attempts FROM outbox \
             WHERE delivered_at IS NULL AND next_attempt_at <= $1 AND locked_until <= $1 ORDER BY id LIMIT $2{lock}"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            sqlx::query("UPDATE outbox SET locked_until = $1 WHERE id = $2")
                .bind(now + hold_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            events.push(OutboxEvent {
                id,
                event: r.try_get("event")?,
                target: r.try_get("target")?,
                payload: r.try_get("payload")?,
                attempts: r.try_get("attempts")?,
            });
        }
        tx.commit().await?;
        Ok(events)
    }

    pub async fn event_delivered(&self, id: i64) -> StoreResult<()> {
        sqlx::query("UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = NULL WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn event_failed(&self, id: i64, error: &str, retry_in_ms: i64) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, locked_until = 0 WHERE id = $3")
            .bind(error)
            .bind(now + retry_in_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Undelivered webhook events.
    pub async fn pending_events(&self) -> StoreResult<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }
}

/// 60/20/20 by the first bytes of the case id's hash.
fn split_of(id: &str) -> Split {
    use sha2::Digest;
    let h = sha2::Sha256::digest(id.as_bytes());
    match h[0] % 10 {
        0..=5 => Split::Train,
        6 | 7 => Split::Calibration,
        _ => Split::Test,
    }
}
