//! The `system` policy: a certificate on the total error of the human–AI system
//! (automated cases *and* reviewed ones), with reviewers chosen per case.
//!
//! **Rule.** For a case with calibrated model error `â` and calibrated reviewer
//! error `ĥ`, a panel of k reviewers is predicted to err at `e_k = P(majority of
//! k errs)` (independent reviewers erring at `ĥ`). At a setting (t, λ) — a
//! routing threshold and a price per label — the best panel is
//! `k* = argmin_{1≤k≤k_max} e_k + λ·L_k` with `L_k` the expected labels of the
//! queue's process (k labels, then one more at a time while the reviewers hold no
//! strict majority, up to `max_labels`; `data::targets::queue_panel_binary`), and
//! the case is reviewed by k* reviewers iff `â > e_{k*} + λ·L_{k*} + t`.
//!
//! **Certificate** (Learn-then-Test, Angelopoulos et al. 2021). Per-case loss in
//! [0, 1]: `1[ŷ ≠ y*]` when automated, else the queue's exact error with k
//! reviewers drawn from that case's label distribution (`data::targets::queue_panel`;
//! without a reference, leave-one-reader-out against the other readers). Each
//! setting is a hypothesis "expected loss > α", tested with the Hoeffding–Bentkus
//! p-value on the certification part. The order of the tests comes from the
//! fitting part only: for each price λ (|Λ| of them, δ split equally —
//! Bonferroni), thresholds go from "review everything" towards "automate
//! everything", tested in sequence until the first failure (fixed-sequence
//! testing). Family-wise error ≤ δ, so *every* certified setting has total error
//! ≤ α with probability ≥ 1 − δ over the certification draw; among them the one
//! with the fewest labels per case (on the certification part) is served.
//!
//! What it does not promise: anything about a single case, about data unlike the
//! calibration data (drift — the audit monitor watches for that), or about labels
//! beyond the first k when reviewers tie (the queue asks more; they only help).

use serde::{Deserialize, Serialize};

use crate::data::targets::queue_panel_binary;
use crate::stats::binomial_cdf;

/// Prices per label tried (in units of error probability per label).
pub const PRICES: [f64; 6] = [0.0, 0.002, 0.005, 0.01, 0.02, 0.05];
/// Review shares the threshold grid steps through (100%, 99%, …, 0%).
const GRID_STEPS: usize = 100;

/// The served setting of a system policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SystemSetting {
    /// Routing threshold t on `â − (e_k + λ·k)`.
    pub threshold: f64,
    /// Price λ of one label.
    pub price: f64,
}

/// The guarantee of a `system` policy, as served at `GET /v1/models/{m}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SystemCertificate {
    /// Bound on the expected total error (automated + reviewed cases).
    pub alpha: f64,
    /// Allowed probability that the bound fails (over the calibration draw).
    pub delta: f64,
    /// Cases the hypotheses were tested on (the certification part).
    pub n_cert: usize,
    /// Cases the grid and calibrators were fitted on (the fitting part).
    pub n_fit: usize,
    /// The served setting; `None` when nothing was certified (every case is then
    /// reviewed by `k_max` reviewers).
    pub setting: Option<SystemSetting>,
    /// Most reviewers per case.
    pub k_max: u32,
    /// Most labels per case (the queue asks more while reviewers hold no strict
    /// majority); the losses and labels counted this process exactly.
    pub max_labels: u32,
    /// On the certification part, at the served setting: labels per case, share
    /// automated, mean total error, and the Hoeffding–Bentkus p-value.
    pub labels_per_case: f64,
    pub automation_rate: f64,
    pub total_error: f64,
    pub p_value: Option<f64>,
    /// Hypotheses in the grid and how many were certified.
    pub grid_size: usize,
    pub certified: usize,
    /// What the loss compares with (`reference label` or the leave-one-out majority).
    pub target: String,
    pub method: String,
}

/// How many reviewers the queue may use: a case routed to k ≤ `k_max` reviewers
/// resolves on a strict majority after k labels, else asks one more label at a
/// time up to `max_labels` (then adjudication).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panels {
    pub k_max: u32,
    pub max_labels: u32,
}

impl Panels {
    /// Predicted `(error, expected labels)` of k = 1..=k_max reviewers who each
    /// err with probability `h` (`data::targets::queue_panel_binary`).
    pub fn predicted(self, h: f64) -> Vec<(f64, f64)> {
        (1..=self.k_max.max(1))
            .map(|k| queue_panel_binary(h, k, self.max_labels))
            .collect()
    }
}

/// One calibration case as the system policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemCase {
    /// Calibrated model error `â`.
    pub model_error: f64,
    /// Predicted `(error, labels)` of k = 1..=k_max reviewers, from `ĥ`.
    pub predicted: Vec<(f64, f64)>,
    /// `loss[0]` = the model's error target, `loss[k]` = the queue's exact error
    /// with k reviewers on this case's label distribution.
    pub loss: Vec<f64>,
    /// `labels[k]`: expected labels the queue uses with k reviewers (`labels[0]` = 0).
    pub labels: Vec<f64>,
}

