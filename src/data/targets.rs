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

/// Share of the tied-majority weight that `class` gets: `1/#tied` when `class`
/// is among the classes with the most votes in `counts`, else 0. Ties are counted
/// fractionally rather than broken towards any class.
fn majority_share(counts: &[u32], class: usize) -> f64 {
    let top = counts.iter().copied().max().unwrap_or(0);
    if top == 0 {
        return 0.0;
    }
    let tied = counts.iter().filter(|&&c| c == top).count();
    if counts.get(class).copied() == Some(top) {
        1.0 / tied as f64
    } else {
        0.0
    }
}

/// The model's error target `1[ŷ ≠ y*]` for predicted class `predicted`:
/// - with a reference label, exactly that;
/// - without one, leave-one-reader-out: for each reader j, the model is scored
///   against the majority of the other N − 1 readers (ties counted
///   fractionally, 1/#tied), averaged over j. `None` with fewer than 2 labels.
///
/// Scoring against the majority of *all* N readers would let the readers who
/// agree with the model vote for their own reference.
pub fn model_error_target(
    counts: &[u32],
    reference: Option<usize>,
    predicted: usize,
) -> Option<f64> {
    if let Some(r) = reference {
        return (r < counts.len()).then(|| f64::from(u8::from(predicted != r)));
    }
    loo_average(counts, |others, _| 1.0 - majority_share(others, predicted))
}

/// One reviewer's error target: `H = 1 − n_{y*}/N` against a reference label;
/// without one, reader j against the majority of the other N − 1 readers (ties
/// fractional), averaged over j — unbiased where `1 − n_maj/N` (majority taken
/// from the same N readers) is biased low. `None` with fewer than 2 labels and
/// no reference.
pub fn human_error_target(counts: &[u32], reference: Option<usize>) -> Option<f64> {
    if reference.is_some() {
        return human_error(counts, reference);
    }
    loo_average(counts, |others, own| 1.0 - majority_share(others, own))
}

/// Averages `score(counts without reader j, reader j's label)` over the N readers.
fn loo_average(counts: &[u32], score: impl Fn(&[u32], usize) -> f64) -> Option<f64> {
    let n: u32 = counts.iter().sum();
    if n < 2 {
        return None;
    }
    let mut others = counts.to_vec();
    let mut total = 0.0;
    for (c, &nc) in counts.iter().enumerate() {
        if nc == 0 {
            continue;
        }
        others[c] -= 1;
        total += f64::from(nc) * score(&others, c);
        others[c] += 1;
    }
    Some(total / f64::from(n))
}

/// Most reviewers for which [`queue_panel`] is computed exactly.
pub const MAX_PANEL: u32 = 9;

/// Error and expected number of labels of a case routed to `k` reviewers in the
/// review queue, computed exactly from the case's label distribution: reviewers
/// are drawn independently from the readers' empirical distribution `n/N`; after
/// `k` labels a strict majority (more than half) resolves the case, else one more
/// label is asked, up to `max_labels`; still without one, it goes to adjudication,
/// modelled as a uniform pick among the tied leaders. Scored against the
/// reference label. Without one, the reference is the readers' majority with the
/// scored reader left out: for each reader j (weight 1/N), reader j is the first
/// reviewer, the others are drawn from the remaining readers, and the panel is
/// scored against those readers' majority (ties fractional). For k = 1 this is
/// exactly [`human_error_target`]; for k ≥ 2 the extra reviewers come from the
/// same readers as the reference, so it is optimistic when readers are few — the
/// `system` policy therefore caps k at 1 without a reference.
///
/// `None` when the case has no labels (or fewer than 2 without a reference) or
/// `k` is 0 or above [`MAX_PANEL`].
pub fn queue_panel(
    counts: &[u32],
    reference: Option<usize>,
    k: u32,
    max_labels: u32,
) -> Option<(f64, f64)> {
    if k == 0 || k > MAX_PANEL {
        return None;
    }
    let cap = max_labels.clamp(k, MAX_PANEL.max(k));
    let n: u32 = counts.iter().sum();
    match reference {
        Some(r) => {
            if n == 0 || r >= counts.len() {
                return None;
            }
            let p: Vec<f64> = counts
                .iter()
                .map(|&c| f64::from(c) / f64::from(n))
                .collect();
            let mut votes = vec![0u32; counts.len()];
            Some(sequential(&p, &mut votes, 0, k, cap, &|w| {
                f64::from(u8::from(w != r))
            }))
        }
        None => {
            if n < 2 {
                return None;
            }
            let mut others = counts.to_vec();
            let (mut err, mut labels) = (0.0, 0.0);
            for (c, &nc) in counts.iter().enumerate() {
                if nc == 0 {
                    continue;
                }
                others[c] -= 1;
                let m: u32 = others.iter().sum();
                let p: Vec<f64> = others
                    .iter()
                    .map(|&o| f64::from(o) / f64::from(m))
                    .collect();
                let mut votes = vec![0u32; counts.len()];
                votes[c] = 1;
                let (e, l) = sequential(&p, &mut votes, 1, k, cap, &|w| {
                    1.0 - majority_share(&others, w)
                });
                err += f64::from(nc) * e;
                labels += f64::from(nc) * l;
                others[c] += 1;
            }
            Some((err / f64::from(n), labels / f64::from(n)))
        }
    }
}

