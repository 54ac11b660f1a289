//! `triaged train`: fits an ensemble MLP with a class head and a direct
//! disagreement head (plus a human-error head when references exist) with AdamW,
//! early-stops and fits the temperature on the calibration split, and writes a
//! bundle that records where its data came from and how it evaluates.

pub mod image;
pub mod loss;
pub mod refit;
pub mod temperature;

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::data::targets::{
    human_error, human_error_target, model_error_target, pairwise_disagreement, soft_label,
};
use crate::data::{CalibrationParts, Dataset, Split};
use crate::eval::{self, EvalOptions};
use crate::model::bundle::{self, Provenance, FORMAT_VERSION};
use crate::model::calibration::{Calibrators, Isotonic};
use crate::model::net::{Dropout, MemberOutputs, TriageNet};
use crate::model::predictor::Network;
use crate::model::predictor::RawOutputs;
use crate::model::preprocess::Standardizer;
use crate::model::{Architecture, Head, InputSchema, Manifest, Predictor};

/// Training hyper-parameters. Defaults are what the shipped LIDC model uses.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct TrainConfig {
    /// Seed for initialisation, batch order, dropout and any generated split.
    #[arg(long, default_value_t = 0, env = "TRIAGED_TRAIN_SEED")]
    pub seed: u64,
    /// Maximum epochs (early stopping on the calibration loss may end sooner).
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// Epochs without calibration improvement before stopping.
    #[arg(long, default_value_t = 40)]
    pub patience: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 1e-2)]
    pub weight_decay: f64,
    /// Hidden layer widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,64")]
    pub hidden: Vec<usize>,
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f32,
    /// Ensemble members (independently initialised, outputs averaged).
    #[arg(long, default_value_t = 5)]
    pub ensemble: usize,
    /// Weight of the disagreement (DUP) BCE relative to the class cross-entropy.
    #[arg(long, default_value_t = 1.0)]
    pub dup_weight: f64,
    /// Weight of the human-error BCE (used when the data has references).
    #[arg(long, default_value_t = 0.5)]
    pub human_error_weight: f64,
    /// Image data only: conv stages of the CNN, stages separated by commas and the
    /// 3×3 conv–BN–ReLU blocks within a stage by `+` (each stage ends in 2×2 max
    /// pooling); `--hidden` then gives the dense layers after the last stage.
    #[arg(long, default_value = "32,64,128")]
    pub stages: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            epochs: 300,
            patience: 40,
            batch_size: 64,
            learning_rate: 1e-3,
            weight_decay: 1e-2,
            hidden: vec![64, 64],
            dropout: 0.1,
            ensemble: 5,
            dup_weight: 1.0,
            human_error_weight: 0.5,
            stages: "32,64,128".into(),
        }
    }
}

/// What a training run produced.
pub struct TrainOutcome {
    pub manifest: Manifest,
    pub epochs_run: usize,
    pub best_epoch: usize,
}

/// Per-split training tensors.
pub(crate) struct SplitTensors {
    x: Tensor,
    soft: Tensor,
    d: Tensor,
    d_mask: Tensor,
    d_count: f64,
    h: Tensor,
    h_mask: Tensor,
    h_count: f64,
    n: usize,
}

