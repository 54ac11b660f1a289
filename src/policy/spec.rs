//! `policy.json`, the calibrated policy stored in a model bundle beside
//! `model.json` (docs/formats.md): the rule and its parameters, reviewer allocation,
//! audit sampling, and where it was calibrated. Its version is the hash of its
//! content, so every decision names exactly the policy that made it.

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::system::SystemCertificate;
use super::ThresholdScore;

pub const POLICY_FILE: &str = "policy.json";
pub const FORMAT_VERSION: u32 = 1;

/// The decision rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleSpec {
    /// Review when the score is ≥ `threshold`.
    Threshold {
        score: ThresholdScore,
        threshold: f64,
    },
    /// Review the top `review_fraction` by the triage score `â − ĥ`, starting
    /// from the calibration quantile and tracking it over the last `window`
    /// decisions.
    Budget {
        review_fraction: f64,
        window: usize,
        calibrated_threshold: f64,
    },
    /// Review iff `min_k ĥ(k)·error_cost + k·effort_cost < â·error_cost`.
    Cost { error_cost: f64, effort_cost: f64 },
    /// Automate iff confidence `max p ≥ τ`, with τ certified on calibration data.
    Risk { certificate: Certificate },
    /// Reviewers per case k ∈ {0, …, k_max} from calibrated `â` and `ĥ`, with the
    /// total error of automated and reviewed cases certified (`policy::system`).
    System { certificate: SystemCertificate },
}

impl RuleSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            RuleSpec::Threshold { .. } => "threshold",
            RuleSpec::Budget { .. } => "budget",
            RuleSpec::Cost { .. } => "cost",
            RuleSpec::Risk { .. } => "risk",
            RuleSpec::System { .. } => "system",
        }
    }
}

/// The guarantee of a risk-controlled policy: with probability ≥ 1 − δ over the
/// calibration draw, the error rate of automated cases (confidence ≥ τ) is ≤ α.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Certificate {
    pub alpha: f64,
    pub delta: f64,
    /// Calibration cases the hypotheses were tested on.
    pub n_cal: usize,
    /// Confidence threshold; `None` when no threshold could be certified (review all).
    pub tau: Option<f64>,
    /// Share of calibration cases automated at τ (the expected automation rate).
    pub automation_rate: f64,
    /// Errors and automated cases at τ on the test half of the calibration split.
    pub errors: usize,
    pub automated: usize,
    /// Binomial p-value of the last rejected hypothesis "selective error > α".
    pub p_value: Option<f64>,
    /// Thresholds in the fixed sequence, and how many were certified.
    pub grid_size: usize,
    pub certified_steps: usize,
    /// The score thresholded: `confidence` = max p.
    pub score: String,
    /// How the grid and the tested cases were chosen.
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewerSpec {
    /// Most reviewers one case may get.
    pub k_max: u32,
    /// Reviewers per case: the smallest k whose predicted majority-vote error is ≤ this.
    pub target_error: f64,
    /// Ask one more reviewer when the first label disagrees with the model.
    pub escalate_on_disagreement: bool,
    /// Most labels a case is given while they hold no strict majority; still
    /// tied, it goes to adjudication. Absent: `max(k_max + 2, 5)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_labels: Option<u32>,
}

impl ReviewerSpec {
    /// The cap on labels per case (see `max_labels`).
    pub fn label_cap(&self) -> u32 {
        self.max_labels.unwrap_or((self.k_max + 2).max(5))
    }
}

