//! Each policy on constructed cases with known answers.

use super::spec::*;
use super::*;

fn pred(probs: &[f32], d: f32, h: Option<f32>) -> Prediction {
    Prediction {
        probabilities: probs.to_vec(),
        disagreement: d,
        human_error: h,
        model_error: None,
    }
}

fn spec(rule: RuleSpec) -> PolicySpec {
    PolicySpec {
        format_version: FORMAT_VERSION,
        rule,
        reviewers: ReviewerSpec::default(),
        audit: AuditSpec {
            rate: 0.0,
            ..AuditSpec::default()
        },
        calibration: None,
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

fn certificate(tau: Option<f64>) -> Certificate {
    Certificate {
        alpha: 0.05,
        delta: 0.1,
        n_cal: 500,
        tau,
        automation_rate: 0.4,
        errors: 3,
        automated: 200,
        p_value: Some(0.01),
        grid_size: 100,
        certified_steps: 10,
        score: "confidence".into(),
        method: "test".into(),
    }
}

#[test]
fn configured_threshold_routes_at_and_above() {
    let p = Policy::from_settings(&settings(TriageMode::Policy, ThresholdScore::Dup, 0.5));
    let d = p.decide(&pred(&[0.9, 0.1], 0.5, None));
    assert_eq!((d.route, d.reviewers), (Route::Review, 2));
    let d = p.decide(&pred(&[0.9, 0.1], 0.49, None));
    assert_eq!((d.route, d.reviewers), (Route::Automate, 0));
    assert!(
        d.reason.contains("dup 0.4900 < threshold 0.5"),
        "{}",
        d.reason
    );
    assert!(p.info().version.starts_with("config-"));
}

#[test]
fn confidence_score_is_model_error() {
    let p = Policy::from_settings(&settings(
        TriageMode::Policy,
        ThresholdScore::Confidence,
        0.3,
    ));
    assert_eq!(
        p.decide(&pred(&[0.65, 0.35], 0.0, None)).route,
        Route::Review
    );
    assert_eq!(
        p.decide(&pred(&[0.75, 0.25], 0.9, None)).route,
        Route::Automate
    );
}

#[test]
fn shadow_and_automate_all_record_the_policy_route() {
    let p = Policy::from_settings(&settings(TriageMode::Shadow, ThresholdScore::Dup, 0.5));
    let d = p.decide(&pred(&[0.9, 0.1], 0.1, None));
    assert_eq!(
        (d.route, d.policy_route, d.reason_code),
        (Route::Review, Some(Route::Automate), "shadow_mode")
    );
    let p = Policy::from_settings(&settings(TriageMode::AutomateAll, ThresholdScore::Dup, 0.5));
    let d = p.decide(&pred(&[0.9, 0.1], 0.9, None));
    assert_eq!(
        (d.route, d.policy_route),
        (Route::Automate, Some(Route::Review))
    );
}

#[test]
fn risk_policy_automates_at_or_above_tau_and_reviews_all_without_one() {
    let p = Policy::from_spec(
        &spec(RuleSpec::Risk {
            certificate: certificate(Some(0.9)),
        }),
        TriageMode::Policy,
    );
    let d = p.decide(&pred(&[0.92, 0.08], 0.1, None));
    assert_eq!(
        (d.route, d.reason_code),
        (Route::Automate, "risk_certified")
    );
    let d = p.decide(&pred(&[0.85, 0.15], 0.1, None));
    assert_eq!(
        (d.route, d.reason_code),
        (Route::Review, "risk_not_certified")
    );
    match p.info().certificate.as_ref().unwrap() {
        AnyCertificate::Risk(c) => assert_eq!(c.tau, Some(0.9)),
        other => panic!("{other:?}"),
    }

    let p = Policy::from_spec(
        &spec(RuleSpec::Risk {
            certificate: certificate(None),
        }),
        TriageMode::Policy,
    );
    let d = p.decide(&pred(&[0.999, 0.001], 0.0, None));
    assert_eq!(
        (d.route, d.reason_code),
        (Route::Review, "risk_no_valid_threshold")
    );
    assert!(d.reason.contains("every case is reviewed"));
}

#[test]
fn cost_policy_compares_expected_costs() {
    // â = 0.4, one reviewer errs 0.1: review costs 0.1·1 + 0.05 = 0.15 < 0.4.
    let p = Policy::from_spec(
        &spec(RuleSpec::Cost {
            error_cost: 1.0,
            effort_cost: 0.05,
        }),
        TriageMode::Policy,
    );
    let d = p.decide(&pred(&[0.6, 0.4], 0.1, Some(0.1)));
    assert_eq!(
        (d.route, d.reason_code, d.reviewers),
        (Route::Review, "cost_review_cheaper", 1)
    );
    // â = 0.05: automating costs 0.05 < any review (≥ 0.05 effort + error).
    let d = p.decide(&pred(&[0.95, 0.05], 0.1, Some(0.1)));
    assert_eq!(d.route, Route::Automate);
    // Noisy reviewers (0.3) on a hard case (â = 0.5): 3 reviewers (0.216 + 0.15 = 0.366)
    // beat 1 (0.3 + 0.05 = 0.35)? No: 1 is cheaper, and both beat automating.
    let d = p.decide(&pred(&[0.5, 0.5], 0.3, Some(0.3)));
    assert_eq!((d.route, d.reviewers), (Route::Review, 1));
    // With cheap effort, 3 reviewers win.
    let p = Policy::from_spec(
        &spec(RuleSpec::Cost {
            error_cost: 1.0,
            effort_cost: 0.001,
        }),
        TriageMode::Policy,
    );
    assert_eq!(p.decide(&pred(&[0.5, 0.5], 0.3, Some(0.3))).reviewers, 3);
}

#[test]
fn reviewers_per_case_follow_predicted_human_error() {
    let p = Policy::from_spec(
        &spec(RuleSpec::Threshold {
            score: ThresholdScore::Dup,
            threshold: 0.0,
        }),
        TriageMode::Policy,
    );
    // target 0.05, k_max 3: h = 0.02 -> 1; h = 0.1 -> 1 reviewer errs 0.1, 3 err 0.028 -> 3
    assert_eq!(p.decide(&pred(&[0.5, 0.5], 0.02, None)).reviewers, 1);
    assert_eq!(p.decide(&pred(&[0.5, 0.5], 0.1, None)).reviewers, 3);
    // Nothing reaches the target: k_max.
    assert_eq!(p.decide(&pred(&[0.5, 0.5], 0.45, None)).reviewers, 3);
    assert!(
        p.decide(&pred(&[0.5, 0.5], 0.1, None))
            .escalate_on_disagreement
    );
}

#[test]
fn budget_policy_reviews_the_top_fraction() {
    let p = Policy::from_spec(
        &spec(RuleSpec::Budget {
            review_fraction: 0.25,
            window: 400,
            calibrated_threshold: 0.0,
        }),
        TriageMode::Policy,
    );
    let mut reviewed = 0;
    for i in 0..4000 {
        // triage score â − ĥ spread over cases
        let a = (i % 100) as f32 / 200.0;
        let d = p.decide(&pred(&[1.0 - a, a], 0.0, Some(0.0)));
        reviewed += usize::from(d.route == Route::Review);
    }
    let rate = reviewed as f64 / 4000.0;
    assert!((rate - 0.25).abs() < 0.03, "{rate}");
}

#[test]
fn audit_samples_automated_cases_and_falls_back_visibly() {
    let mut s = spec(RuleSpec::Threshold {
        score: ThresholdScore::Dup,
        threshold: 0.5,
    });
    s.audit.rate = 0.5;
    let p = Policy::from_spec(&s, TriageMode::Policy);
    let decisions: Vec<Decision> = (0..400)
        .map(|_| p.decide(&pred(&[0.9, 0.1], 0.1, None)))
        .collect();
    let audited = decisions.iter().filter(|d| d.audit).count();
    assert!(
        (120..280).contains(&audited),
        "{audited} of 400 at rate 0.5"
    );
    for d in decisions.iter().filter(|d| d.audit) {
        assert_eq!(
            (d.route, d.reviewers, d.reason_code),
            (Route::Review, super::AUDIT_REVIEWERS, "audit_sample"),
            "an audited case is judged by a consensus of reviewers"
        );
    }
    // Audits show 40% errors against alpha 0.05: fall back to review-all.
    let status = p.record_audit(60, 40).unwrap();
    assert!(status.fallback);
    let d = p.decide(&pred(&[0.99, 0.01], 0.0, None));
    assert_eq!((d.route, d.reason_code), (Route::Review, "audit_fallback"));
    assert!(d.reason.contains("40 errors in 100"), "{}", d.reason);
}

#[test]
fn version_is_a_content_hash() {
    let a = spec(RuleSpec::Risk {
        certificate: certificate(Some(0.9)),
    });
    let mut b = a.clone();
    assert_eq!(a.version(), b.version());
    b.reviewers.k_max = 5;
    assert_ne!(a.version(), b.version());
    assert!(a.version().starts_with("risk-"));
}
