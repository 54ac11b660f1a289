//! The model bundle on disk (docs/formats.md): `models/<name>/<version>/` holding
//! `model.json` (the [`Manifest`]) and `model.safetensors` (the weights), later
//! `policy.json`. Loading validates every field and names the file and field that
//! is wrong.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::preprocess::Standardizer;

pub const MANIFEST_FILE: &str = "model.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Bumped when `model.json` changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// An output head of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    Class,
    Disagreement,
    HumanError,
}

/// Network shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// `mlp` (feature vectors) or `cnn` (images).
    pub kind: String,
    /// `cnn` only: output channels of each 3×3 conv–BN–ReLU block, stage by stage;
    /// every stage ends in 2×2 max pooling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<Vec<usize>>>,
    /// Widths of the shared dense hidden layers (ReLU); for `cnn`, after the
    /// flattened last stage.
    pub hidden: Vec<usize>,
    /// Dropout after each hidden layer, in training only.
    pub dropout: f32,
    /// Members of the seed ensemble; outputs are averaged.
    pub ensemble: usize,
}

/// The model's input, the same shape as the API's `input` object (docs/formats.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum InputSchema {
    Features {
        features: Vec<String>,
    },
    Image {
        height: usize,
        width: usize,
        channels: usize,
    },
}

/// Where the weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub data_file: String,
    pub data_sha256: String,
    pub data_source: String,
    /// How the train/calibration/test split was obtained.
    pub split: String,
    pub n_train: usize,
    pub n_calibration: usize,
    pub seed: u64,
    /// Training hyper-parameters as given.
    pub config: serde_json::Value,
    pub epochs_run: usize,
    pub best_epoch: usize,
    /// Calibration loss of the initial weights, for comparison with the best.
    pub initial_calibration_loss: f64,
    pub best_calibration_loss: f64,
    pub started_at: String,
    pub duration_seconds: f64,
    pub triaged_version: String,
}

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub version: String,
    pub architecture: Architecture,
    pub input: InputSchema,
    pub preprocessing: Standardizer,
    pub classes: Vec<String>,
    pub heads: Vec<Head>,
    /// Divides the class logits (fitted on the calibration split).
    pub temperature: f64,
    pub training: Provenance,
    /// Calibrators of `â`, `D̂`, `ĥ` (absent in bundles made before they existed:
    /// the raw estimates are used then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<super::calibration::Calibrators>,
    /// Evaluation summaries by split name (`calibration`, `test`).
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    pub fn input_dim(&self) -> usize {
        match &self.input {
            InputSchema::Features { features } => features.len(),
            InputSchema::Image {
                height,
                width,
                channels,
            } => height * width * channels,
        }
    }

    /// Checks the invariants the network and the server rely on.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version is {}, this build reads {FORMAT_VERSION}",
                self.format_version
            ));
        }
        if self.classes.len() < 2 {
            return Err("classes: at least 2 are needed".into());
        }
        for head in [Head::Class, Head::Disagreement] {
            if !self.heads.contains(&head) {
                return Err(format!("heads: '{head:?}' is required"));
            }
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!("temperature: {} is not positive", self.temperature));
        }
        if let Some(c) = &self.calibration {
            c.validate()?;
        }
        if self.architecture.ensemble == 0 {
            return Err("architecture.ensemble: must be at least 1".into());
        }
        if self.architecture.hidden.contains(&0) {
            return Err("architecture.hidden: widths must be positive".into());
        }
        match (self.architecture.kind.as_str(), &self.input) {
            ("mlp", InputSchema::Features { features }) => {
                if features.is_empty() {
                    return Err("input.features: empty".into());
                }
                self.preprocessing.validate(features.len())?;
            }
            (
                "cnn",
                InputSchema::Image {
                    height,
                    width,
                    channels,
                },
            ) => {
                let stages = match &self.architecture.stages {
                    Some(s) if !s.is_empty() && s.iter().all(|w| !w.is_empty()) => s,
                    _ => return Err("architecture.stages: a cnn needs non-empty stages".into()),
                };
                if stages.iter().flatten().any(|&c| c == 0) {
                    return Err("architecture.stages: channel counts must be positive".into());
                }
                let shrink = 1usize << stages.len();
                if *height < shrink || *width < shrink || *channels == 0 {
                    return Err(format!(
                        "input: {height}×{width}×{channels} is too small for {} pooling stages",
                        stages.len()
                    ));
                }
                // Images are normalised per channel.
                self.preprocessing.validate(*channels)?;
            }
            ("mlp", InputSchema::Image { .. }) => {
                return Err("input.kind 'image' needs architecture.kind 'cnn', not 'mlp'".into())
            }
            ("cnn", InputSchema::Features { .. }) => {
                return Err("architecture.kind 'cnn' needs input.kind 'image'".into())
            }
            (other, _) => {
                return Err(format!(
                    "architecture.kind: '{other}' is not supported (expected 'mlp' or 'cnn')"
                ))
            }
        }
        Ok(())
    }
}

/// Splits `…/<name>/<version>/` into name and version.
pub fn name_and_version(dir: &Path) -> anyhow::Result<(String, String)> {
    let version = dir
        .file_name()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("{}: a bundle path ends in <name>/<version>", dir.display()))?;
    let name = dir
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("{}: a bundle path ends in <name>/<version>", dir.display()))?;
    Ok((name.to_string(), version.to_string()))
}

/// Reads and validates `dir/model.json`.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if let Err(e) = manifest.validate() {
        bail!("{}: {e}", path.display());
    }
    Ok(manifest)
}

/// Writes `model.safetensors` and `model.json` into `dir`, each through a
/// temporary file and a rename, so a reader never sees half a file. Weights go
/// first: a reader that sees the new manifest also sees its weights.
pub fn write_bundle(
    dir: &Path,
    manifest: &Manifest,
    weights: &candle_nn::VarMap,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(WEIGHTS_FILE);
    let tmp = path.with_extension("tmp");
    weights
        .save(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    write_manifest(dir, manifest)
}

pub fn write_manifest(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(manifest)?;
    write_atomic(&dir.join(MANIFEST_FILE), &json)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
