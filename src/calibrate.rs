//! `triaged calibrate`: fits a policy on a bundle's calibration split and writes
//! `policy.json` into the bundle, versioned with the model. An offline command
//! beside `train` and `eval` (it runs the model over a data set and reuses
//! `eval`'s estimates); the serving side, `policy`, only reads what it writes.

use std::path::Path;

use serde::Serialize;

use crate::data::targets::{model_error_target, queue_panel, MAX_PANEL};
use crate::data::{Dataset, Split};
use crate::eval::{self, EvalOptions};
use crate::model::Predictor;
use crate::policy::budget::upper_quantile;
use crate::policy::risk::{certify_parts, Scored};
use crate::policy::spec::{
    AuditSpec, CalibrationInfo, PolicySpec, ReviewerSpec, RuleSpec, FORMAT_VERSION,
};
use crate::policy::system::{self, SystemCase};
use crate::policy::ThresholdScore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Review when a score is ≥ a threshold.
    Threshold,
    /// Review a fixed fraction of cases, the highest by `â − ĥ`.
    Budget,
    /// Review when reviewers cost less than the model's expected errors.
    Cost,
    /// Automate the largest set whose error is ≤ α with probability ≥ 1 − δ.
    Risk,
    /// Reviewers per case (0 = automate) with the total error of the whole
    /// human–AI system ≤ α with probability ≥ 1 − δ.
    System,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateConfig {
    #[arg(long, value_enum, default_value_t = PolicyKind::Risk)]
    pub policy: PolicyKind,
    /// risk: largest acceptable error rate of automated cases.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// risk: allowed probability that the guarantee fails.
    #[arg(long, default_value_t = 0.1)]
    pub delta: f64,
    /// budget: share of cases sent to review.
    #[arg(long, default_value_t = 0.2)]
    pub review_fraction: f64,
    /// budget: decisions the online quantile looks back over.
    #[arg(long, default_value_t = 1000)]
    pub window: usize,
    /// threshold: the score compared.
    #[arg(long, value_enum, default_value_t = ThresholdScore::Dup)]
    pub score: ThresholdScore,
    /// threshold: review when score ≥ this.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// cost: cost of one wrong answer.
    #[arg(long, default_value_t = 1.0)]
    pub error_cost: f64,
    /// cost: cost of one reviewer's effort, in the same unit.
    #[arg(long, default_value_t = 0.05)]
    pub effort_cost: f64,
    /// Most reviewers per case.
    #[arg(long, default_value_t = 3)]
    pub k_max: u32,
    /// Most labels a routed case gets while its reviewers hold no strict
    /// majority (then adjudication); default max(k_max + 2, 5). The system
    /// policy counts this process exactly.
    #[arg(long)]
    pub max_labels: Option<u32>,
    /// Reviewers per case: smallest k with predicted majority-vote error ≤ this.
    #[arg(long, default_value_t = 0.05)]
    pub reviewer_target_error: f64,
    /// Do not ask another reviewer when the first disagrees with the model.
    #[arg(long)]
    pub no_escalation: bool,
    /// Share of automated cases also sent to review as audits.
    #[arg(long, default_value_t = 0.02)]
    pub audit_rate: f64,
    /// Audited error rate that triggers review-all (default: --alpha).
    #[arg(long)]
    pub audit_alpha: Option<f64>,
    /// Split to calibrate on.
    #[arg(long, value_enum, default_value_t = Split::Calibration)]
    pub split: Split,
}