/// Trains on `data` (read from `data_path`) and writes the bundle into `out`.
/// `calibration`, for image data, is a second data set whose calibration split
/// replaces `data`'s.
#[allow(clippy::too_many_arguments)]
pub fn train(
    data: &Dataset,
    data_path: &Path,
    calibration: Option<(&Dataset, &Path)>,
    out: &Path,
    cfg: &TrainConfig,
    device: &Device,
    show_progress: bool,
) -> anyhow::Result<TrainOutcome> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    anyhow::ensure!(cfg.batch_size > 0, "--batch-size must be positive");
    anyhow::ensure!(cfg.ensemble > 0, "--ensemble must be positive");
    anyhow::ensure!(
        !cfg.hidden.is_empty() && !cfg.hidden.contains(&0),
        "--hidden needs positive widths"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&cfg.dropout),
        "--dropout must be in [0, 1)"
    );
    let (name, version) = bundle::name_and_version(out)?;
    let crate::data::Inputs::Features { dim, names, .. } = data.inputs() else {
        let stages = image::parse_stages(&cfg.stages)?;
        return image::train_images(
            data,
            data_path,
            calibration,
            out,
            cfg,
            stages,
            device,
            show_progress,
        );
    };
    anyhow::ensure!(
        calibration.is_none(),
        "--calibration-data is for image data sets; a feature data set carries its own split"
    );
    let dim = *dim;
    let k = data.num_classes();

    let (data, split_note) = match data.splits() {
        Some(_) => (data.clone(), "from the data set's split tensor".to_string()),
        None => {
            let generated = random_split(data.len(), cfg.seed);
            tracing::warn!(
                "the data set has no split: using a seeded 60/20/20 split (seed {})",
                cfg.seed
            );
            (
                data.clone().with_split(generated)?,
                format!("generated 60/20/20 with seed {}", cfg.seed),
            )
        }
    };
    let train_idx = usable(&data, Split::Train)?;
    // Only the fitting part of the calibration split: the certification part
    // stays unseen by early stopping, the temperature and the calibrators.
    let cal_parts = data.calibration_parts(&usable(&data, Split::Calibration)?);
    let cal_idx = cal_parts.fit.clone();
    anyhow::ensure!(
        train_idx.len() >= 2,
        "the train split has {} labelled cases; need at least 2",
        train_idx.len()
    );
    anyhow::ensure!(
        !cal_idx.is_empty(),
        "the calibration split has no labelled cases (needed for early stopping and temperature)"
    );

    let train_rows: Vec<&[f32]> = train_idx.iter().filter_map(|&i| data.features(i)).collect();
    let standardizer = Standardizer::fit(&train_rows, dim);
    let heads = heads_for(&data, &train_idx, cfg);
    let arch = Architecture {
        kind: "mlp".into(),
        stages: None,
        hidden: cfg.hidden.clone(),
        dropout: cfg.dropout,
        ensemble: cfg.ensemble,
    };

    let train_t = split_tensors(&data, &train_idx, &standardizer, device)?;
    let cal_t = split_tensors(&data, &cal_idx, &standardizer, device)?;

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = TriageNet::new(&arch, dim, k, &heads, vb)?;
    let mean_d = mean_target(&data, &train_idx, |c, _| pairwise_disagreement(c));
    let mean_h = mean_target(&data, &train_idx, human_error);
    initialise(&varmap, cfg.seed, mean_d, mean_h)?;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x7472_6169_6e00);
    let mut dropout = Dropout {
        p: cfg.dropout,
        rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6472_6f70),
    };

    let bar = if show_progress {
        ProgressBar::new(cfg.epochs as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} train [{bar:30}] epoch {pos}/{len} {msg} ({elapsed})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let initial_loss =
        f64::from(batch_loss(&net, &cal_t, cfg, None)?.to_scalar::<f32>()?) / cfg.ensemble as f64;
    let mut order: Vec<u32> = (0..train_t.n as u32).collect();
    let mut best = (f64::INFINITY, 0usize);
    let mut snapshot = snapshot_vars(&varmap)?;
    let mut epochs_run = 0;
    for epoch in 1..=cfg.epochs {
        epochs_run = epoch;
        order.shuffle(&mut rng);
        let mut epoch_loss = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(cfg.batch_size) {
            let idx = Tensor::new(chunk, device)?;
            let batch = select(&train_t, &idx, chunk.len())?;
            let loss = batch_loss(&net, &batch, cfg, Some(&mut dropout))?;
            opt.backward_step(&loss)?;
            epoch_loss += f64::from(loss.to_scalar::<f32>()?);
            batches += 1;
        }
        let train_loss = epoch_loss / f64::from(batches.max(1)) / cfg.ensemble as f64;
        let cal_loss = f64::from(batch_loss(&net, &cal_t, cfg, None)?.to_scalar::<f32>()?)
            / cfg.ensemble as f64;
        anyhow::ensure!(
            train_loss.is_finite(),
            "training diverged at epoch {epoch} (loss {train_loss}); lower --learning-rate"
        );
        if cal_loss < best.0 - 1e-6 {
            best = (cal_loss, epoch);
            snapshot = snapshot_vars(&varmap)?;
        }
        bar.set_position(epoch as u64);
        bar.set_message(format!(
            "loss {train_loss:.4} cal {cal_loss:.4} best {:.4}@{}",
            best.0, best.1
        ));
        if epoch % 25 == 0 {
            tracing::debug!(epoch, train_loss, cal_loss, "epoch");
        }
        if epoch - best.1 >= cfg.patience {
            break;
        }
    }
    bar.finish_and_clear();
    restore_vars(&varmap, &snapshot)?;
    tracing::info!(
        epochs_run,
        best_epoch = best.1,
        best_calibration_loss = best.0,
        "training finished"
    );

    TrainedRun {
        name,
        version,
        architecture: arch,
        input: InputSchema::Features {
            features: names.clone(),
        },
        preprocessing: standardizer,
        heads,
        data: &data,
        data_path,
        split_note,
        n_train: train_idx.len(),
        epochs_run,
        best,
        initial_loss,
        started,
        started_at,
    }
    .finish(&varmap, &data, &cal_parts, out, cfg, device)
}

