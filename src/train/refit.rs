//! Head-only refit (`train --refit-heads FROM`): keeps a trained bundle's body and
//! class head frozen and fits new disagreement and human-error heads on a richly
//! labelled set — e.g. CIFAR-10H's ~51 labels per image, where the body was
//! trained on CIFAR-10N's 3. The heads are logistic regressions on the last
//! hidden layer (the same `Linear(width, 1)` + sigmoid the network has), fitted
//! with soft targets `√D` and `H` and an L2 penalty chosen by 5-fold
//! cross-validation within the fitting part: a convex problem, so no early
//! stopping is needed.
//!
//! The cases used are the *fitting part* of the data set's calibration split
//! (`Dataset::calibration_parts`), which also refits the temperature and the
//! calibrators; the certification part and the test split are never seen.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};

use super::{file_label, finish_bundle, sha256_file, usable, TrainOutcome};
use crate::data::targets::{any_disagreement, human_error_target, pairwise_disagreement};
use crate::data::{splitmix64, Dataset, Split};
use crate::eval::metrics::roc_auc;
use crate::model::bundle::{self, WEIGHTS_FILE};
use crate::model::predictor::Network;
use crate::model::{Head, Predictor};

/// L2 penalties on the head weights (on standardised features) tried by
/// cross-validation.
const L2_GRID: [f64; 5] = [0.003, 0.01, 0.03, 0.1, 0.3];
const FOLDS: u64 = 5;
/// Full-batch Adam steps.
const STEPS: usize = 600;
const LEARNING_RATE: f64 = 0.05;

