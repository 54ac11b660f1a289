//! Triage policies (DESIGN §1): turn a [`Prediction`] into a [`Decision`] —
//! automate or send to review, why, and how many reviewers. Every decision carries
//! the policy's name and version so it can be audited later.

use serde::{Deserialize, Serialize};

use crate::config::{TriageMode, TriageSettings};
use crate::model::Prediction;

/// Which per-case score a threshold policy compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
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

/// The policy's verdict on one case.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    pub route: Route,
    /// Why, in words an auditor can read (includes the score and threshold).
    pub reason: String,
    /// Short machine label of the reason (a metric label).
    pub reason_code: &'static str,
    /// Reviewers the case needs (0 when automated).
    pub reviewers: u32,
    /// Review-queue case id, once the queue exists for this deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// Sent to review only to measure the automated error rate.
    pub audit: bool,
    /// In shadow mode: what the policy itself would have done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_route: Option<Route>,
}

/// A policy with its identity.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    /// The policy's parameters.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
}

/// The decision rule in force for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    mode: TriageMode,
    rule: Rule,
    info: PolicyInfo,
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    Threshold {
        score: ThresholdScore,
        threshold: f64,
        reviewers: u32,
    },
}

/// Reason codes (bounded set: they are metric labels).
pub const REASON_CODES: &[&str] = &[
    "score_below_threshold",
    "score_at_or_above_threshold",
    "shadow_mode",
    "automate_all_mode",
];

impl Policy {
    /// The threshold policy configured under `[triage]`.
    pub fn from_settings(t: &TriageSettings) -> Policy {
        let parameters = serde_json::json!({
            "score": t.score.name(), "threshold": t.threshold, "reviewers": t.reviewers, "mode": t.mode,
        });
        Policy {
            mode: t.mode,
            rule: Rule::Threshold {
                score: t.score,
                threshold: t.threshold,
                reviewers: t.reviewers,
            },
            info: PolicyInfo {
                name: "threshold".into(),
                version: format!(
                    "config:{}:{}>={}",
                    serde_json::to_value(t.mode)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or(""),
                    t.score.name(),
                    t.threshold
                ),
                parameters,
            },
        }
    }

    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    pub fn decide(&self, p: &Prediction) -> Decision {
        let Rule::Threshold {
            score,
            threshold,
            reviewers,
        } = &self.rule;
        let value = score.of(p);
        let own = if value >= *threshold {
            Decision {
                route: Route::Review,
                reason: format!("{} {value:.4} >= threshold {threshold}", score.name()),
                reason_code: "score_at_or_above_threshold",
                reviewers: *reviewers,
                case_id: None,
                audit: false,
                policy_route: None,
            }
        } else {
            Decision {
                route: Route::Automate,
                reason: format!("{} {value:.4} < threshold {threshold}", score.name()),
                reason_code: "score_below_threshold",
                reviewers: 0,
                case_id: None,
                audit: false,
                policy_route: None,
            }
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
                policy_route: Some(own.route),
                ..own
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(d: f32, p: Vec<f32>) -> Prediction {
        Prediction {
            probabilities: p,
            disagreement: d,
            human_error: None,
        }
    }

    fn settings(mode: TriageMode, score: ThresholdScore, threshold: f64) -> TriageSettings {
        TriageSettings {
            mode,
            score,
            threshold,
            reviewers: 2,
        }
    }

    #[test]
    fn threshold_routes_at_and_above() {
        let p = Policy::from_settings(&settings(TriageMode::Policy, ThresholdScore::Dup, 0.5));
        assert_eq!(p.decide(&pred(0.5, vec![0.9, 0.1])).route, Route::Review);
        assert_eq!(p.decide(&pred(0.5, vec![0.9, 0.1])).reviewers, 2);
        let d = p.decide(&pred(0.49, vec![0.9, 0.1]));
        assert_eq!((d.route, d.reviewers), (Route::Automate, 0));
        assert!(
            d.reason.contains("dup 0.4900 < threshold 0.5"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn confidence_score_is_model_error() {
        let p = Policy::from_settings(&settings(
            TriageMode::Policy,
            ThresholdScore::Confidence,
            0.3,
        ));
        assert_eq!(p.decide(&pred(0.0, vec![0.65, 0.35])).route, Route::Review);
        assert_eq!(
            p.decide(&pred(0.9, vec![0.75, 0.25])).route,
            Route::Automate
        );
    }

    #[test]
    fn shadow_reviews_everything_and_records_the_policy() {
        let p = Policy::from_settings(&settings(TriageMode::Shadow, ThresholdScore::Dup, 0.5));
        let d = p.decide(&pred(0.1, vec![0.9, 0.1]));
        assert_eq!(d.route, Route::Review);
        assert_eq!(d.policy_route, Some(Route::Automate));
        let p = Policy::from_settings(&settings(TriageMode::AutomateAll, ThresholdScore::Dup, 0.5));
        let d = p.decide(&pred(0.9, vec![0.9, 0.1]));
        assert_eq!(
            (d.route, d.policy_route),
            (Route::Automate, Some(Route::Review))
        );
    }
}
