//! Risk-controlled automation: the largest automation set whose selective error
//! is ≤ α with probability ≥ 1 − δ, found by fixed-sequence testing over a
//! descending confidence grid with exact binomial tails.
//!
//! Each threshold τ_j is a hypothesis H_j: "the error rate of cases with
//! confidence ≥ τ_j exceeds α". Given the n_j calibration cases above τ_j, their
//! errors are Binomial(n_j, risk), so `P(Binomial(n_j, α) ≤ e_j)` is a valid
//! p-value. Testing in a fixed order and stopping at the first non-rejection
//! controls the chance of any false certification at δ. The order must not
//! depend on the tested data, so the calibration split is halved: the grid comes
//! from one half (its distinct confidences from the top decile, or the 60th
//! largest, down; thinned), the tests use the other.

use super::spec::Certificate;
use crate::stats::binomial_cdf;

/// Most thresholds in the grid.
const MAX_GRID: usize = 200;

/// The sequence starts at the top 1/START_DIVISOR of the grid half, and at least
/// START_MIN cases down: a threshold above only a handful of cases cannot be
/// certified (with zero errors the p-value is `(1 − α)^n`; 60 cases certify
/// α = 0.05 at δ = 0.1 with up to one error), and testing it first would end the
/// sequence at once. The start depends on neither α nor δ, so a larger α (or δ)
/// never certifies less.
const START_DIVISOR: usize = 10;
const START_MIN: usize = 60;

/// One calibration case: the model's confidence and whether it erred.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub confidence: f64,
    pub error: bool,
}

/// Certifies a confidence threshold on `cases` (the calibration split in data set
/// order). Cases at even positions build the grid; odd positions are tested.
pub fn certify(cases: &[Scored], alpha: f64, delta: f64) -> Certificate {
    let grid: Vec<Scored> = cases.iter().step_by(2).copied().collect();
    let test: Vec<Scored> = cases.iter().skip(1).step_by(2).copied().collect();
    let mut c = certify_parts(&grid, &test, alpha, delta);
    c.method = "fixed-sequence testing, exact binomial tail; grid from even-position calibration cases (from the top decile or the 60th largest down), tests on odd-position cases".into();
    c
}

/// Certifies a confidence threshold with the grid built from `grid_cases` and the
/// hypotheses tested on `test_cases` (disjoint: the calibration split's fitting
/// and certification parts, divided by group).
pub fn certify_parts(
    grid_cases: &[Scored],
    test_cases: &[Scored],
    alpha: f64,
    delta: f64,
) -> Certificate {
    let grid_half: Vec<f64> = grid_cases.iter().map(|c| c.confidence).collect();
    let test_half: Vec<Scored> = test_cases.to_vec();
    let cases: Vec<Scored> = grid_cases.iter().chain(test_cases).copied().collect();
    // START_MIN counts *tested* cases: scaled to the grid part's size, since the
    // two parts need not be equal.
    let min_in_grid = (START_MIN * grid_half.len()).div_ceil(test_half.len().max(1));
    let start = grid_half
        .len()
        .div_ceil(START_DIVISOR)
        .max(min_in_grid)
        .min(grid_half.len());
    let grid = descending_grid(&grid_half, start);
    let mut certified: Option<(f64, usize, usize, f64)> = None;
    let mut steps = 0;
    for &tau in &grid {
        let (n, e) = test_half
            .iter()
            .filter(|c| c.confidence >= tau)
            .fold((0usize, 0usize), |(n, e), c| {
                (n + 1, e + usize::from(c.error))
            });
        let p = if n == 0 {
            1.0
        } else {
            binomial_cdf(e as u64, n as u64, alpha)
        };
        if p > delta {
            break;
        }
        steps += 1;
        certified = Some((tau, n, e, p));
    }
    let automation_rate = |tau: f64| {
        cases.iter().filter(|c| c.confidence >= tau).count() as f64 / cases.len().max(1) as f64
    };
    Certificate {
        alpha,
        delta,
        n_cal: test_half.len(),
        tau: certified.map(|c| c.0),
        automation_rate: certified.map_or(0.0, |c| automation_rate(c.0)),
        automated: certified.map_or(0, |c| c.1),
        errors: certified.map_or(0, |c| c.2),
        p_value: certified.map(|c| c.3),
        grid_size: grid.len(),
        certified_steps: steps,
        score: "confidence".into(),
        method: "fixed-sequence testing, exact binomial tail; grid from the calibration split's fitting part (from the top decile or the 60th largest down), tests on its certification part (divided by group)".into(),
    }
}