/// Reviewers a case gets at `setting`: 0 (automate) or the best panel size.
pub fn reviewers(
    model_error: f64,
    human_error: f64,
    setting: SystemSetting,
    panels: Panels,
) -> u32 {
    choose(model_error, &panels.predicted(human_error), setting)
}

fn choose(model_error: f64, predicted: &[(f64, f64)], setting: SystemSetting) -> u32 {
    let (k, cost) = best_panel(predicted, setting.price);
    if model_error > cost + setting.threshold {
        k
    } else {
        0
    }
}

/// The panel size minimising `e_k + λ·L_k` (error plus priced labels), and that cost.
fn best_panel(predicted: &[(f64, f64)], price: f64) -> (u32, f64) {
    predicted
        .iter()
        .enumerate()
        .map(|(i, &(e, l))| (i as u32 + 1, e + price * l))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((1, 1.0))
}

/// `â − (e_{k*} + λ·L_{k*})`: the routing score thresholded at t.
fn benefit(c: &SystemCase, price: f64) -> f64 {
    c.model_error - best_panel(&c.predicted, price).1
}

/// Mean loss, labels per case and automation share of `cases` at `setting`.
pub fn summarise(cases: &[SystemCase], setting: SystemSetting) -> (f64, f64, f64) {
    let n = cases.len().max(1) as f64;
    let (mut loss, mut labels, mut automated) = (0.0, 0.0, 0.0);
    for c in cases {
        let k = choose(c.model_error, &c.predicted, setting) as usize;
        loss += c.loss.get(k).copied().unwrap_or(1.0);
        labels += c.labels.get(k).copied().unwrap_or(k as f64);
        automated += f64::from(u8::from(k == 0));
    }
    (loss / n, labels / n, automated / n)
}

/// Hoeffding–Bentkus p-value for "mean of losses in [0, 1] > α" given the
/// observed mean `risk` over `n` cases (Bates et al. 2021, Prop. 5):
/// `min(exp(−n·h(min(risk, α), α)), e·P(Bin(n, α) ≤ ⌈n·risk⌉))`.
pub fn hb_p_value(risk: f64, n: usize, alpha: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let nf = n as f64;
    let r = risk.clamp(0.0, 1.0);
    let hoeffding = if r >= alpha {
        1.0
    } else {
        (-nf * kl_bernoulli(r, alpha)).exp()
    };
    let k = (nf * r - 1e-9).ceil().max(0.0) as u64;
    let bentkus = std::f64::consts::E * binomial_cdf(k, n as u64, alpha);
    hoeffding.min(bentkus).min(1.0)
}

/// `a·ln(a/b) + (1−a)·ln((1−a)/(1−b))`.
fn kl_bernoulli(a: f64, b: f64) -> f64 {
    let term = |x: f64, y: f64| if x <= 0.0 { 0.0 } else { x * (x / y).ln() };
    term(a, b) + term(1.0 - a, 1.0 - b)
}

