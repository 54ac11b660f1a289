//! A loaded model ready to answer: preprocessing + network + temperature. Used by
//! `eval`, by training's calibration step, and by the server's inference thread.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::bundle::{self, Head, InputSchema, Manifest, WEIGHTS_FILE};
use super::calibration::Calibrators;
use super::cnn::{ConvNet, ImageShape};
use super::net::{MemberOutputs, StackedMlp, TriageNet};

/// The network behind a predictor: an MLP over feature vectors or a CNN over images.
pub enum Network {
    Mlp(TriageNet),
    Cnn(ConvNet),
}

impl Network {
    /// Builds the network `manifest` describes over `vb`.
    pub fn new(manifest: &Manifest, vb: VarBuilder) -> candle_core::Result<Network> {
        let k = manifest.classes.len();
        let arch = &manifest.architecture;
        Ok(match &manifest.input {
            InputSchema::Features { features } => Network::Mlp(TriageNet::new(
                arch,
                features.len(),
                k,
                &manifest.heads,
                vb,
            )?),
            &InputSchema::Image {
                height,
                width,
                channels,
            } => Network::Cnn(ConvNet::new(
                arch,
                ImageShape {
                    height,
                    width,
                    channels,
                },
                k,
                &manifest.heads,
                vb,
            )?),
        })
    }

    pub fn ensemble_size(&self) -> usize {
        match self {
            Network::Mlp(n) => n.ensemble_size(),
            Network::Cnn(n) => n.ensemble_size(),
        }
    }

    /// Inference forward pass on preprocessed rows `[B, input_dim]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<MemberOutputs>> {
        match self {
            Network::Mlp(n) => n.forward(x, None),
            Network::Cnn(n) => {
                let s = n.shape();
                let b = x.dim(0)?;
                n.forward(&x.reshape((b, s.height, s.width, s.channels))?, None)
            }
        }
    }
}

/// What the model says about one case.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Calibrated class probabilities (sum to 1).
    pub probabilities: Vec<f32>,
    /// Predicted pairwise disagreement `D̂` (the DUP score), in [0, 1].
    pub disagreement: f32,
    /// Predicted error of one reviewer `ĥ`: the human-error head, calibrated when
    /// the bundle has calibrators (which also give it without that head).
    pub human_error: Option<f32>,
    /// Calibrated model error `â` (the chance that the predicted class is wrong
    /// against the reference), when the bundle has calibrators.
    pub model_error: Option<f32>,
}

impl Prediction {
    /// True when every output is a finite number. Inputs far outside the
    /// training range (finite but huge) can overflow the network to NaN/inf.
    pub fn is_finite(&self) -> bool {
        self.probabilities.iter().all(|p| p.is_finite())
            && self.disagreement.is_finite()
            && self.human_error.is_none_or(f32::is_finite)
            && self.model_error.is_none_or(f32::is_finite)
    }

    /// The predicted class (first of the most probable).
    pub fn class(&self) -> usize {
        argmax(&self.probabilities)
    }

    /// Uncertainty via classification: `1 − Σ p²`.
    pub fn uvc(&self) -> f32 {
        1.0 - self.probabilities.iter().map(|p| p * p).sum::<f32>()
    }

    /// Shannon entropy of the class probabilities, in nats.
    pub fn entropy(&self) -> f32 {
        -self
            .probabilities
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|p| p * p.ln())
            .sum::<f32>()
    }

    /// Estimated algorithm error `â`: calibrated against the reference when the
    /// bundle has calibrators, else `1 − max p` (the chance that a random
    /// annotator disagrees with the argmax, for a model trained on soft labels).
    pub fn algorithm_error(&self) -> f32 {
        self.model_error.unwrap_or_else(|| self.confidence_error())
    }

    /// `1 − max p`, the raw score `â` is calibrated from.
    pub fn confidence_error(&self) -> f32 {
        1.0 - self.probabilities[self.class()]
    }

    /// Estimated error of one human reviewer `ĥ`: the direct head when present,
    /// else `D̂` (the chance that a reviewer disagrees with another, i.e. with a
    /// reference drawn from the same human distribution).
    pub fn estimated_human_error(&self) -> f32 {
        self.human_error.unwrap_or(self.disagreement)
    }
}

pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Uncalibrated outputs for a batch, kept so the temperature can be refitted
/// without running the network again.
pub struct RawOutputs {
    /// Per member, `[B·K]` class logits.
    pub member_logits: Vec<Vec<f32>>,
    /// `[B]` ensemble mean of the disagreement sigmoid.
    pub disagreement: Vec<f32>,
    pub human_error: Option<Vec<f32>>,
    pub num_classes: usize,
}

impl RawOutputs {
    pub fn len(&self) -> usize {
        self.disagreement.len()
    }

    pub fn is_empty(&self) -> bool {
        self.disagreement.is_empty()
    }

    /// Class probabilities of case `i` at `temperature`: each member's softmax of
    /// `logits / T`, averaged over the ensemble.
    pub fn probabilities(&self, i: usize, temperature: f64) -> Vec<f32> {
        let k = self.num_classes;
        let mut out = vec![0.0f64; k];
        for logits in &self.member_logits {
            let row = &logits[i * k..(i + 1) * k];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f64> = row
                .iter()
                .map(|&z| (f64::from(z - max) / temperature).exp())
                .collect();
            let sum: f64 = exps.iter().sum();
            for (o, e) in out.iter_mut().zip(&exps) {
                *o += e / sum;
            }
        }
        let m = self.member_logits.len() as f64;
        out.iter().map(|v| (v / m) as f32).collect()
    }

    /// These outputs followed by `other`'s (same model, later cases).
    pub fn concat(mut self, other: RawOutputs) -> RawOutputs {
        for (mine, theirs) in self.member_logits.iter_mut().zip(other.member_logits) {
            mine.extend(theirs);
        }
        self.disagreement.extend(other.disagreement);
        if let (Some(mine), Some(theirs)) = (self.human_error.as_mut(), other.human_error) {
            mine.extend(theirs);
        }
        self
    }

    /// Predictions at `temperature`, with `calibration` applied when given.
    pub fn predictions(
        &self,
        temperature: f64,
        calibration: Option<&Calibrators>,
    ) -> Vec<Prediction> {
        (0..self.len())
            .map(|i| {
                let raw = Prediction {
                    probabilities: self.probabilities(i, temperature),
                    disagreement: self.disagreement[i],
                    human_error: self.human_error.as_ref().map(|h| h[i]),
                    model_error: None,
                };
                match calibration {
                    Some(c) => calibrate(raw, c),
                    None => raw,
                }
            })
            .collect()
    }
}

/// Applies the bundle's calibrators to a raw prediction: `â` from `1 − max p`,
/// `D̂` from the DUP head, `ĥ` from the human-error head (or the DUP head).
pub fn calibrate(raw: Prediction, c: &Calibrators) -> Prediction {
    let h_score = raw.human_error.unwrap_or(raw.disagreement);
    Prediction {
        model_error: Some(c.model_error.apply(f64::from(raw.confidence_error())) as f32),
        disagreement: c.disagreement.apply(f64::from(raw.disagreement)) as f32,
        human_error: Some(c.human_error.apply(f64::from(h_score)) as f32),
        probabilities: raw.probabilities,
    }
}

pub struct Predictor {
    manifest: Manifest,
    net: Network,
    /// The MLP's stacked inference form, for weights loaded from a bundle (never
    /// for a network still being trained).
    stacked: Option<StackedMlp>,
    device: Device,
    dir: PathBuf,
}

