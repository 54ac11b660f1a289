//! The budget policy's online threshold: the `(1 − b)` quantile of the triage
//! scores of the last `window` cases, so the share sent to review stays at the
//! budget `b` even when the case mix drifts. Until the window has filled to
//! [`MIN_WINDOW`] scores, the calibrated threshold is used.

use std::collections::VecDeque;

/// Scores needed before the window's quantile replaces the calibrated threshold.
pub const MIN_WINDOW: usize = 50;

#[derive(Debug, Clone)]
pub struct BudgetWindow {
    review_fraction: f64,
    capacity: usize,
    calibrated: f64,
    recent: VecDeque<f64>,
    /// The same scores, kept sorted for the quantile.
    sorted: Vec<f64>,
}

impl BudgetWindow {
    pub fn new(review_fraction: f64, capacity: usize, calibrated: f64) -> Self {
        BudgetWindow {
            review_fraction,
            capacity: capacity.max(1),
            calibrated,
            recent: VecDeque::with_capacity(capacity),
            sorted: Vec::with_capacity(capacity),
        }
    }

    /// The threshold in force: review when score ≥ it.
    pub fn threshold(&self) -> f64 {
        if self.sorted.len() < MIN_WINDOW.min(self.capacity) {
            return self.calibrated;
        }
        upper_quantile(&self.sorted, self.review_fraction)
    }

    /// Decides for `score` against the current threshold, then adds it to the window.
    pub fn review(&mut self, score: f64) -> (bool, f64) {
        let tau = self.threshold();
        let review = self.review_fraction > 0.0 && score >= tau;
        if self.recent.len() == self.capacity {
            if let Some(old) = self.recent.pop_front() {
                let i = self.sorted.partition_point(|&v| v < old);
                self.sorted.remove(i);
            }
        }
        self.recent.push_back(score);
        let i = self.sorted.partition_point(|&v| v < score);
        self.sorted.insert(i, score);
        (review, tau)
    }
}

/// The threshold that puts the top `fraction` of `sorted` (ascending) at or
/// above it. `fraction = 0` gives +∞ (review nothing).
pub fn upper_quantile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() || fraction <= 0.0 {
        return f64::INFINITY;
    }
    let n = sorted.len();
    let take = ((fraction * n as f64).round() as usize).clamp(1, n);
    sorted[n - take]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn realized(window: &mut BudgetWindow, scores: impl Iterator<Item = f64>) -> f64 {
        let (mut n, mut reviewed) = (0usize, 0usize);
        for s in scores {
            n += 1;
            reviewed += usize::from(window.review(s).0);
        }
        reviewed as f64 / n as f64
    }

    #[test]
    fn stays_within_two_points_of_target_on_a_10k_stream() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for target in [0.05, 0.2, 0.5] {
            let mut w = BudgetWindow::new(target, 500, 0.0);
            let r = realized(&mut w, (0..10_000).map(|_| rng.gen::<f64>()));
            assert!((r - target).abs() <= 0.02, "target {target}: realized {r}");
        }
    }

    #[test]
    fn tracks_a_drifting_case_mix() {
        // Scores drift upwards by half their range over the stream; a fixed
        // calibrated threshold (0.8 for 20%) would review ~45% of the later cases.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut w = BudgetWindow::new(0.2, 500, 0.8);
        let r = realized(
            &mut w,
            (0..10_000).map(|i| rng.gen::<f64>() + i as f64 / 20_000.0),
        );
        assert!((r - 0.2).abs() <= 0.02, "realized {r}");
    }

    #[test]
    fn uses_calibrated_threshold_until_the_window_fills() {
        let mut w = BudgetWindow::new(0.1, 1000, 0.75);
        assert_eq!(w.review(0.8), (true, 0.75));
        assert_eq!(w.review(0.7), (false, 0.75));
        assert_eq!(upper_quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 3.0);
        assert_eq!(upper_quantile(&[1.0, 2.0], 0.0), f64::INFINITY);
    }
}
