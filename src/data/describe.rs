//! `triaged data describe`: what is in a data set — size, classes, labels per case,
//! and how much the humans disagree.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::targets::pairwise_disagreement;
use super::{Dataset, Split};

/// Bins of the disagreement histogram: `[0, 0.1), [0.1, 0.2), …, [0.9, 1.0]`.
pub const D_BINS: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub source: String,
    pub kind: String,
    pub n: usize,
    pub k: usize,
    pub class_names: Vec<String>,
    /// Feature dimension, or `[H, W, C]` for images.
    pub input_shape: Vec<usize>,
    /// Cases per split (empty when the data set has none).
    pub splits: BTreeMap<String, usize>,
    pub with_reference: usize,
    /// Labels per case → number of cases.
    pub labels_per_case: BTreeMap<u32, usize>,
    /// Total labels per class.
    pub class_totals: Vec<u64>,
    /// Cases with at least two labels (where `D` is defined).
    pub with_disagreement: usize,
    pub mean_disagreement: f64,
    /// Share of cases with `D > 0` among those with `D` defined.
    pub any_disagreement_rate: f64,
    /// Counts of `D` in [`D_BINS`] equal bins over [0, 1].
    pub disagreement_histogram: Vec<usize>,
}

pub fn describe(d: &Dataset) -> Summary {
    let k = d.num_classes();
    let mut labels_per_case = BTreeMap::new();
    let mut class_totals = vec![0u64; k];
    let mut hist = vec![0usize; D_BINS];
    let (mut d_sum, mut d_n, mut d_pos) = (0.0, 0usize, 0usize);
    for i in 0..d.len() {
        let c = d.counts(i);
        *labels_per_case.entry(c.iter().sum()).or_insert(0) += 1;
        for (t, &v) in class_totals.iter_mut().zip(c) {
            *t += u64::from(v);
        }
        if let Some(v) = pairwise_disagreement(c) {
            d_sum += v;
            d_n += 1;
            d_pos += usize::from(v > 0.0);
            hist[((v * D_BINS as f64) as usize).min(D_BINS - 1)] += 1;
        }
    }
    let splits = match d.splits() {
        Some(s) => Split::ALL
            .iter()
            .map(|want| (want.to_string(), s.iter().filter(|x| *x == want).count()))
            .collect(),
        None => BTreeMap::new(),
    };
    let input_shape = match d.inputs() {
        crate::data::Inputs::Features { dim, .. } => vec![*dim],
        crate::data::Inputs::Images {
            height,
            width,
            channels,
            ..
        } => vec![*height, *width, *channels],
    };
    Summary {
        source: d.source().to_string(),
        kind: d.inputs().kind().to_string(),
        n: d.len(),
        k,
        class_names: d.class_names().to_vec(),
        input_shape,
        splits,
        with_reference: (0..d.len()).filter(|&i| d.reference(i).is_some()).count(),
        labels_per_case,
        class_totals,
        with_disagreement: d_n,
        mean_disagreement: if d_n > 0 {
            d_sum / d_n as f64
        } else {
            f64::NAN
        },
        any_disagreement_rate: if d_n > 0 {
            d_pos as f64 / d_n as f64
        } else {
            f64::NAN
        },
        disagreement_histogram: hist,
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "source      {}", self.source)?;
        writeln!(f, "kind        {} {:?}", self.kind, self.input_shape)?;
        writeln!(f, "cases (N)   {}", self.n)?;
        writeln!(
            f,
            "classes (K) {} [{}]",
            self.k,
            self.class_names.join(", ")
        )?;
        if !self.splits.is_empty() {
            let parts: Vec<String> = self
                .splits
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            writeln!(f, "splits      {}", parts.join(", "))?;
        }
        writeln!(f, "reference   {} of {}", self.with_reference, self.n)?;
        let lpc: Vec<String> = self
            .labels_per_case
            .iter()
            .map(|(l, n)| format!("{l}:{n}"))
            .collect();
        writeln!(f, "labels/case {}", lpc.join(" "))?;
        let totals: Vec<String> = self
            .class_names
            .iter()
            .zip(&self.class_totals)
            .map(|(c, t)| format!("{c}={t}"))
            .collect();
        writeln!(f, "labels      {}", totals.join(" "))?;
        writeln!(
            f,
            "disagreement D: defined for {} cases, mean {:.3}, D>0 in {:.1}%",
            self.with_disagreement,
            self.mean_disagreement,
            100.0 * self.any_disagreement_rate
        )?;
        let max = self
            .disagreement_histogram
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        for (b, &count) in self.disagreement_histogram.iter().enumerate() {
            let lo = b as f64 / D_BINS as f64;
            let hi = (b + 1) as f64 / D_BINS as f64;
            let bar = "#".repeat((count * 40).div_ceil(max));
            writeln!(
                f,
                "  [{lo:.1}, {hi:.1}{} {count:>7} {bar}",
                if b + 1 == D_BINS { "]" } else { ")" }
            )?;
        }
        Ok(())
    }
}
