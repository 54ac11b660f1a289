//! Data sets with several human labels per case (docs/formats.md): the in-memory
//! [`Dataset`], its safetensors file format, CSV import, the synthetic generator
//! and `data describe`.

pub mod csv_import;
pub mod describe;
pub mod format;
pub mod images;
pub mod synth;
pub mod targets;

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which part of a data set a case belongs to. Stored as `u8` (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Calibration,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Calibration, Split::Test];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Split> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Parses the CSV spelling (`train|calibration|test`, case-insensitive).
    pub fn parse(text: &str) -> Option<Split> {
        match text.trim().to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "calibration" | "cal" => Some(Split::Calibration),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Calibration => "calibration",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The model inputs of a data set: feature vectors or images.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// `f32 [N, D]`, row-major, with one name per column.
    Features {
        dim: usize,
        names: Vec<String>,
        values: Vec<f32>,
    },
    /// `u8 [N, H, W, C]`, row-major.
    Images {
        height: usize,
        width: usize,
        channels: usize,
        pixels: Vec<u8>,
    },
}

impl Inputs {
    pub fn kind(&self) -> &'static str {
        match self {
            Inputs::Features { .. } => "features",
            Inputs::Images { .. } => "image",
        }
    }

    /// Number of values one case occupies.
    pub fn case_len(&self) -> usize {
        match self {
            Inputs::Features { dim, .. } => *dim,
            Inputs::Images {
                height,
                width,
                channels,
                ..
            } => height * width * channels,
        }
    }

    fn total_len(&self) -> usize {
        match self {
            Inputs::Features { values, .. } => values.len(),
            Inputs::Images { pixels, .. } => pixels.len(),
        }
    }
}

/// A data set held in memory. Invariants (checked by [`Dataset::new`]): every
/// per-case array has `n` entries, counts are `[n, K]` with `K = class_names.len()`,
/// references are `-1` or a class index.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    inputs: Inputs,
    class_names: Vec<String>,
    counts: Vec<u32>,
    reference: Option<Vec<i64>>,
    split: Option<Vec<Split>>,
    /// Optional group of each case (e.g. the patient): cases of one group are
    /// never divided between the calibration fitting and certification parts.
    group: Option<Vec<i64>>,
    source: String,
}

/// Share (percent) of calibration groups in the fitting part.
pub const CALIBRATION_FIT_PERCENT: u64 = 40;
/// Salt of the group hash, so the parts do not line up with other hash splits.
const CALIBRATION_PARTS_SALT: u64 = 0x6361_6c69_6272_6174;

/// The calibration split in two disjoint parts, divided by group (or by case
/// when the data set has no groups), by a fixed hash of the group id:
/// `splitmix64(group ^ salt) % 100 < 40` → `fit`, else `certify`.
/// - `fit`: early stopping, temperature, the calibrators of `â`, `D̂`, `ĥ`, and
///   the threshold grid of a policy;
/// - `certify`: only the certificate's hypothesis tests, so the certified cases
///   are independent of everything fitted.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationParts {
    pub fit: Vec<usize>,
    pub certify: Vec<usize>,
    /// `group` or `case`.
    pub by: &'static str,
}

impl CalibrationParts {
    /// How the parts were made, for model.json and policy.json.
    pub fn describe(&self) -> String {
        format!(
            "calibration split divided by {}: splitmix64({} ^ salt) % 100 < {CALIBRATION_FIT_PERCENT} -> fit ({} cases: early stopping, temperature, calibrators, grid), else certify ({} cases: certificate tests only)",
            self.by,
            self.by,
            self.fit.len(),
            self.certify.len()
        )
    }
}

