//! The triage curve (Raghu et al., *The Algorithmic Automation Problem*): total
//! error over all cases when the top fraction by a score goes to a human and the
//! rest is automated. Automated cases cost the algorithm's error `E ∈ {0,1}`,
//! reviewed cases the human error `H = 1 − n_{y*}/N`.

/// Reviewed fractions 0, 0.05, …, 1.
pub fn default_fractions() -> Vec<f64> {
    (0..=20).map(|i| i as f64 / 20.0).collect()
}

/// Number of cases reviewed at `fraction` of `n`.
pub fn reviewed_count(fraction: f64, n: usize) -> usize {
    ((fraction * n as f64).round() as usize).min(n)
}

/// Total error (mean over cases) at each fraction when cases are reviewed in
/// descending `score` order (ties: lower index first).
pub fn curve(
    score: &[f64],
    algorithm_error: &[f64],
    human_error: &[f64],
    fractions: &[f64],
) -> Vec<f64> {
    let n = score.len();
    assert!(algorithm_error.len() == n && human_error.len() == n);
    if n == 0 {
        return vec![f64::NAN; fractions.len()];
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    // prefix[m] = Σ over the first m reviewed of (H − E): the change from reviewing them.
    let mut prefix = vec![0.0; n + 1];
    for (m, &i) in order.iter().enumerate() {
        prefix[m + 1] = prefix[m] + human_error[i] - algorithm_error[i];
    }
    let all_automated: f64 = algorithm_error.iter().sum();
    fractions
        .iter()
        .map(|&f| (all_automated + prefix[reviewed_count(f, n)]) / n as f64)
        .collect()
}

/// The expected curve of reviewing a uniformly random subset: linear between
/// all-automated and all-reviewed.
pub fn random_curve(algorithm_error: &[f64], human_error: &[f64], fractions: &[f64]) -> Vec<f64> {
    let n = algorithm_error.len().max(1) as f64;
    let e = algorithm_error.iter().sum::<f64>() / n;
    let h = human_error.iter().sum::<f64>() / n;
    fractions
        .iter()
        .map(|&f| {
            let m = reviewed_count(f, algorithm_error.len()) as f64 / n;
            (1.0 - m) * e + m * h
        })
        .collect()
}

/// The best any ranking can do: review in descending order of `E − H`.
pub fn oracle_curve(algorithm_error: &[f64], human_error: &[f64], fractions: &[f64]) -> Vec<f64> {
    let gain: Vec<f64> = algorithm_error
        .iter()
        .zip(human_error)
        .map(|(e, h)| e - h)
        .collect();
    curve(&gain, algorithm_error, human_error, fractions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_all_automated_and_all_reviewed() {
        let e = [1.0, 0.0, 0.0, 1.0];
        let h = [0.2, 0.1, 0.0, 0.3];
        let c = curve(&[0.3, 0.1, 0.2, 0.9], &e, &h, &[0.0, 1.0]);
        assert!((c[0] - 0.5).abs() < 1e-12);
        assert!((c[1] - 0.15).abs() < 1e-12);
    }

    #[test]
    fn reviews_highest_scores_first() {
        let e = [1.0, 0.0, 0.0, 1.0];
        let h = [0.0; 4];
        // Reviewing the top half by this score removes both algorithm errors.
        let c = curve(&[0.9, 0.1, 0.2, 0.8], &e, &h, &[0.5]);
        assert_eq!(c, vec![0.0]);
        let c = curve(&[0.1, 0.9, 0.8, 0.2], &e, &h, &[0.5]);
        assert_eq!(c, vec![0.5]);
    }

    #[test]
    fn oracle_never_worse_than_random_or_any_score() {
        let e = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let h = [0.5, 0.1, 0.0, 0.4, 0.0, 0.9];
        let f = default_fractions();
        let o = oracle_curve(&e, &h, &f);
        let r = random_curve(&e, &h, &f);
        let s = curve(&[0.6, 0.5, 0.4, 0.3, 0.2, 0.1], &e, &h, &f);
        for i in 0..f.len() {
            assert!(o[i] <= r[i] + 1e-12 && o[i] <= s[i] + 1e-12, "at {}", f[i]);
        }
    }
}
