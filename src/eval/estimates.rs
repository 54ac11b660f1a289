//! How well the per-case estimates the policies act on match what happened:
//! reliability bins and Brier scores of `â` (model error), `D̂` (pairwise
//! disagreement) and `ĥ` (one reviewer's error) against their targets
//! (`data::targets`: the reference, or leave-one-reader-out without one).

use serde::Serialize;

use super::CaseResult;
use crate::data::targets::{human_error_target, model_error_target, pairwise_disagreement};
use crate::data::Dataset;

/// Bins of the reliability diagrams.
const BINS: usize = 10;

/// One bin of a reliability diagram: cases whose estimate falls in `[lower, upper)`.
#[derive(Debug, Clone, Serialize)]
pub struct Bin {
    pub lower: f64,
    pub upper: f64,
    pub n: usize,
    pub mean_estimate: f64,
    pub mean_observed: f64,
}

/// One estimate against its target.
#[derive(Debug, Clone, Serialize)]
pub struct EstimateCalibration {
    /// Cases with a target.
    pub n: usize,
    /// Mean squared difference between estimate and target.
    pub brier: Option<f64>,
    pub mean_estimate: Option<f64>,
    pub mean_observed: Option<f64>,
    /// Equal-width bins over [0, 1] (empty bins left out).
    pub bins: Vec<Bin>,
}

/// `report.json`'s `calibration`.
#[derive(Debug, Clone, Serialize)]
pub struct Estimates {
    pub model_error: EstimateCalibration,
    pub disagreement: EstimateCalibration,
    pub human_error: EstimateCalibration,
}

pub fn estimates(cases: &[CaseResult], data: &Dataset) -> Estimates {
    let (mut a, mut d, mut h) = (Vec::new(), Vec::new(), Vec::new());
    for c in cases {
        let counts = data.counts(c.index);
        let p = &c.prediction;
        if let Some(t) = model_error_target(counts, c.reference, p.class()) {
            a.push((f64::from(p.algorithm_error()), t));
        }
        if let Some(t) = pairwise_disagreement(counts) {
            d.push((f64::from(p.disagreement), t));
        }
        if let Some(t) = human_error_target(counts, c.reference) {
            h.push((f64::from(p.estimated_human_error()), t));
        }
    }
    Estimates {
        model_error: calibration(&a),
        disagreement: calibration(&d),
        human_error: calibration(&h),
    }
}

fn calibration(pairs: &[(f64, f64)]) -> EstimateCalibration {
    let n = pairs.len();
    let mean =
        |f: fn(&(f64, f64)) -> f64| (n > 0).then(|| pairs.iter().map(f).sum::<f64>() / n as f64);
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); BINS];
    for &(e, t) in pairs {
        let b = ((e.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        sums[b].0 += 1;
        sums[b].1 += e;
        sums[b].2 += t;
    }
    EstimateCalibration {
        n,
        brier: mean(|&(e, t)| (e - t).powi(2)),
        mean_estimate: mean(|p| p.0),
        mean_observed: mean(|p| p.1),
        bins: sums
            .iter()
            .enumerate()
            .filter(|(_, s)| s.0 > 0)
            .map(|(i, s)| Bin {
                lower: i as f64 / BINS as f64,
                upper: (i + 1) as f64 / BINS as f64,
                n: s.0,
                mean_estimate: s.1 / s.0 as f64,
                mean_observed: s.2 / s.0 as f64,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brier_and_bins() {
        let c = calibration(&[(0.05, 0.0), (0.05, 0.0), (0.95, 1.0), (0.95, 0.0)]);
        assert_eq!(c.n, 4);
        assert!((c.brier.unwrap() - (0.0025 * 3.0 + 0.9025) / 4.0).abs() < 1e-12);
        assert_eq!(c.bins.len(), 2);
        assert_eq!(c.bins[1].n, 2);
        assert!((c.bins[1].mean_observed - 0.5).abs() < 1e-12);
    }
}
