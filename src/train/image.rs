//! Training the image model (`architecture.kind = "cnn"`): mini-batches drawn
//! from the u8 images with random-crop and horizontal-flip augmentation, the same
//! soft-label CE + DUP (+ human-error) loss as the MLP, AdamW with a warm-up then
//! cosine learning-rate schedule, batch-norm running statistics, a checkpoint after
//! every epoch, and the best epoch by calibration loss kept.
//!
//! The calibration (and test) cases may come from a second data set: the CIFAR
//! protocol trains on CIFAR-10N's train images and calibrates on CIFAR-10H's
//! calibration half.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    combined_loss, heads_for, initialise, mean_target, restore_vars, snapshot_vars, usable,
};
use super::{TrainConfig, TrainOutcome, TrainedRun};
use crate::data::targets::{human_error, pairwise_disagreement, soft_label};
use crate::data::{Dataset, Inputs, Split};
use crate::model::bundle;
use crate::model::cnn::{BatchStats, ConvNet, ImageShape};
use crate::model::net::Dropout;
use crate::model::preprocess::Standardizer;
use crate::model::{Architecture, InputSchema};

/// Momentum of the batch-norm running statistics (weight of the old value).
const BN_MOMENTUM: f64 = 0.9;
/// Zero padding around an image before the random crop back to its size.
const CROP_PAD: usize = 4;
/// Fraction of the steps spent warming the learning rate up.
const WARMUP_FRACTION: f64 = 0.05;
/// Images per forward pass when evaluating.
const EVAL_CHUNK: usize = 500;
/// Weights after the latest epoch, for inspection or rescue of a long run.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Parses `--stages`: stages separated by commas, the conv blocks of a stage by
/// `+` (`32,64+64,128+128`).
pub fn parse_stages(text: &str) -> anyhow::Result<Vec<Vec<usize>>> {
    text.split(',')
        .map(|stage| {
            stage
                .split('+')
                .map(|w| {
                    let w: usize = w.trim().parse().with_context(|| {
                        format!("--stages: '{w}' in '{text}' is not a channel count")
                    })?;
                    anyhow::ensure!(w > 0, "--stages: channel counts must be positive");
                    Ok(w)
                })
                .collect()
        })
        .collect()
}

/// The images, targets and geometry of one group of cases.
struct ImageSet<'a> {
    data: &'a Dataset,
    idx: Vec<usize>,
    soft: Vec<f32>,
    d: Vec<f32>,
    d_mask: Vec<f32>,
    h: Vec<f32>,
    h_mask: Vec<f32>,
}

