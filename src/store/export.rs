//! Resolved cases as data: the export as a training data set (reviewers' labels
//! become counts, so `triaged train` can learn from them), and how the model
//! compares with the reviewers (how a clinic judges a shadow deployment).

use std::collections::BTreeMap;

use serde::Serialize;

use super::cases::{case_from_row, CASE_COLUMNS};
use super::{Case, Store, StoreError, StoreResult};
use crate::data::{Dataset, Inputs, Split};
use crate::stats::clopper_pearson;

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

impl Store {
    /// Resolved cases of `model` as a dataset (docs/formats.md) that `triaged train`
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
        // An adjudicated case's label is the adjudicator's, not its reviewers'
        // (tied) votes: it becomes the case's reference (-1 = none).
        let adjudicated = cases.iter().filter(|c| c.adjudicated_by.is_some()).count();
        let reference = (adjudicated > 0).then(|| {
            cases
                .iter()
                .map(|c| match (&c.adjudicated_by, c.consensus) {
                    (Some(_), Some(label)) => label,
                    _ => -1,
                })
                .collect()
        });
        Dataset::new(
            inputs,
            classes,
            counts,
            reference,
            Some(split),
            format!(
                "triaged review queue export, model {model}, {} resolved cases ({adjudicated} adjudicated: their reference is the adjudicator's label)",
                cases.len()
            ),
        )
        .map_err(|e| StoreError::Invalid(format!("{e:#}")))
    }

    async fn resolved_cases(&self, model: &str) -> StoreResult<Vec<Case>> {
        let rows = sqlx::query(&format!(
            "SELECT {CASE_COLUMNS} FROM cases c WHERE c.model = $1 AND c.status = 'resolved' ORDER BY c.created_at, c.id"
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
