//! Triage policies (docs/science.md): turn a [`Prediction`] into a [`Decision`] —
//! automate or send to review, why, and how many reviewers — with audit sampling
//! watching the automated error rate. Every decision carries the policy's name and
//! version so it can be audited later.
//!
//! - [`spec`]: `policy.json` in the bundle (written by `triaged calibrate`,
//!   `crate::calibrate`, an offline command beside `train` and `eval`);
//! - [`system`]: the whole human–AI system's certificate;
//! - [`risk`]: the risk-controlled certificate; [`budget`]: the online quantile;
//! - [`audit`]: the audited error monitor and its fall-back.

pub mod audit;
pub mod budget;
pub mod risk;
pub mod spec;
pub mod system;

use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::Prediction;
use crate::stats::majority_vote_error;
use audit::{AuditMonitor, AuditStatus};
use budget::BudgetWindow;
use spec::{AuditSpec, Certificate, PolicySpec, ReviewerSpec, RuleSpec};

/// Which per-case score a threshold policy compares.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdScore {
    /// Predicted pairwise disagreement `D̂` (DUP).
    Dup,
    /// `1 − Σ p²`.
    Uvc,
    /// `â − ĥ`: how much worse the model is expected to do than one reviewer.
    Triage,
    /// `1 − max p`: the model's own estimated error.
    Confidence,
}

impl ThresholdScore {
    pub fn name(self) -> &'static str {
        match self {
            ThresholdScore::Dup => "dup",
            ThresholdScore::Uvc => "uvc",
            ThresholdScore::Triage => "triage",
            ThresholdScore::Confidence => "confidence",
        }
    }

    pub fn of(self, p: &Prediction) -> f64 {
        f64::from(match self {
            ThresholdScore::Dup => p.disagreement,
            ThresholdScore::Uvc => p.uvc(),
            ThresholdScore::Triage => p.algorithm_error() - p.estimated_human_error(),
            ThresholdScore::Confidence => p.algorithm_error(),
        })
    }
}

/// Where a case goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Automate,
    Review,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::Automate => "automate",
            Route::Review => "review",
        }
    }
}

/// Reviewers of an audited automated case: the model is compared with their
/// consensus (more are asked while they have no strict majority).
pub const AUDIT_REVIEWERS: u32 = 3;

/// What the server does with the policy's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TriageMode {
    /// Follow the policy.
    Policy,
    /// Route every case to review; record the policy's own decision beside it.
    Shadow,
    /// Automate every case (the policy's decision is still reported).
    AutomateAll,
}

/// The `[triage]` settings: the mode, and the threshold rule used when a bundle
/// ships no `policy.json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TriageSettings {
    pub mode: TriageMode,
    pub score: ThresholdScore,
    pub threshold: f64,
    pub reviewers: u32,
}

/// The policy's verdict on one case.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    pub route: Route,
    /// Why, in words an auditor can read (includes the score and threshold).
    pub reason: String,
    /// Short machine label of the reason (one of a fixed set; a metric label).
    pub reason_code: &'static str,
    /// Reviewers the case needs (0 when automated).
    pub reviewers: u32,
    /// Ask one more reviewer if the first label disagrees with the model.
    pub escalate_on_disagreement: bool,
    /// Review-queue case id, once the queue exists for this deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// Sent to review only to measure the automated error rate.
    pub audit: bool,
    /// In shadow or automate-all mode: what the policy itself would have done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_route: Option<Route>,
}

/// A policy's identity as reported by the API and recorded with decisions.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PolicyInfo {
    /// `threshold`, `budget`, `cost` or `risk`.
    pub name: String,
    /// Content hash of the policy (`<kind>-<hex>`), or `config-…` for the
    /// configured fallback.
    pub version: String,
    /// `policy.json` of the bundle, or the `[triage]` settings.
    pub source: String,
    /// The policy's parameters.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    /// The guarantee of a `risk` or `system` policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<AnyCertificate>,
}

/// A policy's guarantee: on automated cases (`risk`) or on the whole system
/// (`system`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum AnyCertificate {
    Risk(Certificate),
    System(system::SystemCertificate),
}