impl<'a> ImageSet<'a> {
    fn new(data: &'a Dataset, idx: Vec<usize>) -> anyhow::Result<ImageSet<'a>> {
        let mut set = ImageSet {
            data,
            idx: Vec::new(),
            soft: Vec::new(),
            d: Vec::new(),
            d_mask: Vec::new(),
            h: Vec::new(),
            h_mask: Vec::new(),
        };
        for i in idx {
            set.soft
                .extend(soft_label(data.counts(i)).context("labelled case")?);
            let di = pairwise_disagreement(data.counts(i));
            set.d.push(di.unwrap_or(0.0) as f32);
            set.d_mask.push(if di.is_some() { 1.0 } else { 0.0 });
            let hi = human_error(data.counts(i), data.reference(i));
            set.h.push(hi.unwrap_or(0.0) as f32);
            set.h_mask.push(if hi.is_some() { 1.0 } else { 0.0 });
            set.idx.push(i);
        }
        Ok(set)
    }

    fn len(&self) -> usize {
        self.idx.len()
    }

    /// The batch of positions `pos` (into `idx`): normalised NHWC images, with
    /// augmentation when `rng` is given, and their targets.
    fn batch(
        &self,
        pos: &[usize],
        shape: ImageShape,
        norm: &Standardizer,
        rng: Option<&mut ChaCha8Rng>,
        device: &Device,
    ) -> anyhow::Result<super::SplitTensors> {
        let ImageShape {
            height: h,
            width: w,
            channels: c,
        } = shape;
        let Inputs::Images { pixels, .. } = self.data.inputs() else {
            anyhow::bail!("not an image data set");
        };
        let len = h * w * c;
        let mut x = vec![0f32; pos.len() * len];
        // Zero padding is zero *after* normalisation: the channel mean in pixels.
        let mut rng = rng;
        for (b, &p) in pos.iter().enumerate() {
            let img = &pixels[self.idx[p] * len..(self.idx[p] + 1) * len];
            let out = &mut x[b * len..(b + 1) * len];
            let (dy, dx, flip) = match rng.as_deref_mut() {
                Some(r) => (
                    r.gen_range(0..=2 * CROP_PAD) as isize - CROP_PAD as isize,
                    r.gen_range(0..=2 * CROP_PAD) as isize - CROP_PAD as isize,
                    r.gen::<bool>(),
                ),
                None => (0, 0, false),
            };
            for y in 0..h {
                let sy = y as isize + dy;
                for xx in 0..w {
                    let sx0 = if flip { w - 1 - xx } else { xx };
                    let sx = sx0 as isize + dx;
                    let o = &mut out[(y * w + xx) * c..(y * w + xx + 1) * c];
                    if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                        o.copy_from_slice(&norm.mean[..c]);
                    } else {
                        let s = (sy as usize * w + sx as usize) * c;
                        for (v, &px) in o.iter_mut().zip(&img[s..s + c]) {
                            *v = f32::from(px);
                        }
                    }
                }
            }
        }
        norm.apply_channels(&mut x);
        let n = pos.len();
        let k = self.data.num_classes();
        let pick = |v: &[f32], width: usize| -> Vec<f32> {
            pos.iter()
                .flat_map(|&p| v[p * width..(p + 1) * width].iter().copied())
                .collect()
        };
        let d_mask = pick(&self.d_mask, 1);
        let h_mask = pick(&self.h_mask, 1);
        Ok(super::SplitTensors {
            x: Tensor::from_vec(x, (n, h, w, c), device)?,
            soft: Tensor::from_vec(pick(&self.soft, k), (n, k), device)?,
            d: Tensor::from_vec(pick(&self.d, 1), n, device)?,
            d_count: d_mask.iter().map(|&v| f64::from(v)).sum(),
            d_mask: Tensor::from_vec(d_mask, n, device)?,
            h: Tensor::from_vec(pick(&self.h, 1), n, device)?,
            h_count: h_mask.iter().map(|&v| f64::from(v)).sum(),
            h_mask: Tensor::from_vec(h_mask, n, device)?,
            n,
        })
    }
}