/// SplitMix64's finaliser: a fixed, well-mixed hash of a 64-bit key.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Dataset {
    pub fn new(
        inputs: Inputs,
        class_names: Vec<String>,
        counts: Vec<u32>,
        reference: Option<Vec<i64>>,
        split: Option<Vec<Split>>,
        source: String,
    ) -> anyhow::Result<Dataset> {
        let k = class_names.len();
        anyhow::ensure!(k >= 2, "a data set needs at least 2 classes, got {k}");
        anyhow::ensure!(
            counts.len() % k == 0,
            "counts has {} values, not a multiple of K={k}",
            counts.len()
        );
        let n = counts.len() / k;
        let case_len = inputs.case_len();
        anyhow::ensure!(case_len > 0, "inputs have zero size per case");
        anyhow::ensure!(
            inputs.total_len() == n * case_len,
            "inputs hold {} values, expected N={n} cases x {case_len}",
            inputs.total_len()
        );
        if let Inputs::Features { names, dim, values } = &inputs {
            anyhow::ensure!(
                names.len() == *dim,
                "{} feature names for dimension {dim}",
                names.len()
            );
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                anyhow::bail!(
                    "feature '{}' of case {} is not finite ({})",
                    names[i % dim],
                    i / dim,
                    values[i]
                );
            }
        }
        if let Some(r) = &reference {
            anyhow::ensure!(r.len() == n, "reference has {} entries, N={n}", r.len());
            if let Some(i) = r.iter().position(|&v| v < -1 || v >= k as i64) {
                anyhow::bail!(
                    "reference of case {i} is {}, not -1 or a class in 0..{k}",
                    r[i]
                );
            }
        }
        if let Some(s) = &split {
            anyhow::ensure!(s.len() == n, "split has {} entries, N={n}", s.len());
        }
        Ok(Dataset {
            inputs,
            class_names,
            counts,
            reference,
            split,
            group: None,
            source,
        })
    }

    /// Returns a copy with a group id per case (`[N]`).
    pub fn with_groups(mut self, group: Vec<i64>) -> anyhow::Result<Dataset> {
        anyhow::ensure!(
            group.len() == self.len(),
            "group has {} entries, N={}",
            group.len(),
            self.len()
        );
        self.group = Some(group);
        Ok(self)
    }

    /// The group of case `i`, when the data set has groups.
    pub fn group(&self, i: usize) -> Option<i64> {
        self.group.as_ref().map(|g| g[i])
    }

    pub fn groups(&self) -> Option<&[i64]> {
        self.group.as_deref()
    }

    /// The calibration split divided, by group, into the part everything is fitted
    /// on and the part certificates are tested on (see [`CalibrationParts`]).
    pub fn calibration_parts(&self, idx: &[usize]) -> CalibrationParts {
        let mut parts = CalibrationParts {
            fit: Vec::new(),
            certify: Vec::new(),
            by: if self.group.is_some() {
                "group"
            } else {
                "case"
            },
        };
        for &i in idx {
            let key = match &self.group {
                Some(g) => g[i] as u64,
                None => i as u64,
            };
            if splitmix64(key ^ CALIBRATION_PARTS_SALT) % 100 < CALIBRATION_FIT_PERCENT {
                parts.fit.push(i);
            } else {
                parts.certify.push(i);
            }
        }
        parts
    }

    pub fn len(&self) -> usize {
        self.counts.len() / self.num_classes()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Label counts of case `i` (`K` entries).
    pub fn counts(&self, i: usize) -> &[u32] {
        let k = self.num_classes();
        &self.counts[i * k..(i + 1) * k]
    }

    pub fn all_counts(&self) -> &[u32] {
        &self.counts
    }

    /// Reference label of case `i`, if the data set has one for it.
    pub fn reference(&self, i: usize) -> Option<usize> {
        self.reference
            .as_ref()
            .and_then(|r| usize::try_from(r[i]).ok())
    }

    pub fn references(&self) -> Option<&[i64]> {
        self.reference.as_deref()
    }

    pub fn split(&self, i: usize) -> Option<Split> {
        self.split.as_ref().map(|s| s[i])
    }

    pub fn splits(&self) -> Option<&[Split]> {
        self.split.as_deref()
    }

    /// Feature row of case `i`; `None` for image data sets.
    /// Appends case `i`'s model inputs as f32: its feature row, or its image's
    /// pixels (NHWC, 0–255).
    pub fn extend_inputs(&self, i: usize, out: &mut Vec<f32>) {
        match &self.inputs {
            Inputs::Features { dim, values, .. } => {
                out.extend_from_slice(&values[i * dim..(i + 1) * dim])
            }
            Inputs::Images { pixels, .. } => {
                let len = self.inputs.case_len();
                out.extend(pixels[i * len..(i + 1) * len].iter().map(|&p| f32::from(p)))
            }
        }
    }

    pub fn features(&self, i: usize) -> Option<&[f32]> {
        match &self.inputs {
            Inputs::Features { dim, values, .. } => Some(&values[i * dim..(i + 1) * dim]),
            Inputs::Images { .. } => None,
        }
    }

    /// Indices of the cases in `split`; all cases when `split` is `None`.
    /// Fails when a split is asked of a data set that has none.
    pub fn indices(&self, split: Option<Split>) -> anyhow::Result<Vec<usize>> {
        match (split, &self.split) {
            (None, _) => Ok((0..self.len()).collect()),
            (Some(want), Some(s)) => Ok((0..self.len()).filter(|&i| s[i] == want).collect()),
            (Some(want), None) => anyhow::bail!(
                "the data set has no split tensor, so it has no '{want}' split (import it with --split COL)"
            ),
        }
    }

    /// Returns a copy with the split column replaced (used when training on a data
    /// set that came without one).
    pub fn with_split(mut self, split: Vec<Split>) -> anyhow::Result<Dataset> {
        anyhow::ensure!(split.len() == self.len(), "split length mismatch");
        self.split = Some(split);
        Ok(self)
    }
}