impl Default for ReviewerSpec {
    fn default() -> Self {
        ReviewerSpec {
            k_max: 3,
            target_error: 0.05,
            escalate_on_disagreement: true,
            max_labels: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSpec {
    /// Share of automated cases also sent to review, flagged `audit`.
    pub rate: f64,
    /// Error rate the automated cases must stay under; the certificate's α for
    /// risk policies.
    pub alpha: f64,
    /// Confidence of the audited error interval.
    pub confidence: f64,
}

impl Default for AuditSpec {
    fn default() -> Self {
        AuditSpec {
            rate: 0.02,
            alpha: 0.05,
            confidence: 0.95,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationInfo {
    pub data_file: String,
    pub data_sha256: String,
    pub split: String,
    /// How the split was divided into its fitting and certification parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<String>,
    pub n: usize,
    pub model_version: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub format_version: u32,
    pub rule: RuleSpec,
    #[serde(default)]
    pub reviewers: ReviewerSpec,
    #[serde(default)]
    pub audit: AuditSpec,
    #[serde(default)]
    pub calibration: Option<CalibrationInfo>,
}

impl PolicySpec {
    /// `<kind>-<12 hex of the content hash>`.
    pub fn version(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let hash = hex::encode(Sha256::digest(&bytes));
        format!("{}-{}", self.rule.kind(), &hash[..12])
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {} (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        let r = &self.reviewers;
        if r.k_max == 0 || r.k_max > 15 {
            return Err(format!("reviewers.k_max {} must be in 1..=15", r.k_max));
        }
        if !(0.0..=1.0).contains(&r.target_error) {
            return Err("reviewers.target_error must be in [0, 1]".into());
        }
        let a = &self.audit;
        if !(0.0..=1.0).contains(&a.rate)
            || !(0.0..1.0).contains(&a.alpha)
            || !(0.5..1.0).contains(&a.confidence)
        {
            return Err("audit: rate in [0,1], alpha in [0,1), confidence in [0.5,1)".into());
        }
        match &self.rule {
            RuleSpec::Threshold { threshold, .. } if !threshold.is_finite() => {
                Err("rule.threshold is not a number".into())
            }
            RuleSpec::Budget {
                review_fraction,
                window,
                calibrated_threshold,
            } => {
                if !(0.0..=1.0).contains(review_fraction) {
                    Err("rule.review_fraction must be in [0, 1]".into())
                } else if *window == 0 {
                    Err("rule.window must be positive".into())
                } else if !calibrated_threshold.is_finite() {
                    Err("rule.calibrated_threshold is not a number".into())
                } else {
                    Ok(())
                }
            }
            RuleSpec::Cost {
                error_cost,
                effort_cost,
            } if !(*error_cost > 0.0 && *effort_cost >= 0.0) => {
                Err("rule: error_cost must be > 0 and effort_cost >= 0".into())
            }
            RuleSpec::Risk { certificate: c }
                if !(c.alpha > 0.0 && c.alpha < 1.0 && c.delta > 0.0 && c.delta < 1.0) =>
            {
                Err("rule.certificate: alpha and delta must be in (0, 1)".into())
            }
            RuleSpec::System { certificate: c } => {
                if !(c.alpha > 0.0 && c.alpha < 1.0 && c.delta > 0.0 && c.delta < 1.0) {
                    Err("rule.certificate: alpha and delta must be in (0, 1)".into())
                } else if c.k_max == 0 || c.k_max > crate::data::targets::MAX_PANEL {
                    Err(format!(
                        "rule.certificate.k_max must be in 1..={}",
                        crate::data::targets::MAX_PANEL
                    ))
                } else if c.setting.is_some_and(|s| {
                    s.threshold.is_nan() || !(s.price.is_finite() && s.price >= 0.0)
                }) {
                    Err(
                        "rule.certificate.setting: threshold and price must be numbers, price >= 0"
                            .into(),
                    )
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// Reads `dir/policy.json`; `Ok(None)` when the bundle has none.
pub fn read(dir: &Path) -> anyhow::Result<Option<PolicySpec>> {
    let path = dir.join(POLICY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let spec: PolicySpec =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if let Err(e) = spec.validate() {
        bail!("{}: {e}", path.display());
    }
    Ok(Some(spec))
}

/// Writes `dir/policy.json` atomically.
pub fn write(dir: &Path, spec: &PolicySpec) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(spec)?;
    crate::model::bundle::write_atomic(&dir.join(POLICY_FILE), &json)
}