/// Reason codes (a bounded set: they are metric labels).
pub const REASON_CODES: &[&str] = &[
    "below_threshold",
    "at_or_above_threshold",
    "budget_top_fraction",
    "budget_below_cutoff",
    "cost_review_cheaper",
    "cost_automate_cheaper",
    "risk_certified",
    "risk_not_certified",
    "risk_no_valid_threshold",
    "system_automate",
    "system_review",
    "system_not_certified",
    "audit_sample",
    "audit_fallback",
    "shadow_mode",
    "automate_all_mode",
];

#[derive(Debug)]
enum Rule {
    Threshold {
        score: ThresholdScore,
        threshold: f64,
    },
    Budget(Mutex<BudgetWindow>),
    Cost {
        error_cost: f64,
        effort_cost: f64,
    },
    Risk {
        tau: Option<f64>,
        alpha: f64,
        delta: f64,
    },
    System {
        setting: Option<system::SystemSetting>,
        panels: system::Panels,
        alpha: f64,
        delta: f64,
    },
}

/// The decision rule in force for one served model version.
#[derive(Debug)]
pub struct Policy {
    mode: TriageMode,
    rule: Rule,
    reviewers: ReviewerSpec,
    audit_rate: f64,
    audit: AuditMonitor,
    info: PolicyInfo,
}

impl Policy {
    /// The bundle's `policy.json` when it has one, else the `[triage]` threshold
    /// policy. Either way `[triage].mode` applies.
    pub fn for_bundle(dir: &Path, triage: &TriageSettings) -> anyhow::Result<Policy> {
        Ok(match spec::read(dir)? {
            Some(s) => Policy::from_spec(&s, triage.mode),
            None => Policy::from_settings(triage),
        })
    }

    /// The threshold policy configured under `[triage]`, with a fixed number of
    /// reviewers and no audit sampling.
    pub fn from_settings(t: &TriageSettings) -> Policy {
        let parameters = serde_json::json!({
            "score": t.score.name(), "threshold": t.threshold, "reviewers": t.reviewers,
        });
        let version = {
            use sha2::Digest;
            let h = hex::encode(sha2::Sha256::digest(parameters.to_string().as_bytes()));
            format!("config-{}", &h[..12])
        };
        Policy {
            mode: t.mode,
            rule: Rule::Threshold {
                score: t.score,
                threshold: t.threshold,
            },
            // target 0: always the configured count
            reviewers: ReviewerSpec {
                k_max: t.reviewers,
                target_error: 0.0,
                escalate_on_disagreement: false,
                max_labels: None,
            },
            audit_rate: 0.0,
            audit: AuditMonitor::new(AuditSpec::default().alpha, AuditSpec::default().confidence),
            info: PolicyInfo {
                name: "threshold".into(),
                version,
                source: "config [triage]".into(),
                parameters,
                certificate: None,
            },
        }
    }

    pub fn from_spec(s: &PolicySpec, mode: TriageMode) -> Policy {
        let (rule, certificate) = match &s.rule {
            RuleSpec::Threshold { score, threshold } => (
                Rule::Threshold {
                    score: *score,
                    threshold: *threshold,
                },
                None,
            ),
            RuleSpec::Budget {
                review_fraction,
                window,
                calibrated_threshold,
            } => (
                Rule::Budget(Mutex::new(BudgetWindow::new(
                    *review_fraction,
                    *window,
                    *calibrated_threshold,
                ))),
                None,
            ),
            RuleSpec::Cost {
                error_cost,
                effort_cost,
            } => (
                Rule::Cost {
                    error_cost: *error_cost,
                    effort_cost: *effort_cost,
                },
                None,
            ),
            RuleSpec::Risk { certificate } => (
                Rule::Risk {
                    tau: certificate.tau,
                    alpha: certificate.alpha,
                    delta: certificate.delta,
                },
                Some(AnyCertificate::Risk(certificate.clone())),
            ),
            RuleSpec::System { certificate } => (
                Rule::System {
                    setting: certificate.setting,
                    panels: system::Panels {
                        k_max: certificate.k_max,
                        max_labels: certificate.max_labels,
                    },
                    alpha: certificate.alpha,
                    delta: certificate.delta,
                },
                Some(AnyCertificate::System(certificate.clone())),
            ),
        };
        Policy {
            mode,
            rule,
            reviewers: s.reviewers.clone(),
            audit_rate: s.audit.rate,
            audit: AuditMonitor::new(s.audit.alpha, s.audit.confidence),
            info: PolicyInfo {
                name: s.rule.kind().into(),
                version: s.version(),
                source: spec::POLICY_FILE.into(),
                parameters: serde_json::to_value(s).unwrap_or_default(),
                certificate,
            },
        }
    }

    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    pub fn audit_status(&self) -> AuditStatus {
        self.audit.status()
    }