/// The (1 − `delta`) upper confidence bound on the mean of losses in [0, 1]
/// whose observed mean is `risk` over `n` cases: the smallest α that the
/// Hoeffding–Bentkus test does not reject... inverted by bisection.
pub fn hb_upper_bound(risk: f64, n: usize, delta: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (risk.clamp(0.0, 1.0), 1.0f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if hb_p_value(risk, n, mid) <= delta {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Certifies a setting on `cert` with the grid ordered on `fit` (see the module
/// documentation). `target` names what the losses compare with.
pub fn certify(
    fit: &[SystemCase],
    cert: &[SystemCase],
    alpha: f64,
    delta: f64,
    panels: Panels,
    target: &str,
) -> SystemCertificate {
    let per_price = delta / PRICES.len() as f64;
    let mut certified: Vec<(SystemSetting, f64, f64, f64, f64)> = Vec::new();
    let mut grid_size = 0;
    for &price in &PRICES {
        for threshold in thresholds(fit, price) {
            grid_size += 1;
            let setting = SystemSetting { threshold, price };
            let (risk, labels, automated) = summarise(cert, setting);
            let p = hb_p_value(risk, cert.len(), alpha);
            if p > per_price {
                break;
            }
            certified.push((setting, risk, labels, automated, p));
        }
    }
    let best = certified
        .iter()
        .min_by(|a, b| a.2.total_cmp(&b.2).then(b.3.total_cmp(&a.3)))
        .copied();
    let (risk, labels, automated) = match best {
        Some((_, r, l, a, _)) => (r, l, a),
        None => {
            // Nothing certified: every case gets k_max reviewers.
            let k = panels.k_max as usize;
            let n = cert.len().max(1) as f64;
            let mean = |f: &dyn Fn(&SystemCase) -> f64| cert.iter().map(f).sum::<f64>() / n;
            (
                mean(&|c| c.loss.get(k).copied().unwrap_or(1.0)),
                mean(&|c| c.labels.get(k).copied().unwrap_or(k as f64)),
                0.0,
            )
        }
    };
    SystemCertificate {
        alpha,
        delta,
        n_cert: cert.len(),
        n_fit: fit.len(),
        setting: best.map(|b| b.0),
        k_max: panels.k_max,
        max_labels: panels.max_labels,
        labels_per_case: labels,
        automation_rate: automated,
        total_error: risk,
        p_value: best.map(|b| b.4),
        grid_size,
        certified: certified.len(),
        target: target.to_string(),
        method: format!(
            "Learn-then-Test: Hoeffding-Bentkus p-values on the certification part; for each of {} prices per label (delta split equally), fixed-sequence testing over thresholds ordered on the fitting part from review-all to automate-all; served: fewest labels per case among the certified",
            PRICES.len()
        ),
    }
}

/// Thresholds for one price, from "review everything" (−∞) up through the
/// fitting part's benefit quantiles, so review shares fall 100%, 99%, …, 0%.
fn thresholds(fit: &[SystemCase], price: f64) -> Vec<f64> {
    let mut b: Vec<f64> = fit.iter().map(|c| benefit(c, price)).collect();
    b.sort_by(f64::total_cmp);
    let mut out = vec![f64::NEG_INFINITY];
    if b.is_empty() {
        return out;
    }
    for step in 1..=GRID_STEPS {
        // Review share 1 − step/GRID_STEPS: review iff benefit > the quantile.
        let q = step as f64 / GRID_STEPS as f64;
        let i = ((q * b.len() as f64).ceil() as usize).clamp(1, b.len()) - 1;
        let t = b[i];
        if out.last().is_some_and(|&last| t <= last) {
            continue;
        }
        out.push(t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hb_p_value_behaves() {
        // Far below alpha: tiny p; at or above: not significant.
        assert!(hb_p_value(0.01, 2000, 0.05) < 1e-6);
        assert!(hb_p_value(0.05, 2000, 0.05) > 0.5);
        assert_eq!(hb_p_value(0.2, 100, 0.1), 1.0);
        // The upper bound lies above the mean and shrinks with n.
        let u1 = hb_upper_bound(0.04, 500, 0.05);
        let u2 = hb_upper_bound(0.04, 5000, 0.05);
        assert!(u1 > u2 && u2 > 0.04, "{u1} {u2}");
    }

    const PANELS: Panels = Panels {
        k_max: 3,
        max_labels: 5,
    };

    /// A population with known truth: `â` and `ĥ` are calibrated probabilities;
    /// the model errs with probability `â`, one reviewer with `ĥ`, panels by the
    /// binomial majority — so the true total error of any setting is known up to
    /// the large test sample's noise.
    fn population(n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<SystemCase> {
        use rand::Rng;
        (0..n)
            .map(|_| {
                let a: f64 = rng.gen_range(0.0f64..1.0).powi(3) * 0.8;
                let h: f64 = rng.gen_range(0.0f64..1.0).powi(2) * 0.25;
                let predicted = PANELS.predicted(h);
                let mut loss = vec![f64::from(u8::from(rng.gen::<f64>() < a))];
                loss.extend(predicted.iter().map(|p| p.0));
                let mut labels = vec![0.0];
                labels.extend(predicted.iter().map(|p| p.1));
                SystemCase {
                    model_error: a,
                    predicted,
                    loss,
                    labels,
                }
            })
            .collect()
    }

    #[test]
    fn certificate_holds_in_at_least_1_minus_delta_of_100_repetitions() {
        use rand::SeedableRng;
        let (alpha, delta) = (0.05, 0.1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let truth = population(200_000, &mut rng);
        let (mut violations, mut automated) = (0, 0.0);
        for _ in 0..100 {
            let fit = population(1500, &mut rng);
            let cert = population(1500, &mut rng);
            let c = certify(&fit, &cert, alpha, delta, PANELS, "reference label");
            let Some(setting) = c.setting else { continue };
            let (true_risk, _, auto) = summarise(&truth, setting);
            violations += usize::from(true_risk > alpha + 0.002);
            automated += auto;
        }
        eprintln!(
            "certificate failed in {violations}/100 repetitions; mean automation {:.3}",
            automated / 100.0
        );
        assert!(
            violations <= 10,
            "the certificate failed in {violations} of 100 repetitions (delta = {delta})"
        );
        // Not vacuous: most cases are automated (the model is usually sure).
        assert!(
            automated / 100.0 > 0.4,
            "mean automation {}",
            automated / 100.0
        );
    }

    #[test]
    fn reviewers_follow_the_rule() {
        let s = SystemSetting {
            threshold: 0.0,
            price: 0.01,
        };
        // A confident model: automate.
        assert_eq!(reviewers(0.001, 0.05, s, PANELS), 0);
        // A doubtful model, reliable reviewers: one reviewer suffices.
        assert_eq!(reviewers(0.5, 0.01, s, PANELS), 1);
        // Reviewers who err often: two (and a third when they split) are worth it.
        assert_eq!(reviewers(0.5, 0.2, s, PANELS), 2);
    }
}