/// A finished training loop, before its bundle is written.
pub(crate) struct TrainedRun<'a> {
    pub name: String,
    pub version: String,
    pub architecture: Architecture,
    pub input: InputSchema,
    pub preprocessing: Standardizer,
    pub heads: Vec<Head>,
    /// The training data and where it was read from.
    pub data: &'a Dataset,
    pub data_path: &'a Path,
    /// How the train/calibration split was obtained.
    pub split_note: String,
    pub n_train: usize,
    pub epochs_run: usize,
    /// Best calibration loss and its epoch (the weights in the var map).
    pub best: (f64, usize),
    pub initial_loss: f64,
    pub started: Instant,
    pub started_at: String,
}

impl TrainedRun<'_> {
    /// Records the run in a manifest, then fits the temperature on `cal_idx` of
    /// `cal_data`, evaluates, and writes the bundle into `out`.
    pub(crate) fn finish(
        self,
        varmap: &VarMap,
        cal_data: &Dataset,
        cal_parts: &CalibrationParts,
        out: &Path,
        cfg: &TrainConfig,
        device: &Device,
    ) -> anyhow::Result<TrainOutcome> {
        let cal_idx = &cal_parts.fit;
        let (epochs_run, best_epoch) = (self.epochs_run, self.best.1);
        let mut manifest = Manifest {
            format_version: FORMAT_VERSION,
            name: self.name,
            version: self.version,
            architecture: self.architecture,
            input: self.input,
            preprocessing: self.preprocessing,
            classes: self.data.class_names().to_vec(),
            heads: self.heads,
            temperature: 1.0,
            training: Provenance {
                data_file: file_label(self.data_path),
                data_sha256: sha256_file(self.data_path)?,
                data_source: self.data.source().to_string(),
                split: format!("{}; {}", self.split_note, cal_parts.describe()),
                n_train: self.n_train,
                n_calibration: cal_idx.len(),
                seed: cfg.seed,
                config: serde_json::to_value(cfg)?,
                epochs_run,
                best_epoch,
                initial_calibration_loss: self.initial_loss,
                best_calibration_loss: self.best.0,
                started_at: self.started_at,
                duration_seconds: 0.0,
                triaged_version: env!("CARGO_PKG_VERSION").to_string(),
            },
            calibration: None,
            metrics: serde_json::Map::new(),
        };
        let net = Network::new(
            &manifest,
            VarBuilder::from_varmap(varmap, DType::F32, device),
        )?;
        let predictor =
            Predictor::from_parts(manifest.clone(), net, device.clone(), out.to_path_buf());
        finish_bundle(
            predictor,
            &mut manifest,
            cal_data,
            cal_idx,
            varmap,
            out,
            self.started,
        )?;
        Ok(TrainOutcome {
            manifest,
            epochs_run,
            best_epoch,
        })
    }
}