impl Predictor {
    /// Loads and validates the bundle in `dir`.
    pub fn load(dir: &Path, device: &Device) -> anyhow::Result<Predictor> {
        let manifest = bundle::read_manifest(dir)?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path)
            .with_context(|| format!("reading {}", weights_path.display()))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)
            .with_context(|| format!("{}: not a safetensors file", weights_path.display()))?;
        let mut net = Network::new(&manifest, vb).with_context(|| {
            format!(
                "{}: weights do not match the architecture in model.json",
                weights_path.display()
            )
        })?;
        let stacked = match &mut net {
            Network::Mlp(n) => Some(n.stacked()?),
            Network::Cnn(n) => {
                n.freeze()?;
                None
            }
        };
        Ok(Predictor {
            manifest,
            net,
            stacked,
            device: device.clone(),
            dir: dir.to_path_buf(),
        })
    }

    /// Wraps a network that is already built (training builds it over a `VarMap`).
    pub fn from_parts(manifest: Manifest, net: Network, device: Device, dir: PathBuf) -> Self {
        Predictor {
            manifest,
            net,
            stacked: None,
            device,
            dir,
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The version in service (its bundle folder), which may differ from the one
    /// recorded at training time.
    pub fn set_version(&mut self, version: &str) {
        self.manifest.version = version.to_string();
    }

    pub fn set_temperature(&mut self, t: f64) {
        self.manifest.temperature = t;
    }

    pub fn set_calibration(&mut self, c: Option<Calibrators>) {
        self.manifest.calibration = c;
    }

    /// The last hidden layer of each ensemble member for raw rows: `[B·width]`
    /// per member, row-major, with the width.
    pub fn features(&self, rows: &[f32]) -> anyhow::Result<(Vec<Vec<f32>>, usize)> {
        let x = self.preprocessed(rows)?;
        let outputs = self.net.forward(&x)?;
        let mut width = 0;
        let mut out = Vec::with_capacity(outputs.len());
        for o in outputs {
            width = o.features.dim(1)?;
            out.push(o.features.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok((out, width))
    }

    /// Preprocessed rows as a `[B, input_dim]` tensor.
    fn preprocessed(&self, rows: &[f32]) -> anyhow::Result<Tensor> {
        let dim = self.manifest.input_dim();
        anyhow::ensure!(
            dim > 0 && rows.len() % dim == 0,
            "{} values are not whole rows of {dim} features",
            rows.len()
        );
        let b = rows.len() / dim;
        let mut x = rows.to_vec();
        match self.manifest.input {
            InputSchema::Features { .. } => {
                for row in x.chunks_exact_mut(dim) {
                    self.manifest.preprocessing.apply(row);
                }
            }
            InputSchema::Image { .. } => self.manifest.preprocessing.apply_channels(&mut x),
        }
        Ok(Tensor::from_vec(x, (b, dim), &self.device)?)
    }

    /// Runs the network on raw (un-preprocessed) rows, `input_dim` values per case,
    /// concatenated: feature vectors, or images as NHWC pixel values 0–255.
    pub fn raw_outputs(&self, rows: &[f32]) -> anyhow::Result<RawOutputs> {
        let dim = self.manifest.input_dim();
        anyhow::ensure!(
            dim > 0 && rows.len() % dim == 0,
            "{} values are not whole rows of {dim} features",
            rows.len()
        );
        let b = rows.len() / dim;
        let k = self.manifest.classes.len();
        if b == 0 {
            return Ok(RawOutputs {
                member_logits: vec![Vec::new(); self.net.ensemble_size()],
                disagreement: Vec::new(),
                human_error: self.has_head(Head::HumanError).then(Vec::new),
                num_classes: k,
            });
        }
        let x = self.preprocessed(rows)?;
        if let Some(stacked) = &self.stacked {
            return stacked_raw_outputs(stacked, &x);
        }
        let outputs = self.net.forward(&x)?;
        let m = outputs.len() as f32;
        let mut disagreement = vec![0.0f32; b];
        let mut human_error = self.has_head(Head::HumanError).then(|| vec![0.0f32; b]);
        let mut member_logits = Vec::with_capacity(outputs.len());
        for out in outputs {
            member_logits.push(out.class_logits.flatten_all()?.to_vec1::<f32>()?);
            let d = candle_nn::ops::sigmoid(&out.disagreement_logit)?.to_vec1::<f32>()?;
            for (acc, v) in disagreement.iter_mut().zip(d) {
                *acc += v / m;
            }
            if let (Some(acc), Some(logit)) = (human_error.as_mut(), out.human_error_logit) {
                let h = candle_nn::ops::sigmoid(&logit)?.to_vec1::<f32>()?;
                for (a, v) in acc.iter_mut().zip(h) {
                    *a += v / m;
                }
            }
        }
        Ok(RawOutputs {
            member_logits,
            disagreement,
            human_error,
            num_classes: k,
        })
    }

    /// Calibrated predictions for raw feature rows.
    pub fn predict(&self, rows: &[f32]) -> anyhow::Result<Vec<Prediction>> {
        Ok(self.raw_outputs(rows)?.predictions(
            self.manifest.temperature,
            self.manifest.calibration.as_ref(),
        ))
    }

    fn has_head(&self, head: Head) -> bool {
        self.manifest.heads.contains(&head)
    }
}

/// The logistic function, as candle's `sigmoid` computes it.
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// [`Predictor::raw_outputs`] through the stacked MLP: the same numbers, summed
/// over the members in the same order.
fn stacked_raw_outputs(net: &StackedMlp, x: &Tensor) -> anyhow::Result<RawOutputs> {
    let out = net.forward(x)?;
    let (k, b) = (net.num_classes(), out.cases);
    let m = out.members as f32;
    let mut disagreement = vec![0.0f32; b];
    let mut human_error = net.has_human_error().then(|| vec![0.0f32; b]);
    let mut member_logits = Vec::with_capacity(out.members);
    for member in 0..out.members {
        let mut logits = Vec::with_capacity(b * k);
        for i in 0..b {
            let row = out.row(member, i);
            logits.extend_from_slice(&row[..k]);
            disagreement[i] += sigmoid(row[k]) / m;
            if let Some(h) = human_error.as_mut() {
                h[i] += sigmoid(row[k + 1]) / m;
            }
        }
        member_logits.push(logits);
    }
    Ok(RawOutputs {
        member_logits,
        disagreement,
        human_error,
        num_classes: k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bundle::Architecture;

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5, "{what}: {x} vs {y}");
        }
    }

    fn same_outputs(fast: &RawOutputs, slow: &RawOutputs) {
        assert_eq!(fast.member_logits.len(), slow.member_logits.len());
        for (f, s) in fast.member_logits.iter().zip(&slow.member_logits) {
            assert_close(f, s, "class logits");
        }
        assert_close(&fast.disagreement, &slow.disagreement, "disagreement");
        match (&fast.human_error, &slow.human_error) {
            (Some(f), Some(s)) => assert_close(f, s, "human error"),
            (None, None) => {}
            _ => panic!("the human-error head is present in one form only"),
        }
    }

    #[test]
    fn the_shipped_mlp_answers_the_same_stacked_and_member_by_member() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/lidc-malignancy/1");
        let mut p = Predictor::load(&dir, &Device::Cpu).unwrap();
        assert!(
            p.stacked.is_some(),
            "a loaded MLP bundle serves the stacked form"
        );
        let base = [2193.25f32, 22.61, 5.5, 234.6, 110.2, 3.0, 0.65, 1.0];
        let rows: Vec<f32> = (0..7)
            .flat_map(|i| base.iter().map(move |v| v * (0.5 + 0.25 * i as f32)))
            .collect();
        let fast = p.raw_outputs(&rows).unwrap();
        p.stacked = None;
        let slow = p.raw_outputs(&rows).unwrap();
        same_outputs(&fast, &slow);
    }

    #[test]
    fn a_stacked_mlp_with_a_human_error_head_matches_its_members() {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let arch = Architecture {
            kind: "mlp".into(),
            stages: None,
            hidden: vec![16, 8],
            dropout: 0.0,
            ensemble: 3,
        };
        let heads = [Head::Class, Head::Disagreement, Head::HumanError];
        let net = TriageNet::new(&arch, 4, 3, &heads, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (5, 4), &Device::Cpu).unwrap();
        let stacked = stacked_raw_outputs(&net.stacked().unwrap(), &x).unwrap();
        let members = net.forward(&x, None).unwrap();
        let m = members.len() as f32;
        let mut disagreement = vec![0.0f32; 5];
        let mut human_error = vec![0.0f32; 5];
        for (i, out) in members.iter().enumerate() {
            let logits = out
                .class_logits
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_close(&stacked.member_logits[i], &logits, "class logits");
            let d = candle_nn::ops::sigmoid(&out.disagreement_logit).unwrap();
            let h = candle_nn::ops::sigmoid(out.human_error_logit.as_ref().unwrap()).unwrap();
            for (j, (d, h)) in d
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .zip(h.to_vec1::<f32>().unwrap())
                .enumerate()
            {
                disagreement[j] += d / m;
                human_error[j] += h / m;
            }
        }
        assert_close(&stacked.disagreement, &disagreement, "disagreement");
        assert_close(
            stacked.human_error.as_ref().unwrap(),
            &human_error,
            "human error",
        );
    }
}