/// Learning rate at `step` of `total`: linear warm-up, then cosine decay to 1% of
/// the peak.
fn learning_rate(peak: f64, step: usize, total: usize) -> f64 {
    let warmup = ((total as f64 * WARMUP_FRACTION) as usize).max(1);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    peak * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Trains the CNN on the train split of `data` (every case, when it has no split),
/// calibrating on the calibration split of `calibration` (or of `data`).
#[allow(clippy::too_many_arguments)]
pub fn train_images(
    data: &Dataset,
    data_path: &Path,
    calibration: Option<(&Dataset, &Path)>,
    out: &Path,
    cfg: &TrainConfig,
    stages: Vec<Vec<usize>>,
    device: &Device,
    show_progress: bool,
) -> anyhow::Result<TrainOutcome> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let (name, version) = bundle::name_and_version(out)?;
    let &Inputs::Images {
        height,
        width,
        channels,
        ..
    } = data.inputs()
    else {
        anyhow::bail!("train_images needs an image data set");
    };
    let shape = ImageShape {
        height,
        width,
        channels,
    };
    let k = data.num_classes();
    let (cal_data, cal_path) = calibration.unwrap_or((data, data_path));
    anyhow::ensure!(
        cal_data.inputs().case_len() == data.inputs().case_len()
            && matches!(cal_data.inputs(), Inputs::Images { .. }),
        "the calibration data set's images are not {height}×{width}×{channels}"
    );
    anyhow::ensure!(
        cal_data.class_names() == data.class_names(),
        "the calibration data set's classes {:?} differ from the training set's {:?}",
        cal_data.class_names(),
        data.class_names()
    );
    let train_idx: Vec<usize> = match data.splits() {
        Some(_) => usable(data, Split::Train)?,
        None => (0..data.len())
            .filter(|&i| data.counts(i).iter().any(|&c| c > 0))
            .collect(),
    };
    // Only the fitting part of the calibration split: the certification part
    // stays unseen by early stopping, the temperature and the calibrators.
    let cal_parts = cal_data.calibration_parts(&usable(cal_data, Split::Calibration)?);
    let cal_idx = cal_parts.fit.clone();
    anyhow::ensure!(
        train_idx.len() >= 2,
        "the train split has {} labelled images; need at least 2",
        train_idx.len()
    );
    anyhow::ensure!(
        !cal_idx.is_empty(),
        "no labelled images in the calibration split of {}",
        cal_path.display()
    );

    let Inputs::Images { pixels, .. } = data.inputs() else {
        unreachable!("checked above")
    };
    let len = height * width * channels;
    let train_pixels: Vec<u8> = train_idx
        .iter()
        .flat_map(|&i| pixels[i * len..(i + 1) * len].iter().copied())
        .collect();
    let norm = Standardizer::fit_channels(&train_pixels, channels);
    drop(train_pixels);
    let heads = heads_for(data, &train_idx, cfg);
    let arch = Architecture {
        kind: "cnn".into(),
        stages: Some(stages),
        hidden: cfg.hidden.clone(),
        dropout: cfg.dropout,
        ensemble: cfg.ensemble,
    };
    let train_set = ImageSet::new(data, train_idx.clone())?;
    let cal_set = ImageSet::new(cal_data, cal_idx.clone())?;

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = ConvNet::new(&arch, shape, k, &heads, vb)?;
    let mean_d = mean_target(data, &train_idx, |c, _| pairwise_disagreement(c));
    let mean_h = mean_target(data, &train_idx, human_error);
    initialise(&varmap, cfg.seed, mean_d, mean_h)?;
    // Running statistics are state, not parameters: the optimiser never sees them.
    let trainable: Vec<candle_core::Var> = {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned VarMap"))?;
        let mut named: Vec<_> = vars
            .iter()
            .filter(|(n, _)| !n.contains(".running_"))
            .collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named.into_iter().map(|(_, v)| v.clone()).collect()
    };
    let mut opt = AdamW::new(
        trainable,
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x7472_6169_6e00);
    let mut aug_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6175_676d);
    let mut dropout = Dropout {
        p: cfg.dropout,
        rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6472_6f70),
    };

    let steps_per_epoch = train_set.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let bar = if show_progress {
        ProgressBar::new(total_steps as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} train [{bar:30}] step {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let evaluate_cal = |net: &ConvNet| -> anyhow::Result<(f64, f64)> {
        let mut loss_sum = 0.0;
        let mut correct = 0usize;
        let positions: Vec<usize> = (0..cal_set.len()).collect();
        for chunk in positions.chunks(EVAL_CHUNK) {
            let b = cal_set.batch(chunk, shape, &norm, None, device)?;
            let outputs = net.forward(&b.x, None)?;
            let probs = outputs[0].class_logits.argmax(1)?.to_vec1::<u32>()?;
            for (j, &p) in chunk.iter().enumerate() {
                let i = cal_set.idx[p];
                let want = cal_data
                    .reference(i)
                    .or_else(|| crate::data::targets::majority(cal_data.counts(i)));
                correct += usize::from(want == Some(probs[j] as usize));
            }
            let l = combined_loss(outputs, &b, cfg)?.to_scalar::<f32>()?;
            loss_sum += f64::from(l) * chunk.len() as f64;
        }
        Ok((
            loss_sum / cal_set.len() as f64 / cfg.ensemble as f64,
            correct as f64 / cal_set.len() as f64,
        ))
    };
    let (initial_loss, _) = evaluate_cal(&net)?;
    let mut order: Vec<usize> = (0..train_set.len()).collect();
    let mut best = (f64::INFINITY, 0usize);
    let mut epochs_run = 0;
    let mut snapshot = snapshot_vars(&varmap)?;
    let mut step = 0usize;
    let mut stats: Vec<BatchStats> = Vec::new();
    for epoch in 1..=cfg.epochs {
        let epoch_started = Instant::now();
        order.shuffle(&mut rng);
        let (mut epoch_loss, mut batches) = (0.0, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            if chunk.len() < 2 {
                continue; // batch-norm needs at least two images
            }
            opt.set_learning_rate(learning_rate(cfg.learning_rate, step, total_steps));
            let batch = train_set.batch(chunk, shape, &norm, Some(&mut aug_rng), device)?;
            stats.clear();
            let outputs = net.forward(&batch.x, Some((&mut dropout, &mut stats)))?;
            let loss = combined_loss(outputs, &batch, cfg)?;
            opt.backward_step(&loss)?;
            update_running_stats(&varmap, &stats)?;
            let l = f64::from(loss.to_scalar::<f32>()?) / cfg.ensemble as f64;
            anyhow::ensure!(
                l.is_finite(),
                "training diverged at epoch {epoch} (loss {l}); lower --learning-rate"
            );
            epoch_loss += l;
            batches += 1;
            step += 1;
            bar.set_position(step as u64);
            if batches % 20 == 0 {
                bar.set_message(format!(
                    "epoch {epoch}/{} loss {:.4}",
                    cfg.epochs,
                    epoch_loss / batches as f64
                ));
            }
        }
        let (cal_loss, cal_acc) = evaluate_cal(&net)?;
        if cal_loss < best.0 - 1e-6 {
            best = (cal_loss, epoch);
            snapshot = snapshot_vars(&varmap)?;
        }
        epochs_run = epoch;
        let train_loss = epoch_loss / batches.max(1) as f64;
        let seconds = epoch_started.elapsed().as_secs_f64();
        tracing::info!(
            epoch,
            train_loss,
            cal_loss,
            cal_accuracy = cal_acc,
            images_per_second = (batches * cfg.batch_size) as f64 / seconds,
            "epoch done"
        );
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let ckpt = out.join(CHECKPOINT_FILE);
        varmap
            .save(&ckpt)
            .with_context(|| format!("writing {}", ckpt.display()))?;
        // Early stopping, as for the MLP: no better calibration loss for
        // `patience` epochs.
        if epoch - best.1 >= cfg.patience {
            tracing::info!(
                epoch,
                best_epoch = best.1,
                patience = cfg.patience,
                "early stop"
            );
            break;
        }
    }
    bar.finish_and_clear();
    restore_vars(&varmap, &snapshot)?;
    tracing::info!(
        best_epoch = best.1,
        best_calibration_loss = best.0,
        "training finished"
    );

    let split_note = match calibration {
        Some((_, p)) => format!(
            "train: every labelled image of {}; calibration: the calibration split of {}",
            super::file_label(data_path),
            super::file_label(p)
        ),
        None => "from the data set's split tensor".into(),
    };
    TrainedRun {
        name,
        version,
        architecture: arch,
        input: InputSchema::Image {
            height,
            width,
            channels,
        },
        preprocessing: norm,
        heads,
        data,
        data_path,
        split_note,
        n_train: train_idx.len(),
        epochs_run,
        best,
        initial_loss,
        started,
        started_at,
    }
    .finish(&varmap, cal_data, &cal_parts, out, cfg, device)
}

/// Folds this step's batch statistics into the running statistics.
fn update_running_stats(varmap: &VarMap, stats: &[BatchStats]) -> anyhow::Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned VarMap"))?;
    for s in stats {
        for (suffix, batch) in [("running_mean", &s.mean), ("running_var", &s.var)] {
            let name = format!("{}.{suffix}", s.prefix);
            let var = vars
                .get(&name)
                .with_context(|| format!("no variable {name}"))?;
            let updated = ((var.as_tensor() * BN_MOMENTUM)? + (batch * (1.0 - BN_MOMENTUM))?)?;
            var.set(&updated)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_and_reject_nonsense() {
        assert_eq!(
            parse_stages("32,64+64,128").unwrap(),
            vec![vec![32], vec![64, 64], vec![128]]
        );
        assert!(parse_stages("32,,64").is_err());
        assert!(parse_stages("0").is_err());
        assert!(parse_stages("a").is_err());
    }

    #[test]
    fn learning_rate_warms_up_then_decays() {
        let total = 1000;
        assert!(learning_rate(1.0, 0, total) < 0.1);
        assert!((learning_rate(1.0, 49, total) - 1.0).abs() < 1e-9);
        assert!(learning_rate(1.0, 500, total) < learning_rate(1.0, 100, total));
        assert!((learning_rate(1.0, 999, total) - 0.01).abs() < 1e-3);
    }
}