/// Refits the disagreement and human-error heads of the bundle in `from` on the
/// calibration fitting part of `data`, writing a new bundle into `out`.
pub fn refit_heads(
    from: &Path,
    data: &Dataset,
    data_path: &Path,
    out: &Path,
    device: &Device,
    show_progress: bool,
) -> anyhow::Result<TrainOutcome> {
    let started = Instant::now();
    let (name, version) = bundle::name_and_version(out)?;
    let base = Predictor::load(from, device)
        .with_context(|| format!("loading the bundle to refit, {}", from.display()))?;
    let base_manifest = base.manifest().clone();
    anyhow::ensure!(
        base_manifest.input_dim() == data.inputs().case_len()
            && base_manifest.classes == data.class_names(),
        "{} does not fit the data set: its inputs or classes differ",
        from.display()
    );
    let parts = data.calibration_parts(&usable(data, Split::Calibration)?);
    let idx = parts.fit.clone();
    anyhow::ensure!(
        idx.len() >= 50,
        "the calibration split's fitting part has {} labelled cases; a head refit needs at least 50",
        idx.len()
    );

    // The frozen body's features of every fitting case, per ensemble member.
    let bar = if show_progress {
        ProgressBar::new(idx.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} features [{bar:30}] {pos}/{len} ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut features: Vec<Vec<f32>> = Vec::new();
    let mut width = 0;
    for chunk in idx.chunks(256) {
        let mut rows = Vec::new();
        for &i in chunk {
            data.extend_inputs(i, &mut rows);
        }
        let (f, w) = base.features(&rows)?;
        width = w;
        if features.is_empty() {
            features = f;
        } else {
            for (acc, more) in features.iter_mut().zip(f) {
                acc.extend(more);
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();

    // √D: with ~50 labels most images have D near 0, and whether a case has any
    // disagreement at all is decided in that range; the square root spreads it.
    // The served D̂ is recalibrated to D itself afterwards (isotonic, monotone).
    let d_target: Vec<Option<f64>> = idx
        .iter()
        .map(|&i| pairwise_disagreement(data.counts(i)).map(f64::sqrt))
        .collect();
    let any: Vec<Option<bool>> = idx
        .iter()
        .map(|&i| any_disagreement(data.counts(i)))
        .collect();
    let h_target: Vec<Option<f64>> = idx
        .iter()
        .map(|&i| human_error_target(data.counts(i), data.reference(i)))
        .collect();

    let mut manifest = base_manifest.clone();
    manifest.name = name;
    manifest.version = version;
    if !manifest.heads.contains(&Head::HumanError) {
        manifest.heads.push(Head::HumanError);
    }
    manifest.calibration = None;
    manifest.metrics = serde_json::Map::new();
    manifest.training.split = format!(
        "body and class head: {} (from bundle {} version {}); disagreement and human-error heads refitted on {}; {}",
        base_manifest.training.split,
        base_manifest.name,
        base_manifest.version,
        file_label(data_path),
        parts.describe()
    );
    manifest.training.data_source = format!(
        "{}; head refit: {}",
        base_manifest.training.data_source,
        data.source()
    );
    manifest.training.data_file = file_label(data_path);
    manifest.training.data_sha256 = sha256_file(data_path)?;
    manifest.training.n_calibration = idx.len();

    // The new network's variables: the base weights, then the refitted heads.
    let varmap = VarMap::new();
    let _shape = Network::new(
        &manifest,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
    )?;
    let saved = candle_core::safetensors::load(from.join(WEIGHTS_FILE), device)
        .with_context(|| format!("reading {}", from.join(WEIGHTS_FILE).display()))?;
    for (name, var) in varmap.data().lock().expect("var map lock").iter() {
        if let Some(t) = saved.get(name) {
            var.set(t)?;
        }
    }
    for (m, member_features) in features.iter().enumerate() {
        let l2 = choose_l2(member_features, width, &d_target, &any);
        tracing::info!(
            member = m,
            l2,
            "L2 penalty chosen by 5-fold cross-validation"
        );
        for (head, targets) in [("disagreement", &d_target), ("human_error", &h_target)] {
            let (w, b) = fit_logistic(member_features, width, targets, l2);
            set_var(
                &varmap,
                &format!("member{m}.{head}.weight"),
                Tensor::from_vec(w, (1, width), device)?,
            )?;
            set_var(
                &varmap,
                &format!("member{m}.{head}.bias"),
                Tensor::from_vec(vec![b], 1, device)?,
            )?;
        }
        tracing::info!(member = m, cases = idx.len(), "heads refitted");
    }

    let net = Network::new(
        &manifest,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
    )?;
    let predictor = Predictor::from_parts(manifest.clone(), net, device.clone(), out.to_path_buf());
    finish_bundle(predictor, &mut manifest, data, &idx, &varmap, out, started)?;
    Ok(TrainOutcome {
        manifest,
        epochs_run: 0,
        best_epoch: 0,
    })
}

/// The L2 penalty of [`L2_GRID`] whose disagreement head ranks held-out cases
/// best by ROC-AUC for "any disagreement" (D > 0), over 5 folds of the fitting
/// part (by a hash of the position): chosen without the certification part or
/// the test split.
fn choose_l2(x: &[f32], width: usize, targets: &[Option<f64>], any: &[Option<bool>]) -> f64 {
    let fold = |i: usize| splitmix64(i as u64 ^ 0x666f_6c64) % FOLDS;
    let mut best = (f64::NEG_INFINITY, L2_GRID[0]);
    for &l2 in &L2_GRID {
        let (mut scores, mut positive) = (Vec::new(), Vec::new());
        for f in 0..FOLDS {
            let train: Vec<Option<f64>> = targets
                .iter()
                .enumerate()
                .map(|(i, t)| if fold(i) == f { None } else { *t })
                .collect();
            let (w, b) = fit_logistic(x, width, &train, l2);
            for (i, a) in any.iter().enumerate() {
                if let (true, Some(a)) = (fold(i) == f, a) {
                    let row = &x[i * width..(i + 1) * width];
                    scores.push(
                        f64::from(b)
                            + row
                                .iter()
                                .zip(&w)
                                .map(|(v, w)| f64::from(v * w))
                                .sum::<f64>(),
                    );
                    positive.push(*a);
                }
            }
        }
        let auc = roc_auc(&scores, &positive).unwrap_or(0.5);
        tracing::debug!(l2, auc, "cross-validated ROC-AUC (D > 0)");
        if auc > best.0 {
            best = (auc, l2);
        }
    }
    best.1
}

fn set_var(varmap: &VarMap, name: &str, value: Tensor) -> anyhow::Result<()> {
    let data = varmap.data().lock().expect("var map lock");
    let var = data
        .get(name)
        .with_context(|| format!("the network has no variable {name}"))?;
    var.set(&value)?;
    Ok(())
}

/// Logistic regression of soft targets in [0, 1] on `x` (`[n, width]` row-major),
/// with an L2 penalty, by full-batch Adam on standardised features. Rows whose
/// target is `None` are skipped. Returns the weights and bias on the original
/// feature scale.
pub(crate) fn fit_logistic(
    x: &[f32],
    width: usize,
    targets: &[Option<f64>],
    l2: f64,
) -> (Vec<f32>, f32) {
    let rows: Vec<(usize, f64)> = targets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.map(|t| (i, t.clamp(0.0, 1.0))))
        .collect();
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0f64; width];
    let mut sd = vec![0.0f64; width];
    for &(i, _) in &rows {
        for (j, m) in mean.iter_mut().enumerate() {
            *m += f64::from(x[i * width + j]) / n;
        }
    }
    for &(i, _) in &rows {
        for (j, s) in sd.iter_mut().enumerate() {
            *s += (f64::from(x[i * width + j]) - mean[j]).powi(2) / n;
        }
    }
    let sd: Vec<f64> = sd.iter().map(|v| v.sqrt().max(1e-6)).collect();
    // The standardised rows, computed once rather than in every step.
    let z: Vec<Vec<f64>> = rows
        .iter()
        .map(|&(i, _)| {
            (0..width)
                .map(|j| (f64::from(x[i * width + j]) - mean[j]) / sd[j])
                .collect()
        })
        .collect();
    let base = rows.iter().map(|r| r.1).sum::<f64>() / n;
    let base = base.clamp(1e-4, 1.0 - 1e-4);
    let mut w = vec![0.0f64; width];
    let mut b = (base / (1.0 - base)).ln();
    let (mut mw, mut vw) = (vec![0.0; width], vec![0.0; width]);
    let (mut mb, mut vb) = (0.0f64, 0.0f64);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let mut grad = vec![0.0f64; width];
    for step in 1..=STEPS {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut gb = 0.0;
        for (&(_, t), zi) in rows.iter().zip(&z) {
            let logit = b + (0..width).map(|j| w[j] * zi[j]).sum::<f64>();
            let p = 1.0 / (1.0 + (-logit).exp());
            let r = (p - t) / n;
            gb += r;
            for (g, v) in grad.iter_mut().zip(zi) {
                *g += r * v;
            }
        }
        for (j, g) in grad.iter_mut().enumerate() {
            *g += l2 * w[j];
        }
        let c1 = 1.0 - b1.powi(step as i32);
        let c2 = 1.0 - b2.powi(step as i32);
        for j in 0..width {
            mw[j] = b1 * mw[j] + (1.0 - b1) * grad[j];
            vw[j] = b2 * vw[j] + (1.0 - b2) * grad[j] * grad[j];
            w[j] -= LEARNING_RATE * (mw[j] / c1) / ((vw[j] / c2).sqrt() + eps);
        }
        mb = b1 * mb + (1.0 - b1) * gb;
        vb = b2 * vb + (1.0 - b2) * gb * gb;
        b -= LEARNING_RATE * (mb / c1) / ((vb / c2).sqrt() + eps);
    }
    let weights: Vec<f32> = (0..width).map(|j| (w[j] / sd[j]) as f32).collect();
    let bias = b - (0..width).map(|j| w[j] * mean[j] / sd[j]).sum::<f64>();
    (weights, bias as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_fit_recovers_a_soft_target() {
        // One informative feature: t = sigmoid(2·x − 1); one noise feature.
        let n = 400;
        let mut x = Vec::new();
        let mut t = Vec::new();
        for i in 0..n {
            let a = (i as f32 / n as f32) * 4.0 - 2.0;
            let noise = ((i * 7919) % 13) as f32 / 13.0;
            x.extend([a, noise]);
            t.push(Some(1.0 / (1.0 + (-(2.0 * f64::from(a) - 1.0)).exp())));
        }
        let (w, b) = fit_logistic(&x, 2, &t, 1e-3);
        assert!((w[0] - 2.0).abs() < 0.3, "{w:?} {b}");
        assert!(w[1].abs() < 0.3, "{w:?}");
        assert!((b + 1.0).abs() < 0.3, "{b}");
    }
}