/// The queue's sequential panel from the state `votes` (`have` labels so far):
/// expected miss and expected total labels.
fn sequential(
    p: &[f64],
    votes: &mut [u32],
    have: u32,
    k: u32,
    cap: u32,
    miss: &dyn Fn(usize) -> f64,
) -> (f64, f64) {
    if have >= k {
        let top = votes.iter().copied().max().unwrap_or(0);
        if 2 * top > have {
            let winner = votes.iter().position(|&v| v == top).unwrap_or(0);
            return (miss(winner), f64::from(have));
        }
        if have >= cap {
            let tied: Vec<usize> = (0..votes.len()).filter(|&c| votes[c] == top).collect();
            let m: f64 = tied.iter().map(|&c| miss(c)).sum();
            return (m / tied.len() as f64, f64::from(have));
        }
    }
    let (mut err, mut labels) = (0.0, 0.0);
    for c in 0..p.len() {
        if p[c] <= 0.0 {
            continue;
        }
        votes[c] += 1;
        let (e, l) = sequential(p, votes, have + 1, k, cap, miss);
        votes[c] -= 1;
        err += p[c] * e;
        labels += p[c] * l;
    }
    (err, labels)
}

/// [`queue_panel`] for a reviewer who errs with probability `h` on a two-way
/// question (right or wrong): the policy's per-case prediction of a panel's
/// error and labels from `ĥ`.
pub fn queue_panel_binary(h: f64, k: u32, max_labels: u32) -> (f64, f64) {
    let h = if h.is_finite() {
        h.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let p = [1.0 - h, h];
    let cap = max_labels.clamp(k.max(1), MAX_PANEL.max(k));
    let mut votes = [0u32; 2];
    sequential(&p, &mut votes, 0, k.max(1), cap, &|w| {
        f64::from(u8::from(w != 0))
    })
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
    fn leave_one_out_targets() {
        // 2 vs 1 among three readers, model says the majority class 0:
        // the two class-0 readers leave {1,1} (tie: 1/2 credit), the class-1
        // reader leaves {2,0} (model right). Error = (2·0.5 + 0)/3 = 1/3.
        let e = model_error_target(&[2, 1], None, 0).unwrap();
        assert!((e - 1.0 / 3.0).abs() < 1e-12);
        // Unanimous readers: a model that agrees never errs, one that differs always.
        assert_eq!(model_error_target(&[0, 3], None, 1), Some(0.0));
        assert_eq!(model_error_target(&[0, 3], None, 0), Some(1.0));
        // Reference given: exactly 1[ŷ ≠ y*].
        assert_eq!(model_error_target(&[0, 3], Some(0), 0), Some(0.0));
        // Human error without reference, (2,1): class-0 readers face {1,1} (1/2
        // credit each), the class-1 reader faces {2,0} (wrong): (2·0.5 + 1)/3 = 2/3,
        // where 1 − n_maj/N would say 1/3.
        let h = human_error_target(&[2, 1], None).unwrap();
        assert!((h - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(human_error_target(&[1, 0], None), None);
    }

    #[test]
    fn queue_panel_is_exact() {
        // Three reviewers on a two-way question always hold a strict majority:
        // P(≥ 2 of 3 wrong) = 3q²(1−q) + q³ at q = 0.1, three labels.
        let (e3, l3) = queue_panel(&[9, 1], Some(0), 3, 5).unwrap();
        assert!((e3 - (3.0 * 0.01 * 0.9 + 0.001)).abs() < 1e-12);
        assert!((l3 - 3.0).abs() < 1e-12);
        // Without a reference, k = 1 is the leave-one-out human error.
        let (loo, _) = queue_panel(&[2, 1], None, 1, 5).unwrap();
        assert!((loo - human_error_target(&[2, 1], None).unwrap()).abs() < 1e-12);
        assert_eq!(queue_panel(&[2, 1], Some(0), 0, 5), None);
        assert_eq!(queue_panel(&[2, 1], Some(0), MAX_PANEL + 1, 5), None);
    }

    #[test]
    fn queue_panel_follows_the_queue() {
        // One reviewer: error H, one label.
        let (e, l) = queue_panel(&[9, 1], Some(0), 1, 5).unwrap();
        assert!((e - 0.1).abs() < 1e-12 && (l - 1.0).abs() < 1e-12);
        // Two reviewers on a two-way question: agree (resolved at 2) or split
        // (a third decides): the error of a majority of three, 2 + 2q(1−q) labels.
        let q: f64 = 0.1;
        let (e, l) = queue_panel(&[9, 1], Some(0), 2, 5).unwrap();
        assert!(
            (e - (3.0 * q * q * (1.0 - q) + q.powi(3))).abs() < 1e-12,
            "{e}"
        );
        assert!((l - (2.0 + 2.0 * q * (1.0 - q))).abs() < 1e-12, "{l}");
        let (eb, lb) = queue_panel_binary(q, 2, 5);
        assert!((eb - e).abs() < 1e-12 && (lb - l).abs() < 1e-12);
        // Unanimous readers: never wrong, exactly k labels.
        assert_eq!(queue_panel(&[0, 5, 0], Some(1), 3, 5), Some((0.0, 3.0)));
        // Without a reference, k = 1 is the leave-one-out human error.
        let (e, l) = queue_panel(&[2, 1], None, 1, 5).unwrap();
        assert!((e - human_error_target(&[2, 1], None).unwrap()).abs() < 1e-12);
        assert_eq!(l, 1.0);
    }

    #[test]
    fn group_crossing() {
        let groups = vec![vec![0, 1, 2], vec![3, 4]];
        assert!(!crosses_groups(&[1, 2, 1, 0, 0], &groups));
        assert!(crosses_groups(&[0, 0, 1, 1, 0], &groups));
        assert!(!crosses_groups(&[0, 0, 0, 2, 2], &groups));
    }
}
