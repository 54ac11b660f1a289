//! Temperature scaling (Guo et al., 2017): one scalar `T` dividing the class
//! logits, fitted on the calibration split to minimise the cross-entropy against
//! the annotators' label distribution. It changes confidence, never the ranking.

use crate::model::predictor::RawOutputs;

const LOG_T_RANGE: (f64, f64) = (-3.0, 3.0); // T in [0.05, 20]

/// Fits `T` by golden-section search on `ln T`. `soft_targets[i]` is case i's
/// label distribution (K values).
pub fn fit(raw: &RawOutputs, soft_targets: &[Vec<f32>]) -> f64 {
    if raw.is_empty() {
        return 1.0;
    }
    let loss = |log_t: f64| mean_soft_ce(raw, soft_targets, log_t.exp());
    let (mut a, mut b) = LOG_T_RANGE;
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (loss(c), loss(d));
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = loss(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = loss(d);
        }
    }
    ((a + b) / 2.0).exp()
}

pub fn mean_soft_ce(raw: &RawOutputs, soft_targets: &[Vec<f32>], temperature: f64) -> f64 {
    let total: f64 = soft_targets
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let p = raw.probabilities(i, temperature);
            q.iter()
                .zip(&p)
                .map(|(&q, &p)| -f64::from(q) * f64::from(p).max(1e-12).ln())
                .sum::<f64>()
        })
        .sum();
    total / soft_targets.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_temperature() {
        // Logits that are 3x too confident for the true label distribution.
        let true_logits = [[1.0f32, 0.0], [0.0, 0.5], [0.3, -0.3], [-1.0, 1.0]];
        let mut logits = Vec::new();
        let mut targets = Vec::new();
        for z in true_logits {
            logits.extend(z.iter().map(|v| v * 3.0));
            let e: Vec<f64> = z.iter().map(|&v| f64::from(v).exp()).collect();
            let s: f64 = e.iter().sum();
            targets.push(e.iter().map(|v| (v / s) as f32).collect());
        }
        let raw = RawOutputs {
            member_logits: vec![logits],
            disagreement: vec![0.0; 4],
            human_error: None,
            num_classes: 2,
        };
        let t = fit(&raw, &targets);
        assert!((t - 3.0).abs() < 1e-3, "{t}");
    }
}