/// Fits the temperature on the calibration cases `cal_idx` of `cal_data`, evaluates
/// the calibration and test splits into the manifest's metrics, and writes the bundle.
pub(crate) fn finish_bundle(
    mut predictor: Predictor,
    manifest: &mut Manifest,
    cal_data: &Dataset,
    cal_idx: &[usize],
    varmap: &VarMap,
    out: &Path,
    started: Instant,
) -> anyhow::Result<()> {
    let mut cal_raw: Option<RawOutputs> = None;
    for chunk in cal_idx.chunks(1000) {
        let mut rows = Vec::new();
        for &i in chunk {
            cal_data.extend_inputs(i, &mut rows);
        }
        let raw = predictor.raw_outputs(&rows)?;
        cal_raw = Some(match cal_raw {
            None => raw,
            Some(acc) => acc.concat(raw),
        });
    }
    let cal_raw = cal_raw.context("no calibration cases")?;
    let cal_soft: Vec<Vec<f32>> = cal_idx
        .iter()
        .filter_map(|&i| soft_label(cal_data.counts(i)))
        .collect();
    manifest.temperature = temperature::fit(&cal_raw, &cal_soft);
    predictor.set_temperature(manifest.temperature);
    tracing::info!(
        temperature = manifest.temperature,
        "temperature fitted on the calibration split's fitting part"
    );
    manifest.calibration = fit_calibrators(&cal_raw, manifest.temperature, cal_data, cal_idx);
    predictor.set_calibration(manifest.calibration.clone());
    for split in [Split::Calibration, Split::Test] {
        if cal_data.indices(Some(split))?.is_empty() {
            continue;
        }
        let ev = eval::evaluate(
            &predictor,
            cal_data,
            &EvalOptions {
                split: Some(split),
                class_groups: None,
            },
        )?;
        manifest
            .metrics
            .insert(split.to_string(), metrics_summary(&ev.report));
    }
    manifest.training.duration_seconds = started.elapsed().as_secs_f64();
    bundle::write_bundle(out, manifest, varmap)
}

/// Fits the isotonic calibrators of `â`, `D̂`, `ĥ` (`model::calibration`) on the
/// cases `idx` of `data`, whose raw outputs are `raw` (same order). `None` when
/// the cases carry no usable targets.
pub(crate) fn fit_calibrators(
    raw: &RawOutputs,
    temperature: f64,
    data: &Dataset,
    idx: &[usize],
) -> Option<Calibrators> {
    let preds = raw.predictions(temperature, None);
    let (mut a_s, mut a_t, mut d_s, mut d_t, mut h_s, mut h_t) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut with_reference = 0usize;
    for (p, &i) in preds.iter().zip(idx) {
        let counts = data.counts(i);
        let reference = data.reference(i);
        with_reference += usize::from(reference.is_some());
        if let Some(t) = model_error_target(counts, reference, p.class()) {
            a_s.push(f64::from(p.confidence_error()));
            a_t.push(t);
        }
        if let Some(t) = pairwise_disagreement(counts) {
            d_s.push(f64::from(p.disagreement));
            d_t.push(t);
        }
        if let Some(t) = human_error_target(counts, reference) {
            h_s.push(f64::from(p.human_error.unwrap_or(p.disagreement)));
            h_t.push(t);
        }
    }
    let c = Calibrators {
        model_error: Isotonic::fit(&a_s, &a_t)?,
        disagreement: Isotonic::fit(&d_s, &d_t)?,
        human_error: Isotonic::fit(&h_s, &h_t)?,
        target: if with_reference * 2 >= idx.len() {
            "reference label".into()
        } else {
            "leave-one-reader-out majority of the other readers".into()
        },
        fitted_on: format!(
            "{} cases of the calibration split's fitting part of {}",
            idx.len(),
            data.source()
        ),
    };
    c.validate().ok()?;
    Some(c)
}

