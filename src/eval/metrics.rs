//! Scalar metrics: ROC-AUC and ROC curves, Spearman correlation, calibration
//! (ECE, reliability bins) and log loss. Pure functions over slices.

use serde::Serialize;

/// Average ranks (1-based), ties sharing the mean of their positions.
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            out[o] = rank;
        }
        i = j + 1;
    }
    out
}

/// ROC-AUC of `scores` for detecting `positive` (Mann–Whitney, ties count ½).
/// `None` when either class is empty.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), positive.len());
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let r = ranks(scores);
    let rank_sum: f64 = r
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(r, _)| r)
        .sum();
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// ROC curve points `(false positive rate, true positive rate)`, from (0,0) to
/// (1,1), one point per distinct score threshold.
pub fn roc_curve(scores: &[f64], positive: &[bool]) -> Vec<(f64, f64)> {
    let n_pos = positive.iter().filter(|&&p| p).count().max(1) as f64;
    let n_neg = (positive.len() - positive.iter().filter(|&&p| p).count()).max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (idx, &i) in order.iter().enumerate() {
        if positive[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = order
            .get(idx + 1)
            .is_none_or(|&next| scores[next] != scores[i]);
        if last_of_tie {
            points.push((fp / n_neg, tp / n_pos));
        }
    }
    points
}

/// Spearman rank correlation; `None` when fewer than 2 values or one side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    assert_eq!(a.len(), b.len());
    if a.len() < 2 {
        return None;
    }
    pearson(&ranks(a), &ranks(b))
}

pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    if va <= 0.0 || vb <= 0.0 {
        return None;
    }
    Some(cov / (va * vb).sqrt())
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_confidence: f64,
    pub accuracy: f64,
}

/// Equal-width confidence bins over [0, 1]; empty bins are kept with count 0.
pub fn reliability_bins(confidence: &[f64], correct: &[bool], bins: usize) -> Vec<ReliabilityBin> {
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * bins as f64) as usize).min(bins - 1);
        sums[b].0 += 1;
        sums[b].1 += c;
        sums[b].2 += usize::from(ok);
    }
    sums.iter()
        .enumerate()
        .map(|(b, &(n, conf, hits))| ReliabilityBin {
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            count: n,
            mean_confidence: if n > 0 { conf / n as f64 } else { 0.0 },
            accuracy: if n > 0 { hits as f64 / n as f64 } else { 0.0 },
        })
        .collect()
}

/// Expected calibration error: the count-weighted mean gap between confidence and
/// accuracy over the bins.
pub fn expected_calibration_error(bins: &[ReliabilityBin]) -> f64 {
    let total: usize = bins.iter().map(|b| b.count).sum();
    if total == 0 {
        return f64::NAN;
    }
    bins.iter()
        .map(|b| b.count as f64 * (b.mean_confidence - b.accuracy).abs())
        .sum::<f64>()
        / total as f64
}

/// Mean negative log-likelihood of the probabilities given to the true classes,
/// clamped at 1e-12 so one confident miss cannot make it infinite.
pub fn mean_nll(true_class_probs: &[f64]) -> f64 {
    if true_class_probs.is_empty() {
        return f64::NAN;
    }
    true_class_probs
        .iter()
        .map(|p| -p.max(1e-12).ln())
        .sum::<f64>()
        / true_class_probs.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_reversed_and_constant_scores() {
        let pos = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &pos), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &pos), Some(0.0));
        assert_eq!(roc_auc(&[0.5; 4], &pos), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn auc_counts_ties_as_half() {
        // pos {0.5, 0.9}, neg {0.5, 0.1}: pairs (0.5,0.5)=½, (0.5,0.1)=1, (0.9,·)=2 -> 3.5/4
        let auc = roc_auc(&[0.5, 0.9, 0.5, 0.1], &[true, true, false, false]).unwrap();
        assert!((auc - 0.875).abs() < 1e-12);
    }

    #[test]
    fn roc_curve_ends_at_corners_and_integrates_to_auc() {
        let s = [0.3, 0.7, 0.7, 0.1, 0.9, 0.4];
        let p = [false, true, false, false, true, true];
        let pts = roc_curve(&s, &p);
        assert_eq!(pts[0], (0.0, 0.0));
        assert_eq!(*pts.last().unwrap(), (1.0, 1.0));
        let area: f64 = pts
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        assert!((area - roc_auc(&s, &p).unwrap()).abs() < 1e-12);
    }

    #[test]
    fn spearman_known_values() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // monotone but non-linear is still 1
        let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 1000.0]).unwrap();
        assert!((r - 1.0).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn ece_zero_when_calibrated_and_gap_otherwise() {
        let bins = reliability_bins(&[0.75; 4], &[true, true, true, false], 10);
        assert!(expected_calibration_error(&bins).abs() < 1e-12);
        let bins = reliability_bins(&[0.9, 0.9], &[false, false], 10);
        assert!((expected_calibration_error(&bins) - 0.9).abs() < 1e-12);
        assert_eq!(bins.len(), 10);
    }

    #[test]
    fn nll_known_value_and_clamp() {
        assert!((mean_nll(&[1.0, (-2.0f64).exp()]) - 1.0).abs() < 1e-12);
        assert!(mean_nll(&[0.0]).is_finite());
    }
}
