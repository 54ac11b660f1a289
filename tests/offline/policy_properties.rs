//! Properties of the policies that operators rely on when they turn a knob:
//! asking for a larger error allowance never automates less, asking for a larger
//! review budget never reviews less.

use proptest::prelude::*;
use triaged::policy::budget::BudgetWindow;
use triaged::policy::risk::{certify, Scored};

fn cases() -> impl Strategy<Value = Vec<Scored>> {
    prop::collection::vec(
        (0.3f64..1.0, 0.0f64..1.0).prop_map(|(c, u)| Scored {
            confidence: (c * 100.0).round() / 100.0, // ties, as real confidences have
            error: u < (1.0 - c) * 1.2,
        }),
        50..600,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_larger_alpha_never_automates_less(cases in cases(), a1 in 0.01f64..0.3, extra in 0.0f64..0.3, delta in 0.01f64..0.3) {
        let a2 = (a1 + extra).min(0.99);
        let c1 = certify(&cases, a1, delta);
        let c2 = certify(&cases, a2, delta);
        prop_assert!(c2.automation_rate >= c1.automation_rate, "alpha {a1}: {} > alpha {a2}: {}", c1.automation_rate, c2.automation_rate);
        if let (Some(t1), Some(t2)) = (c1.tau, c2.tau) {
            prop_assert!(t2 <= t1);
        }
    }

    #[test]
    fn a_larger_delta_never_automates_less(cases in cases(), alpha in 0.01f64..0.3, d1 in 0.01f64..0.3, extra in 0.0f64..0.3) {
        let d2 = (d1 + extra).min(0.99);
        prop_assert!(certify(&cases, alpha, d2).automation_rate >= certify(&cases, alpha, d1).automation_rate);
    }

    #[test]
    fn a_larger_budget_never_reviews_less(
        scores in prop::collection::vec(-1.0f64..1.0, 1..2000),
        b1 in 0.0f64..1.0,
        extra in 0.0f64..1.0,
        window in 1usize..300,
        calibrated in -1.0f64..1.0,
    ) {
        let b2 = (b1 + extra).min(1.0);
        let mut w1 = BudgetWindow::new(b1, window, calibrated);
        let mut w2 = BudgetWindow::new(b2, window, calibrated);
        let (mut r1, mut r2) = (0, 0);
        for &s in &scores {
            let (x1, x2) = (w1.review(s).0, w2.review(s).0);
            prop_assert!(!x1 || x2, "a case reviewed at budget {b1} was automated at {b2}");
            r1 += usize::from(x1);
            r2 += usize::from(x2);
        }
        prop_assert!(r2 >= r1);
    }
}
