//! The reviewers behind the labels: how many labels each gave and how often each
//! agreed with the consensus of the cases that resolved (the admin dashboard),
//! and every reviewer's label on the cases waiting for an adjudicator (the
//! adjudicator's worklist).

use serde::Serialize;

use super::cases::{case_from_row, CASE_COLUMNS};
use super::{Case, CaseStatus, Store, StoreResult};

/// One reviewer's record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReviewerStats {
    pub reviewer: String,
    /// Labels given, on cases in any status.
    pub labels: i64,
    /// Of those, labels on resolved cases (the ones with a consensus to compare with).
    pub resolved: i64,
    /// Of the labels on resolved cases, how many equal the consensus.
    pub agreed: i64,
    /// `agreed / resolved`; absent before any of the reviewer's cases resolved.
    /// Each label counts towards the consensus it is compared with, so with two
    /// or three reviewers per case this is an upper bound on independent agreement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
}

/// One reviewer's label on a case.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReviewerLabel {
    pub reviewer: String,
    pub label: i64,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A case whose reviewers held no strict majority, with their labels.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TiedCase {
    pub case: Case,
    /// Oldest first.
    pub labels: Vec<ReviewerLabel>,
}

impl Store {
    /// Every reviewer who labeled, by name.
    pub async fn reviewer_stats(&self) -> StoreResult<Vec<ReviewerStats>> {
        // CASTs: PostgreSQL's SUM of integers is numeric or bigint depending on the
        // column; both backends read back an i64 this way.
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT l.reviewer, CAST(COUNT(*) AS BIGINT), \
               CAST(SUM(CASE WHEN c.status = 'resolved' AND c.consensus IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT), \
               CAST(SUM(CASE WHEN c.status = 'resolved' AND l.label = c.consensus THEN 1 ELSE 0 END) AS BIGINT) \
             FROM labels l JOIN cases c ON c.id = l.case_id \
             GROUP BY l.reviewer ORDER BY l.reviewer",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(reviewer, labels, resolved, agreed)| ReviewerStats {
                reviewer,
                labels,
                resolved,
                agreed,
                agreement: (resolved > 0).then(|| agreed as f64 / resolved as f64),
            })
            .collect())
    }

    /// Cases in `adjudication`, oldest first, each with every reviewer's label.
    pub async fn tied_cases(&self, limit: i64) -> StoreResult<Vec<TiedCase>> {
        let rows = sqlx::query(&format!(
            "SELECT {CASE_COLUMNS} FROM cases c WHERE c.status = $1 \
             ORDER BY c.created_at, c.id LIMIT $2"
        ))
        .bind(CaseStatus::Adjudication.as_str())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut tied = Vec::with_capacity(rows.len());
        for row in &rows {
            let case = case_from_row(row)?;
            let labels: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT reviewer, label, created_at FROM labels WHERE case_id = $1 \
                 ORDER BY created_at, reviewer",
            )
            .bind(&case.id)
            .fetch_all(self.pool())
            .await?;
            tied.push(TiedCase {
                case,
                labels: labels
                    .into_iter()
                    .map(|(reviewer, label, created_at)| ReviewerLabel {
                        reviewer,
                        label,
                        created_at,
                    })
                    .collect(),
            });
        }
        Ok(tied)
    }
}
