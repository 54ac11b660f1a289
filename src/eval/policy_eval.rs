//! `eval --policy`: what the bundle's calibrated policy does on held-out cases —
//! realised automation, the error of automated cases with an exact interval, the
//! total error when reviewers handle the rest, and reviewers per reviewed case.
//! Audit sampling is switched off here: it measures the policy itself.

use serde::Serialize;

use super::CaseResult;
use crate::data::targets::{model_error_target, queue_panel, MAX_PANEL};
use crate::data::Dataset;
use crate::policy::spec::PolicySpec;
use crate::policy::system::hb_upper_bound;
use crate::policy::TriageMode;
use crate::policy::{AnyCertificate, Policy, Route};
use crate::stats::clopper_pearson;

#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    pub name: String,
    pub version: String,
    /// Present for `risk` and `system` policies (`null` otherwise).
    pub certificate: Option<AnyCertificate>,
    /// Cases with a known answer (reference, or majority) the numbers are over.
    pub n: usize,
    pub automated: usize,
    pub automation_rate: f64,
    /// Error rate among automated cases (`null` when none is automated).
    pub selective_error: Option<f64>,
    /// Exact 95% Clopper–Pearson bounds on the selective error.
    pub selective_error_lower: f64,
    pub selective_error_upper: f64,
    /// Mean error over all cases: `1[ŷ ≠ y*]` on automated cases, the exact
    /// error of a majority of the assigned reviewers (drawn from the case's own
    /// label distribution, ties broken uniformly) on reviewed ones; against the
    /// reference, or leave-one-reader-out where a case has none.
    pub total_error: f64,
    /// 95% upper confidence bound on the expected total error (Hoeffding–Bentkus).
    pub total_error_upper: f64,
    /// Expected reviewer labels per case: 0 for automated cases; for reviewed ones
    /// the queue's process (k labels, more while no strict majority, up to the
    /// cap) on the case's label distribution. Audit samples are not counted.
    pub labels_per_case: f64,
    /// Mean error of the reviewers on the reviewed cases.
    pub reviewed_error: Option<f64>,
    pub mean_reviewers: Option<f64>,
    /// Decisions by reason code.
    pub reasons: std::collections::BTreeMap<String, usize>,
}

pub fn evaluate_policy(spec: &PolicySpec, cases: &[CaseResult], data: &Dataset) -> PolicyReport {
    let mut quiet = spec.clone();
    quiet.audit.rate = 0.0;
    let policy = Policy::from_spec(&quiet, TriageMode::Policy);
    let (mut n, mut automated, mut auto_errors) = (0usize, 0usize, 0usize);
    let (mut total, mut reviewed_err, mut reviewers, mut reviewed) = (0.0, 0.0, 0u64, 0usize);
    let mut reasons = std::collections::BTreeMap::new();
    let mut labels = 0.0;
    for case in cases {
        let counts = data.counts(case.index);
        let Some(model_loss) = model_error_target(counts, case.reference, case.prediction.class())
        else {
            continue;
        };
        let d = policy.decide(&case.prediction);
        let panel = d.reviewers.clamp(1, MAX_PANEL);
        let cap = spec.reviewers.label_cap().clamp(panel, MAX_PANEL);
        let Some((panel_loss, panel_labels)) = queue_panel(counts, case.reference, panel, cap)
        else {
            continue;
        };
        *reasons.entry(d.reason_code.to_string()).or_insert(0) += 1;
        n += 1;
        match d.route {
            Route::Automate => {
                automated += 1;
                // The selective error's exact interval counts whole errors.
                auto_errors += usize::from(model_loss >= 0.5);
                total += model_loss;
            }
            Route::Review => {
                let e = panel_loss;
                total += e;
                reviewed_err += e;
                reviewers += u64::from(d.reviewers);
                labels += panel_labels;
                reviewed += 1;
            }
        }
    }
    let (lower, upper) = clopper_pearson(auto_errors as u64, automated as u64, 0.05);
    PolicyReport {
        name: policy.info().name.clone(),
        version: policy.info().version.clone(),
        certificate: policy.info().certificate.clone(),
        n,
        automated,
        automation_rate: automated as f64 / n.max(1) as f64,
        selective_error: (automated > 0).then(|| auto_errors as f64 / automated as f64),
        selective_error_lower: lower,
        selective_error_upper: upper,
        total_error: total / n.max(1) as f64,
        total_error_upper: hb_upper_bound(total / n.max(1) as f64, n, 0.05),
        labels_per_case: labels / n.max(1) as f64,
        reviewed_error: (reviewed > 0).then(|| reviewed_err / reviewed as f64),
        mean_reviewers: (reviewed > 0).then(|| reviewers as f64 / reviewed as f64),
        reasons,
    }
}