/// The headline numbers stored in `model.json`.
fn metrics_summary(r: &eval::Report) -> serde_json::Value {
    serde_json::json!({
        "n": r.n,
        "accuracy_reference": r.classification.accuracy_reference,
        "accuracy_majority": r.classification.accuracy_majority,
        "nll": r.classification.nll,
        "ece": r.classification.ece,
        "dup_auc_any": r.disagreement.dup.auc_any,
        "uvc_auc_any": r.disagreement.uvc.auc_any,
        "dup_spearman": r.disagreement.dup.spearman,
        "uvc_spearman": r.disagreement.uvc.spearman,
    })
}

/// The heads to train: `class` and `disagreement` always, `human_error` when
/// training cases have references and its loss weight is positive.
pub(crate) fn heads_for(data: &Dataset, train_idx: &[usize], cfg: &TrainConfig) -> Vec<Head> {
    let with_reference = train_idx.iter().any(|&i| data.reference(i).is_some());
    let mut heads = vec![Head::Class, Head::Disagreement];
    if with_reference && cfg.human_error_weight > 0.0 {
        heads.push(Head::HumanError);
    }
    heads
}

/// Cases of `split` with at least one label (a case nobody labelled teaches nothing).
pub(crate) fn usable(data: &Dataset, split: Split) -> anyhow::Result<Vec<usize>> {
    Ok(data
        .indices(Some(split))?
        .into_iter()
        .filter(|&i| data.counts(i).iter().any(|&c| c > 0))
        .collect())
}

fn random_split(n: usize, seed: u64) -> Vec<Split> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0053_504c_4954);
    let mut split: Vec<Split> = (0..n)
        .map(|i| match i * 10 / n.max(1) {
            0..=5 => Split::Train,
            6 | 7 => Split::Calibration,
            _ => Split::Test,
        })
        .collect();
    split.shuffle(&mut rng);
    split
}

pub(crate) fn mean_target(
    data: &Dataset,
    idx: &[usize],
    f: impl Fn(&[u32], Option<usize>) -> Option<f64>,
) -> Option<f64> {
    let v: Vec<f64> = idx
        .iter()
        .filter_map(|&i| f(data.counts(i), data.reference(i)))
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn split_tensors(
    data: &Dataset,
    idx: &[usize],
    st: &Standardizer,
    device: &Device,
) -> anyhow::Result<SplitTensors> {
    let n = idx.len();
    let k = data.num_classes();
    let mut x = Vec::with_capacity(n * st.dim());
    let mut soft = Vec::with_capacity(n * k);
    let (mut d, mut d_mask, mut h, mut h_mask) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &i in idx {
        let mut row = data.features(i).context("feature row")?.to_vec();
        st.apply(&mut row);
        x.extend(row);
        soft.extend(soft_label(data.counts(i)).context("labelled case")?);
        let di = pairwise_disagreement(data.counts(i));
        d.push(di.unwrap_or(0.0) as f32);
        d_mask.push(if di.is_some() { 1.0f32 } else { 0.0 });
        let hi = human_error(data.counts(i), data.reference(i));
        h.push(hi.unwrap_or(0.0) as f32);
        h_mask.push(if hi.is_some() { 1.0f32 } else { 0.0 });
    }
    let d_count = d_mask.iter().map(|&v| f64::from(v)).sum();
    let h_count = h_mask.iter().map(|&v| f64::from(v)).sum();
    Ok(SplitTensors {
        x: Tensor::from_vec(x, (n, st.dim()), device)?,
        soft: Tensor::from_vec(soft, (n, k), device)?,
        d: Tensor::from_vec(d, n, device)?,
        d_mask: Tensor::from_vec(d_mask, n, device)?,
        d_count,
        h: Tensor::from_vec(h, n, device)?,
        h_mask: Tensor::from_vec(h_mask, n, device)?,
        h_count,
        n,
    })
}

fn select(t: &SplitTensors, idx: &Tensor, n: usize) -> candle_core::Result<SplitTensors> {
    let d_mask = t.d_mask.index_select(idx, 0)?;
    let h_mask = t.h_mask.index_select(idx, 0)?;
    Ok(SplitTensors {
        x: t.x.index_select(idx, 0)?,
        soft: t.soft.index_select(idx, 0)?,
        d: t.d.index_select(idx, 0)?,
        d_count: f64::from(d_mask.sum_all()?.to_scalar::<f32>()?),
        d_mask,
        h: t.h.index_select(idx, 0)?,
        h_count: f64::from(h_mask.sum_all()?.to_scalar::<f32>()?),
        h_mask,
        n,
    })
}

fn batch_loss(
    net: &TriageNet,
    b: &SplitTensors,
    cfg: &TrainConfig,
    dropout: Option<&mut Dropout>,
) -> candle_core::Result<Tensor> {
    combined_loss(net.forward(&b.x, dropout)?, b, cfg)
}

/// Sum over ensemble members of `CE + w_d·BCE(D) + w_h·BCE(H)`.
pub(crate) fn combined_loss(
    outputs: Vec<MemberOutputs>,
    b: &SplitTensors,
    cfg: &TrainConfig,
) -> candle_core::Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for out in outputs {
        let mut l = loss::soft_cross_entropy(&out.class_logits, &b.soft)?;
        let ld = loss::masked_bce_with_logits(&out.disagreement_logit, &b.d, &b.d_mask, b.d_count)?;
        l = (l + (ld * cfg.dup_weight)?)?;
        if let Some(z) = &out.human_error_logit {
            let lh = loss::masked_bce_with_logits(z, &b.h, &b.h_mask, b.h_count)?;
            l = (l + (lh * cfg.human_error_weight)?)?;
        }
        total = Some(match total {
            Some(t) => (t + l)?,
            None => l,
        });
    }
    total.ok_or_else(|| candle_core::Error::Msg("empty ensemble".into()))
}