    /// Records outcomes of audited cases in memory only (evaluation, tests); the
    /// server records through the store (`crate::audit_monitor`) so the state
    /// persists and is shared.
    pub fn record_audit(&self, correct: u64, wrong: u64) -> Result<AuditStatus, audit::AuditError> {
        let mut next = self.audit.state();
        next.record(&self.audit.config(), correct, wrong)?;
        Ok(self.adopt_audit_state(next))
    }

    /// Adopts a monitor state (from the store); the caller reports the status
    /// to the metrics (`crate::audit_monitor`).
    pub fn adopt_audit_state(&self, state: audit::MonitorState) -> AuditStatus {
        self.audit.replace(state)
    }

    /// Most labels a routed case is given while they hold no strict majority.
    pub fn max_labels(&self) -> u32 {
        self.reviewers.label_cap().max(AUDIT_REVIEWERS)
    }

    /// The audit monitor (its configuration, and the state last adopted).
    pub fn audit_monitor(&self) -> &AuditMonitor {
        &self.audit
    }

    /// Smallest k in 1..=k_max whose majority-vote error, at per-reviewer error
    /// `h`, is ≤ the target; k_max when none is.
    pub fn reviewers_for(&self, h: f64) -> u32 {
        let r = &self.reviewers;
        (1..=r.k_max)
            .find(|&k| majority_vote_error(k, h) <= r.target_error)
            .unwrap_or(r.k_max)
    }