/// Builds the policy for `predictor` from `data`'s calibration split.
pub fn calibrate(
    predictor: &Predictor,
    data: &Dataset,
    data_path: &Path,
    cfg: &CalibrateConfig,
) -> anyhow::Result<PolicySpec> {
    anyhow::ensure!(
        cfg.alpha > 0.0 && cfg.alpha < 1.0,
        "--alpha must be in (0, 1)"
    );
    anyhow::ensure!(
        cfg.delta > 0.0 && cfg.delta < 1.0,
        "--delta must be in (0, 1)"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&cfg.review_fraction),
        "--review-fraction must be in [0, 1]"
    );
    let ev = eval::evaluate(
        predictor,
        data,
        &EvalOptions {
            split: Some(cfg.split),
            class_groups: None,
        },
    )?;
    // The fitting part orders the grid; the certification part only tests it.
    let parts = data.calibration_parts(&ev.cases.iter().map(|c| c.index).collect::<Vec<_>>());
    let by_index: std::collections::HashMap<usize, &eval::CaseResult> =
        ev.cases.iter().map(|c| (c.index, c)).collect();
    let rule = match cfg.policy {
        PolicyKind::Threshold => RuleSpec::Threshold {
            score: cfg.score,
            threshold: cfg.threshold,
        },
        PolicyKind::Cost => RuleSpec::Cost {
            error_cost: cfg.error_cost,
            effort_cost: cfg.effort_cost,
        },
        PolicyKind::Budget => {
            let mut scores: Vec<f64> = ev
                .cases
                .iter()
                .map(|c| ThresholdScore::Triage.of(&c.prediction))
                .collect();
            scores.sort_by(f64::total_cmp);
            RuleSpec::Budget {
                review_fraction: cfg.review_fraction,
                window: cfg.window,
                calibrated_threshold: upper_quantile(&scores, cfg.review_fraction).min(f64::MAX),
            }
        }
        PolicyKind::Risk => {
            let scored = |part: &[usize]| -> Vec<Scored> {
                part.iter()
                    .filter_map(|i| {
                        let c = by_index.get(i)?;
                        let y = c.reference.or(c.majority)?;
                        Some(Scored {
                            confidence: 1.0 - f64::from(c.prediction.algorithm_error()),
                            error: c.prediction.class() != y,
                        })
                    })
                    .collect()
            };
            let (grid, test) = (scored(&parts.fit), scored(&parts.certify));
            anyhow::ensure!(
                !grid.is_empty() && !test.is_empty(),
                "no labelled cases in the fitting or certification part of the {} split",
                cfg.split
            );
            RuleSpec::Risk {
                certificate: certify_parts(&grid, &test, cfg.alpha, cfg.delta),
            }
        }
        PolicyKind::System => {
            let with_reference = ev.cases.iter().filter(|c| c.reference.is_some()).count();
            let referenced = with_reference * 2 >= ev.cases.len();
            let asked = cfg.k_max;
            let max_labels = cfg.max_labels.unwrap_or((cfg.k_max + 2).max(5));
            anyhow::ensure!(
                (1..=MAX_PANEL).contains(&asked) && (asked..=MAX_PANEL).contains(&max_labels),
                "need 1 <= --k-max <= --max-labels <= {MAX_PANEL}"
            );
            // Without references a panel of k ≥ 2 is scored against the same
            // readers it is drawn from (optimistic), so only k = 1 is offered.
            let k_max = if referenced { asked } else { 1 };
            if k_max < asked {
                tracing::warn!(
                    asked,
                    "no reference labels: the system policy offers at most 1 reviewer per case"
                );
            }
            let panels = system::Panels { k_max, max_labels };
            let cases = |part: &[usize]| -> Vec<SystemCase> {
                part.iter()
                    .filter_map(|i| {
                        let c = by_index.get(i)?;
                        let counts = data.counts(c.index);
                        let reference = if referenced { c.reference } else { None };
                        let mut loss =
                            vec![model_error_target(counts, reference, c.prediction.class())?];
                        let mut labels = vec![0.0];
                        for k in 1..=k_max {
                            let (e, l) = queue_panel(counts, reference, k, max_labels)?;
                            loss.push(e);
                            labels.push(l);
                        }
                        Some(SystemCase {
                            model_error: f64::from(c.prediction.algorithm_error()),
                            predicted: panels
                                .predicted(f64::from(c.prediction.estimated_human_error())),
                            loss,
                            labels,
                        })
                    })
                    .collect()
            };
            let (fit, cert) = (cases(&parts.fit), cases(&parts.certify));
            anyhow::ensure!(
                !fit.is_empty() && !cert.is_empty(),
                "no cases with a usable target in the fitting or certification part of the {} split",
                cfg.split
            );
            if predictor.manifest().calibration.is_none() {
                tracing::warn!("the bundle has no calibrators: the system policy routes on the raw 1 - max p and D-hat");
            }
            let target = if referenced {
                "reference label"
            } else {
                "leave-one-reader-out majority of the other readers"
            };
            RuleSpec::System {
                certificate: system::certify(&fit, &cert, cfg.alpha, cfg.delta, panels, target),
            }
        }
    };
    let (k_max, max_labels) = match &rule {
        RuleSpec::System { certificate } => (certificate.k_max, Some(certificate.max_labels)),
        _ => (cfg.k_max, cfg.max_labels),
    };
    let spec = PolicySpec {
        format_version: FORMAT_VERSION,
        rule,
        reviewers: ReviewerSpec {
            k_max,
            target_error: cfg.reviewer_target_error,
            escalate_on_disagreement: !cfg.no_escalation && cfg.policy != PolicyKind::System,
            max_labels,
        },
        audit: AuditSpec {
            rate: cfg.audit_rate,
            alpha: cfg.audit_alpha.unwrap_or(cfg.alpha),
            confidence: 0.95,
        },
        calibration: Some(CalibrationInfo {
            data_file: crate::train::file_label(data_path),
            data_sha256: crate::train::sha256_file(data_path)?,
            split: cfg.split.to_string(),
            parts: Some(parts.describe()),
            n: ev.cases.len(),
            model_version: predictor.manifest().version.clone(),
            created_at: chrono::Utc::now().to_rfc3339(),
        }),
    };
    if let Err(e) = spec.validate() {
        anyhow::bail!("the calibrated policy is invalid: {e}");
    }
    Ok(spec)
}
