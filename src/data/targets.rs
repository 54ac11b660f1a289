//! Per-case targets computed from the human label counts (docs/science.md): pairwise
//! disagreement `D`, any-disagreement `A`, human error `H`, and the majority label.
//!
//! These are the quantities every other module (training targets, eval, the review
//! queue's consensus) must agree on, so they live in one place.

/// Pairwise disagreement `D = 1 − Σ n_c(n_c−1) / (N(N−1))`.
///
/// The unbiased estimate of the probability that two different humans disagree.
/// `None` when fewer than two labels exist: one label says nothing about agreement.
pub fn pairwise_disagreement(counts: &[u32]) -> Option<f64> {
    let n: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if n < 2 {
        return None;
    }
    let agree: u64 = counts
        .iter()
        .map(|&c| u64::from(c) * u64::from(c).saturating_sub(1))
        .sum();
    Some(1.0 - agree as f64 / (n * (n - 1)) as f64)
}

/// Any-disagreement `A = 1[max_c n_c < N]`; `None` with fewer than two labels.
pub fn any_disagreement(counts: &[u32]) -> Option<bool> {
    let n: u32 = counts.iter().sum();
    if n < 2 {
        return None;
    }
    Some(counts.iter().copied().max().unwrap_or(0) < n)
}

/// Human error `H = 1 − n_{y*}/N`: the expected error of one random reviewer
/// against the reference label. `None` without labels or without a reference.
pub fn human_error(counts: &[u32], reference: Option<usize>) -> Option<f64> {
    let n: u32 = counts.iter().sum();
    let r = reference?;
    if n == 0 || r >= counts.len() {
        return None;
    }
    Some(1.0 - f64::from(counts[r]) / f64::from(n))
}

/// Majority label: the class with most votes, ties broken towards the lowest
/// class index (deterministic, and documented in the README). `None` without labels.
pub fn majority(counts: &[u32]) -> Option<usize> {
    let n: u32 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    let mut best = 0;
    for (k, &c) in counts.iter().enumerate() {
        if c > counts[best] {
            best = k;
        }
    }
    Some(best)
}

/// The annotators' empirical label distribution `n / N` (the soft label).
pub fn soft_label(counts: &[u32]) -> Option<Vec<f32>> {
    let n: u32 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    Some(counts.iter().map(|&c| c as f32 / n as f32).collect())
}

/// Whether the labels fall into more than one of the given class groups, e.g.
/// benign `{1,2,3}` versus malignant `{4,5}` malignancy ratings.
pub fn crosses_groups(counts: &[u32], groups: &[Vec<usize>]) -> bool {
    groups
        .iter()
        .filter(|g| g.iter().any(|&k| counts.get(k).copied().unwrap_or(0) > 0))
        .count()
        > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disagreement_of_two_labels() {
        // N=2: two labels that differ disagree with certainty; two equal ones never.
        assert_eq!(pairwise_disagreement(&[1, 1, 0]), Some(1.0));
        assert_eq!(pairwise_disagreement(&[0, 2, 0]), Some(0.0));
    }

    #[test]
    fn disagreement_is_unbiased_not_plug_in() {
        // counts (2,1): pairs agreeing = 2*1 = 2 of 3*2 = 6 ordered pairs -> D = 2/3,
        // where the plug-in 1 - (4/9 + 1/9) would say 4/9.
        let d = pairwise_disagreement(&[2, 1]).unwrap();
        assert!((d - 2.0 / 3.0).abs() < 1e-12);
        // counts (3,1,1): agree = 3*2 = 6 of 5*4 = 20 -> D = 0.7
        let d = pairwise_disagreement(&[3, 1, 1]).unwrap();
        assert!((d - 0.7).abs() < 1e-12);
    }

    #[test]
    fn unanimous_and_single_label() {
        assert_eq!(pairwise_disagreement(&[0, 0, 4]), Some(0.0));
        assert_eq!(any_disagreement(&[0, 0, 4]), Some(false));
        assert_eq!(any_disagreement(&[1, 0, 3]), Some(true));
        assert_eq!(pairwise_disagreement(&[0, 1, 0]), None);
        assert_eq!(any_disagreement(&[0, 0, 0]), None);
    }

    #[test]
    fn human_error_against_reference() {
        assert_eq!(human_error(&[3, 1], Some(0)), Some(0.25));
        assert_eq!(human_error(&[3, 1], Some(1)), Some(0.75));
        assert_eq!(human_error(&[0, 4], Some(1)), Some(0.0));
        assert_eq!(human_error(&[3, 1], None), None);
        assert_eq!(human_error(&[0, 0], Some(0)), None);
    }

    #[test]
    fn majority_breaks_ties_low() {
        assert_eq!(majority(&[1, 3, 3]), Some(1));
        assert_eq!(majority(&[2, 2]), Some(0));
        assert_eq!(majority(&[0, 0]), None);
    }

    #[test]
    fn group_crossing() {
        let groups = vec![vec![0, 1, 2], vec![3, 4]];
        assert!(!crosses_groups(&[1, 2, 1, 0, 0], &groups));
        assert!(crosses_groups(&[0, 0, 1, 1, 0], &groups));
        assert!(!crosses_groups(&[0, 0, 0, 2, 2], &groups));
    }
}
