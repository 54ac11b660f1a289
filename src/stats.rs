//! Exact binomial tail probabilities and Clopper–Pearson intervals, the
//! statistics behind risk-controlled certificates and audit monitoring.

/// `ln C(n, k)` via `ln Γ`.
fn ln_choose(n: u64, k: u64) -> f64 {
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

/// Lanczos approximation of `ln Γ(x)` for `x > 0` (|error| < 1e-13 here).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps accuracy near zero.
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Above this many terms the binomial CDF is computed through the regularized
/// incomplete beta function instead of term by term, so the work stays bounded
/// whatever the counts (an audit report can carry millions of outcomes).
const EXACT_SUM_MAX_TERMS: u64 = 2_000;

/// `P(X ≤ k)` for `X ~ Binomial(n, p)`: summed exactly in log space for small
/// `k`, else `I_{1−p}(n − k, k + 1)`.
pub fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    if k >= EXACT_SUM_MAX_TERMS {
        return regularized_incomplete_beta((n - k) as f64, k as f64 + 1.0, 1.0 - p);
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let terms: Vec<f64> = (0..=k)
        .map(|i| ln_choose(n, i) + i as f64 * lp + (n - i) as f64 * lq)
        .collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln())
        .exp()
        .min(1.0)
}

/// `I_x(a, b)`, the regularized incomplete beta function, by its continued
/// fraction (modified Lentz), using the symmetry `I_x(a,b) = 1 − I_{1−x}(b,a)`
/// on the side where the fraction converges fast.
pub fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        (ln_front.exp() * beta_continued_fraction(a, b, x) / a).clamp(0.0, 1.0)
    } else {
        (1.0 - ln_front.exp() * beta_continued_fraction(b, a, 1.0 - x) / b).clamp(0.0, 1.0)
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    // Converges in O(sqrt(max(a, b))) steps on this side; bounded regardless.
    const MAX_STEPS: u32 = 1_000_000;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=MAX_STEPS {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// `P(X ≥ k)` for `X ~ Binomial(n, p)`.
pub fn binomial_sf(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    1.0 - binomial_cdf(k - 1, n, p)
}

/// Two-sided Clopper–Pearson interval for `x` successes in `n` trials at
/// confidence `1 − alpha`. `(0, 1)` when `n = 0`.
pub fn clopper_pearson(x: u64, n: u64, alpha: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let lower = if x == 0 {
        0.0
    } else {
        // smallest p with P(X ≥ x) ≥ α/2; P(X ≥ x) grows with p
        bisect(|p| binomial_sf(x, n, p) >= alpha / 2.0)
    };
    let upper = if x == n {
        1.0
    } else {
        // largest p with P(X ≤ x) ≥ α/2; P(X ≤ x) falls with p
        1.0 - bisect(|q| binomial_cdf(x, n, 1.0 - q) >= alpha / 2.0)
    };
    (lower, upper)
}

/// Smallest `p ∈ [0,1]` where the monotone predicate turns true.
fn bisect(pred: impl Fn(f64) -> bool) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..64 {
        let mid = (lo + hi) / 2.0;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Error of a majority vote of `k` independent reviewers who each err with
/// probability `h` (errors assumed to agree on one wrong answer, the conservative
/// case; a tie is broken by a coin).
pub fn majority_vote_error(k: u32, h: f64) -> f64 {
    let h = h.clamp(0.0, 1.0);
    if k <= DIRECT_PANEL_MAX {
        return majority_vote_error_direct(k, h);
    }
    let k64 = u64::from(k);
    let half = k64 / 2;
    if k % 2 == 1 {
        binomial_sf(half + 1, k64, h)
    } else {
        let tie = binomial_cdf(half, k64, h) - binomial_cdf(half.saturating_sub(1), k64, h);
        binomial_sf(half + 1, k64, h) + 0.5 * tie
    }
}

/// Largest panel whose majority-vote error is summed term by term. Policies
/// evaluate it for every case they decide (k ≤ `k_max`, single digits), where
/// the log-gamma route cost more than the rest of the decision.
const DIRECT_PANEL_MAX: u32 = 32;

/// [`majority_vote_error`] for small `k`: the binomial terms built by products
/// (C(k, i) is exact in `f64` up to k = 32), no logarithms.
fn majority_vote_error_direct(k: u32, h: f64) -> f64 {
    let (ki, q) = (k as i32, 1.0 - h);
    let mut choose = 1.0f64; // C(k, i)
    let mut error = 0.0;
    for i in 0..=ki {
        if i > 0 {
            choose = choose * f64::from(ki - i + 1) / f64::from(i);
        }
        let term = choose * h.powi(i) * q.powi(ki - i);
        if 2 * i > ki {
            error += term;
        } else if 2 * i == ki {
            error += 0.5 * term;
        }
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_panels_summed_directly_agree_with_the_binomial_route() {
        for k in 1..=DIRECT_PANEL_MAX {
            for &h in &[0.0, 1e-6, 0.03, 0.2, 0.5, 0.77, 1.0] {
                let k64 = u64::from(k);
                let half = k64 / 2;
                let reference = if k % 2 == 1 {
                    binomial_sf(half + 1, k64, h)
                } else {
                    let tie =
                        binomial_cdf(half, k64, h) - binomial_cdf(half.saturating_sub(1), k64, h);
                    binomial_sf(half + 1, k64, h) + 0.5 * tie
                };
                let direct = majority_vote_error(k, h);
                assert!(
                    (direct - reference).abs() < 1e-12,
                    "k {k}, h {h}: {direct} vs {reference}"
                );
            }
        }
        assert_eq!(majority_vote_error(1, 0.2), 0.2);
        assert!((majority_vote_error(3, 0.2) - (3.0 * 0.04 * 0.8 + 0.008)).abs() < 1e-15);
    }

    #[test]
    fn incomplete_beta_agrees_with_the_exact_sum() {
        // Below the switch both paths are available: they must agree.
        for &(k, n, p) in &[
            (3u64, 10u64, 0.3f64),
            (40, 100, 0.5),
            (700, 1500, 0.45),
            (5, 400, 0.02),
        ] {
            let exact = {
                let (lp, lq) = (p.ln(), (1.0 - p).ln());
                (0..=k)
                    .map(|i| (ln_choose(n, i) + i as f64 * lp + (n - i) as f64 * lq).exp())
                    .sum::<f64>()
            };
            let beta = regularized_incomplete_beta((n - k) as f64, k as f64 + 1.0, 1.0 - p);
            assert!(
                (exact - beta).abs() < 1e-9,
                "k={k} n={n} p={p}: {exact} vs {beta}"
            );
        }
    }

    #[test]
    fn huge_counts_stay_fast_and_sane() {
        // 10^12 audited cases, half wrong: the interval hugs 0.5 (a term-by-term
        // sum would run for hours here).
        let (lo, hi) = clopper_pearson(500_000_000_000, 1_000_000_000_000, 0.05);
        assert!(lo < 0.5 && hi > 0.5 && hi - lo < 1e-5, "({lo}, {hi})");
        let (lo, hi) = clopper_pearson(1_000_000, 2_000_000, 0.05);
        assert!(
            (lo - 0.4993).abs() < 1e-3 && (hi - 0.5007).abs() < 1e-3,
            "({lo}, {hi})"
        );
    }

    #[test]
    fn binomial_known_values() {
        // P(X <= 1), n=3, p=0.5 = (1 + 3)/8
        assert!((binomial_cdf(1, 3, 0.5) - 0.5).abs() < 1e-12);
        assert!((binomial_cdf(0, 10, 0.1) - 0.9f64.powi(10)).abs() < 1e-12);
        assert!((binomial_sf(2, 4, 0.5) - 11.0 / 16.0).abs() < 1e-12);
        assert_eq!(binomial_cdf(5, 5, 0.3), 1.0);
        // large n stays finite and sane: mean 500
        let c = binomial_cdf(500, 1000, 0.5);
        assert!((c - 0.5126).abs() < 1e-3, "{c}");
    }

    #[test]
    fn clopper_pearson_known_values() {
        // Textbook: 0 of 10 -> upper = 1 - 0.025^(1/10) = 0.3085
        let (l, u) = clopper_pearson(0, 10, 0.05);
        assert_eq!(l, 0.0);
        assert!((u - 0.308_5).abs() < 1e-3, "{u}");
        // 5 of 10 -> (0.1871, 0.8129)
        let (l, u) = clopper_pearson(5, 10, 0.05);
        assert!(
            (l - 0.187_1).abs() < 1e-3 && (u - 0.812_9).abs() < 1e-3,
            "{l} {u}"
        );
        assert_eq!(clopper_pearson(0, 0, 0.05), (0.0, 1.0));
    }

    #[test]
    fn majority_vote_helps_when_reviewers_are_good() {
        assert!((majority_vote_error(1, 0.2) - 0.2).abs() < 1e-12);
        // 3 reviewers at 0.2: P(>=2 wrong) = 3*0.04*0.8 + 0.008 = 0.104
        assert!((majority_vote_error(3, 0.2) - 0.104).abs() < 1e-12);
        // 2 reviewers: both wrong 0.04 + half of one-wrong 0.32/2 = 0.2 (no gain)
        assert!((majority_vote_error(2, 0.2) - 0.2).abs() < 1e-12);
        assert!(majority_vote_error(5, 0.2) < majority_vote_error(3, 0.2));
    }
}
