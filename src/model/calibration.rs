//! Post-hoc calibrators of the per-case estimates the policies act on, fitted on
//! the fitting part of the calibration split (never the certification part) and
//! stored in `model.json` under `calibration`:
//!
//! - `model_error`: `â`, from the score `1 − max p` to the chance that the
//!   predicted class is wrong *against the reference* (or, without one, against
//!   the majority of the other readers — `data::targets::model_error_target`);
//! - `disagreement`: `D̂`, from the DUP head to the pairwise disagreement `D`;
//! - `human_error`: `ĥ`, from the human-error head (or, without that head, from
//!   the DUP head) to one reviewer's error (`human_error_target`).
//!
//! Each is an isotonic (pool-adjacent-violators) regression, stored as its block
//! means and interpolated linearly between block centres, so it is monotone, keeps
//! the ranking of distinct scores (ROC-AUCs are unchanged), and answers in
//! O(log blocks).

use serde::{Deserialize, Serialize};

/// A monotone non-decreasing map from a raw score to a calibrated probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isotonic {
    /// Block centres (mean raw score of each block), increasing.
    pub x: Vec<f64>,
    /// Block means of the target, non-decreasing, in [0, 1].
    pub y: Vec<f64>,
    /// Cases the map was fitted on.
    pub n: usize,
}

impl Isotonic {
    /// Fits the isotonic regression of `targets` on `scores` (equal lengths, at
    /// least one pair; non-finite pairs are skipped). `None` with no usable pair.
    pub fn fit(scores: &[f64], targets: &[f64]) -> Option<Isotonic> {
        let mut pairs: Vec<(f64, f64)> = scores
            .iter()
            .zip(targets)
            .filter(|(s, t)| s.is_finite() && t.is_finite())
            .map(|(&s, &t)| (s, t.clamp(0.0, 1.0)))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Blocks: (sum of x, sum of y, weight). Equal scores start in one block.
        let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
        for (s, t) in &pairs {
            blocks.push((*s, *t, 1.0));
            // Merge while the last block's mean is below the previous one's, or
            // the two hold the same score.
            while blocks.len() > 1 {
                let (xb, yb, wb) = blocks[blocks.len() - 1];
                let (xa, ya, wa) = blocks[blocks.len() - 2];
                let same_score = (xa / wa - xb / wb).abs() == 0.0;
                if ya / wa >= yb / wb || same_score {
                    blocks.pop();
                    let last = blocks.len() - 1;
                    blocks[last] = (xa + xb, ya + yb, wa + wb);
                } else {
                    break;
                }
            }
        }
        Some(Isotonic {
            x: blocks.iter().map(|b| b.0 / b.2).collect(),
            y: blocks.iter().map(|b| b.1 / b.2).collect(),
            n: pairs.len(),
        })
    }

    /// The calibrated value at `score` (clamped to the end blocks outside them).
    pub fn apply(&self, score: f64) -> f64 {
        if !score.is_finite() || self.x.is_empty() {
            return score;
        }
        let j = self.x.partition_point(|&x| x < score);
        if j == 0 {
            return self.y[0];
        }
        if j == self.x.len() {
            return self.y[j - 1];
        }
        let (x0, x1, y0, y1) = (self.x[j - 1], self.x[j], self.y[j - 1], self.y[j]);
        if x1 <= x0 {
            return y1;
        }
        y0 + (y1 - y0) * (score - x0) / (x1 - x0)
    }

    pub fn validate(&self, what: &str) -> Result<(), String> {
        let ok = !self.x.is_empty()
            && self.x.len() == self.y.len()
            && self.x.iter().all(|v| v.is_finite())
            && self.y.iter().all(|v| (0.0..=1.0).contains(v))
            && self.x.windows(2).all(|w| w[0] < w[1])
            && self.y.windows(2).all(|w| w[0] <= w[1]);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "calibration.{what}: x must increase, y must be non-decreasing in [0, 1], equal lengths"
            ))
        }
    }
}

/// The bundle's calibrators and where they were fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrators {
    pub model_error: Isotonic,
    pub disagreement: Isotonic,
    pub human_error: Isotonic,
    /// What `model_error` and `human_error` were calibrated against:
    /// `reference` or `leave-one-reader-out majority`.
    pub target: String,
    /// The cases they were fitted on (the calibration split's fitting part).
    pub fitted_on: String,
}

impl Calibrators {
    pub fn validate(&self) -> Result<(), String> {
        self.model_error.validate("model_error")?;
        self.disagreement.validate("disagreement")?;
        self.human_error.validate("human_error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_violators_and_interpolates() {
        let iso = Isotonic::fit(&[0.1, 0.2, 0.3, 0.4], &[0.0, 1.0, 0.0, 1.0]).unwrap();
        // (0.2, 1) and (0.3, 0) pool to 0.5 at 0.25.
        assert_eq!(iso.x, vec![0.1, 0.25, 0.4]);
        assert_eq!(iso.y, vec![0.0, 0.5, 1.0]);
        assert!((iso.apply(0.175) - 0.25).abs() < 1e-12);
        assert_eq!(iso.apply(-5.0), 0.0);
        assert_eq!(iso.apply(5.0), 1.0);
        assert!(iso.validate("t").is_ok());
    }

    #[test]
    fn monotone_on_random_data() {
        let s: Vec<f64> = (0..500).map(|i| ((i * 37) % 101) as f64 / 100.0).collect();
        let t: Vec<f64> = s
            .iter()
            .map(|&v| if (v * 1000.0) as u32 % 3 == 0 { 1.0 } else { v })
            .collect();
        let iso = Isotonic::fit(&s, &t).unwrap();
        assert!(iso.validate("t").is_ok());
        let mut last = f64::NEG_INFINITY;
        for i in 0..=100 {
            let v = iso.apply(i as f64 / 100.0);
            assert!(v >= last);
            last = v;
        }
        // The fit preserves the mean of the targets.
        let mean_t = t.iter().sum::<f64>() / t.len() as f64;
        let weighted: f64 = s.iter().map(|&v| iso.apply(v)).sum::<f64>() / s.len() as f64;
        assert!((mean_t - weighted).abs() < 0.02, "{mean_t} {weighted}");
    }
}