/// Distinct values in descending order, starting at the `skip_top`-th largest
/// (see [`START_FACTOR`]), thinned to at most [`MAX_GRID`] evenly spaced ones
/// (always keeping the first and the last).
fn descending_grid(values: &[f64], skip_top: usize) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| b.total_cmp(a));
    // Half the cases go to the grid, so skip_top tested cases ≈ skip_top grid cases.
    let start = skip_top.saturating_sub(1).min(v.len().saturating_sub(1));
    let mut v = v.split_off(start);
    v.dedup();
    if v.len() <= MAX_GRID {
        return v;
    }
    let step = (v.len() - 1) as f64 / (MAX_GRID - 1) as f64;
    (0..MAX_GRID)
        .map(|i| v[(i as f64 * step).round() as usize])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Confidence ~ U(0.5, 1) and P(error | c) = 1 − c: perfectly calibrated, so
    /// the true selective error at τ is (1 − τ) / 2.
    fn draw(n: usize, seed: u64) -> Vec<Scored> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let c: f64 = rng.gen_range(0.5..1.0);
                Scored {
                    confidence: c,
                    error: rng.gen::<f64>() < 1.0 - c,
                }
            })
            .collect()
    }

    #[test]
    fn certified_threshold_keeps_true_selective_error_under_alpha() {
        let (alpha, delta) = (0.1, 0.1);
        let mut violations = 0;
        let mut automated = 0.0;
        for seed in 0..200 {
            let cert = certify(&draw(1000, seed), alpha, delta);
            let tau = cert.tau.unwrap_or(1.0);
            let true_risk = (1.0 - tau) / 2.0;
            violations += usize::from(true_risk > alpha);
            automated += cert.automation_rate;
        }
        assert!(
            violations <= 20,
            "{violations} of 200 repetitions broke the guarantee (allowed: 200·δ = 20)"
        );
        // Not vacuous: the oracle τ = 0.8 automates 40%; the certificate, which
        // must hold in 90% of draws, gets about half of that (measured: 0.19).
        assert!(
            automated / 200.0 > 0.1,
            "mean automation {}",
            automated / 200.0
        );
    }

    #[test]
    fn no_threshold_when_errors_everywhere() {
        // Errors in blocks of 100 cases, independent of confidence and of position parity.
        let cases: Vec<Scored> = (0..1000)
            .map(|i| Scored {
                confidence: 0.5 + (i % 50) as f64 / 100.0,
                error: (i / 100) % 2 == 0,
            })
            .collect();
        let cert = certify(&cases, 0.05, 0.1);
        assert_eq!(cert.tau, None);
        assert_eq!(cert.automation_rate, 0.0);
        assert_eq!(cert.certified_steps, 0);
    }

    #[test]
    fn error_free_cases_are_certified() {
        let cases: Vec<Scored> = (0..1200)
            .map(|i| Scored {
                confidence: if i % 3 == 0 { 0.99 } else { 0.6 },
                error: i % 3 != 0 && (i / 2) % 2 == 0,
            })
            .collect();
        let cert = certify(&cases, 0.05, 0.1);
        assert_eq!(cert.tau, Some(0.99));
        assert!((cert.automation_rate - 1.0 / 3.0).abs() < 0.01);
        assert_eq!(cert.errors, 0);
    }
}