    pub fn decide(&self, p: &Prediction) -> Decision {
        let h = f64::from(p.estimated_human_error());
        let review = |reason: String, code: &'static str| Decision {
            route: Route::Review,
            reason,
            reason_code: code,
            reviewers: self.reviewers_for(h),
            escalate_on_disagreement: self.reviewers.escalate_on_disagreement,
            case_id: None,
            audit: false,
            policy_route: None,
        };
        let automate = |reason: String, code: &'static str| Decision {
            route: Route::Automate,
            reason,
            reason_code: code,
            reviewers: 0,
            escalate_on_disagreement: false,
            case_id: None,
            audit: false,
            policy_route: None,
        };
        if !p.is_finite() {
            // A NaN compares false with every threshold, so a rule could read it
            // as "confident". Non-finite outputs are reviewed, in every mode.
            return Decision {
                reviewers: self.reviewers.k_max.max(1),
                ..review(
                    "the model's outputs are not finite numbers: the case is reviewed".into(),
                    "non_finite_output",
                )
            };
        }
        let own = if self.audit.in_fallback() {
            let s = self.audit.status();
            review(
                format!(
                    "audit fallback: {}; every case is reviewed until an admin clears it",
                    s.fallback_reason
                        .as_deref()
                        .unwrap_or("the audited error exceeds alpha")
                ),
                "audit_fallback",
            )
        } else {
            self.apply_rule(p, h, &review, &automate)
        };
        let own = if own.route == Route::Automate
            && self.audit_rate > 0.0
            && rand::random::<f64>() < self.audit_rate
        {
            Decision {
                route: Route::Review,
                reason: format!("audit sample (rate {}): {}", self.audit_rate, own.reason),
                reason_code: "audit_sample",
                // The model is judged against a consensus, not one reviewer whose
                // own errors would count as the model's.
                reviewers: AUDIT_REVIEWERS,
                escalate_on_disagreement: false,
                audit: true,
                ..own
            }
        } else {
            own
        };
        match self.mode {
            TriageMode::Policy => own,
            TriageMode::Shadow => Decision {
                route: Route::Review,
                reason: format!(
                    "shadow mode: every case is reviewed; the policy would {} ({})",
                    own.route.name(),
                    own.reason
                ),
                reason_code: "shadow_mode",
                reviewers: own.reviewers.max(1),
                policy_route: Some(own.route),
                ..own
            },
            TriageMode::AutomateAll => Decision {
                route: Route::Automate,
                reason: format!(
                    "automate_all mode; the policy would {} ({})",
                    own.route.name(),
                    own.reason
                ),
                reason_code: "automate_all_mode",
                reviewers: 0,
                escalate_on_disagreement: false,
                policy_route: Some(own.route),
                ..own
            },
        }
    }

    fn apply_rule(
        &self,
        p: &Prediction,
        h: f64,
        review: &dyn Fn(String, &'static str) -> Decision,
        automate: &dyn Fn(String, &'static str) -> Decision,
    ) -> Decision {
        match &self.rule {
            Rule::Threshold { score, threshold } => {
                let v = score.of(p);
                if v >= *threshold {
                    review(
                        format!("{} {v:.4} >= threshold {threshold}", score.name()),
                        "at_or_above_threshold",
                    )
                } else {
                    automate(
                        format!("{} {v:.4} < threshold {threshold}", score.name()),
                        "below_threshold",
                    )
                }
            }
            Rule::Budget(window) => {
                let v = ThresholdScore::Triage.of(p);
                let (send, tau) = window.lock().unwrap_or_else(|e| e.into_inner()).review(v);
                if send {
                    review(
                        format!("triage score {v:.4} >= current budget cutoff {tau:.4}"),
                        "budget_top_fraction",
                    )
                } else {
                    automate(
                        format!("triage score {v:.4} < current budget cutoff {tau:.4}"),
                        "budget_below_cutoff",
                    )
                }
            }
            Rule::Cost {
                error_cost,
                effort_cost,
            } => {
                let a = f64::from(p.algorithm_error());
                let (k, cost) = (1..=self.reviewers.k_max)
                    .map(|k| {
                        (
                            k,
                            majority_vote_error(k, h) * error_cost + f64::from(k) * effort_cost,
                        )
                    })
                    .min_by(|x, y| x.1.total_cmp(&y.1))
                    .unwrap_or((1, f64::INFINITY));
                let auto_cost = a * error_cost;
                if cost < auto_cost {
                    Decision {
                        reviewers: k,
                        ..review(
                            format!("expected cost with {k} reviewer(s) {cost:.4} < automating {auto_cost:.4}"),
                            "cost_review_cheaper",
                        )
                    }
                } else {
                    automate(
                        format!("automating costs {auto_cost:.4} <= best review {cost:.4} ({k} reviewer(s))"),
                        "cost_automate_cheaper",
                    )
                }
            }
            Rule::Risk { tau, alpha, delta } => {
                let c = 1.0 - f64::from(p.algorithm_error());
                match tau {
                    None => review(
                        format!("no confidence threshold certified at alpha {alpha}, delta {delta}: every case is reviewed"),
                        "risk_no_valid_threshold",
                    ),
                    Some(t) if c >= *t => automate(
                        format!("confidence {c:.4} >= certified threshold {t:.4} (error <= {alpha} w.p. >= {})", 1.0 - delta),
                        "risk_certified",
                    ),
                    Some(t) => review(format!("confidence {c:.4} < certified threshold {t:.4}"), "risk_not_certified"),
                }
            }
            Rule::System {
                setting,
                panels,
                alpha,
                delta,
            } => {
                let a = f64::from(p.algorithm_error());
                let k_max = panels.k_max;
                match setting {
                    None => Decision {
                        reviewers: k_max,
                        ..review(
                            format!("no setting certified at total error {alpha}, delta {delta}: every case gets {k_max} reviewers"),
                            "system_not_certified",
                        )
                    },
                    Some(s) => match system::reviewers(a, h, *s, *panels) {
                        0 => automate(
                            format!("model error {a:.4} is within the certified setting (threshold {:.4}, price {}): total error <= {alpha} w.p. >= {}", s.threshold, s.price, 1.0 - delta),
                            "system_automate",
                        ),
                        k => Decision {
                            reviewers: k,
                            escalate_on_disagreement: false,
                            ..review(
                                format!("model error {a:.4}, reviewer error {h:.4}: {k} reviewer(s) (threshold {:.4}, price {}; total error <= {alpha} w.p. >= {})", s.threshold, s.price, 1.0 - delta),
                                "system_review",
                            )
                        },
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