/// Seeded initialisation, independent of candle's global generator: weights and
/// biases `U(−1/√fan_in, 1/√fan_in)`; the D and H head biases start at the logit of
/// the training mean, so the heads begin at the base rate.
pub(crate) fn initialise(
    varmap: &VarMap,
    seed: u64,
    mean_d: Option<f64>,
    mean_h: Option<f64>,
) -> anyhow::Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned VarMap"))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &vars[name];
        let dims = var.dims().to_vec();
        let count: usize = dims.iter().product();
        // Batch-norm starts as the identity: γ = 1, β = 0, running stats (0, 1).
        let constant = match name.rsplit('.').next() {
            Some("gamma" | "running_var") => Some(1.0f32),
            Some("beta" | "running_mean") => Some(0.0f32),
            _ => None,
        };
        if let Some(c) = constant {
            var.set(&Tensor::from_vec(
                vec![c; count],
                dims.as_slice(),
                var.device(),
            )?)?;
            continue;
        }
        let fan_in = if name.ends_with(".kernel") {
            // Conv kernels are stored `[9·C_in, C_out]`.
            dims[0]
        } else if name.ends_with(".weight") {
            dims[1]
        } else {
            let w = name.trim_end_matches(".bias").to_string() + ".weight";
            vars.get(&w).map_or(1, |w| w.dims()[1])
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let base_rate = match () {
            _ if name.ends_with("disagreement.bias") => mean_d,
            _ if name.ends_with("human_error.bias") => mean_h,
            _ => None,
        };
        let values: Vec<f32> = match base_rate {
            Some(m) => {
                let m = m.clamp(1e-3, 1.0 - 1e-3);
                vec![(m / (1.0 - m)).ln() as f32; count]
            }
            None => (0..count).map(|_| rng.gen_range(-bound..bound)).collect(),
        };
        var.set(&Tensor::from_vec(values, dims.as_slice(), var.device())?)?;
    }
    Ok(())
}

pub(crate) fn snapshot_vars(varmap: &VarMap) -> anyhow::Result<Vec<(String, Tensor)>> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned VarMap"))?;
    vars.iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
        .collect()
}

pub(crate) fn restore_vars(varmap: &VarMap, snapshot: &[(String, Tensor)]) -> anyhow::Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned VarMap"))?;
    for (name, t) in snapshot {
        vars[name].set(t)?;
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// How a bundle names the data it came from: the file's name only. An absolute
/// path would record the training machine's layout (and its user's folders);
/// the SHA-256 beside it identifies the content.
pub fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
