//! Input preprocessing stored in the bundle: an optional signed `log1p` per feature
//! (for heavy-tailed measurements such as nodule volume) followed by standardisation
//! with the training split's mean and standard deviation.

use serde::{Deserialize, Serialize};

/// Skewness above which a non-negative feature is log-transformed.
const LOG_SKEW_THRESHOLD: f64 = 2.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Per feature: apply `sign(x)·ln(1+|x|)` before standardising.
    pub log1p: Vec<bool>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fits on the rows given (`dim` values each).
    pub fn fit(rows: &[&[f32]], dim: usize) -> Standardizer {
        let n = rows.len().max(1) as f64;
        let column = |j: usize| rows.iter().map(move |r| f64::from(r[j]));
        let mut log1p = Vec::with_capacity(dim);
        let mut mean = Vec::with_capacity(dim);
        let mut std = Vec::with_capacity(dim);
        for j in 0..dim {
            let nonneg = column(j).all(|v| v >= 0.0);
            let take_log = nonneg && skewness(column(j), n) > LOG_SKEW_THRESHOLD;
            let t = |v: f64| if take_log { signed_log1p(v) } else { v };
            let m = column(j).map(t).sum::<f64>() / n;
            let var = column(j).map(|v| (t(v) - m).powi(2)).sum::<f64>() / n;
            log1p.push(take_log);
            mean.push(m as f32);
            // A constant column carries no information; std 1 keeps it at zero.
            std.push(if var > 1e-12 { var.sqrt() as f32 } else { 1.0 });
        }
        Standardizer { log1p, mean, std }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Transforms one row in place.
    pub fn apply(&self, row: &mut [f32]) {
        for (j, v) in row.iter_mut().enumerate() {
            let x = if self.log1p[j] {
                signed_log1p(f64::from(*v)) as f32
            } else {
                *v
            };
            *v = (x - self.mean[j]) / self.std[j];
        }
    }

    /// Per-channel normalisation for images, in pixel units (0–255): mean and
    /// standard deviation of each channel over the training images.
    pub fn fit_channels(pixels: &[u8], channels: usize) -> Standardizer {
        let mut sum = vec![0f64; channels];
        let mut sum_sq = vec![0f64; channels];
        for px in pixels.chunks_exact(channels) {
            for (c, &v) in px.iter().enumerate() {
                sum[c] += f64::from(v);
                sum_sq[c] += f64::from(v) * f64::from(v);
            }
        }
        let n = (pixels.len() / channels.max(1)).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sum_sq
            .iter()
            .zip(&mean)
            .map(|(s2, m)| {
                let var = s2 / n - m * m;
                if var > 1e-6 {
                    var.sqrt() as f32
                } else {
                    1.0
                }
            })
            .collect();
        Standardizer {
            log1p: vec![false; channels],
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        }
    }

    /// Normalises interleaved pixels (`…, c0, c1, c2, …`) in place, channel by channel.
    pub fn apply_channels(&self, pixels: &mut [f32]) {
        let c = self.dim();
        for px in pixels.chunks_exact_mut(c) {
            for (j, v) in px.iter_mut().enumerate() {
                *v = (*v - self.mean[j]) / self.std[j];
            }
        }
    }

    pub fn validate(&self, dim: usize) -> Result<(), String> {
        if self.log1p.len() != dim || self.mean.len() != dim || self.std.len() != dim {
            return Err(format!(
                "preprocessing has {}/{}/{} entries (log1p/mean/std) for {dim} features",
                self.log1p.len(),
                self.mean.len(),
                self.std.len()
            ));
        }
        if let Some(j) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!(
                "preprocessing.std[{j}] = {} is not positive",
                self.std[j]
            ));
        }
        if let Some(j) = self.mean.iter().position(|m| !m.is_finite()) {
            return Err(format!("preprocessing.mean[{j}] is not finite"));
        }
        Ok(())
    }
}

fn signed_log1p(v: f64) -> f64 {
    v.signum() * v.abs().ln_1p()
}

fn skewness(values: impl Iterator<Item = f64> + Clone, n: f64) -> f64 {
    let m = values.clone().sum::<f64>() / n;
    let var = values.clone().map(|v| (v - m).powi(2)).sum::<f64>() / n;
    if var <= 1e-12 {
        return 0.0;
    }
    values.map(|v| (v - m).powi(3)).sum::<f64>() / n / var.powf(1.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardises_and_logs_only_skewed_columns() {
        // Column 0 symmetric, column 1 heavy-tailed and positive, column 2 constant.
        let data: Vec<Vec<f32>> = (0..100)
            .map(|i| vec![i as f32 - 50.0, if i == 99 { 1e6 } else { i as f32 }, 3.0])
            .collect();
        let rows: Vec<&[f32]> = data.iter().map(|r| r.as_slice()).collect();
        let s = Standardizer::fit(&rows, 3);
        assert_eq!(s.log1p, vec![false, true, false]);
        assert!(s.validate(3).is_ok());
        let mut sum = [0.0f64; 3];
        for r in &data {
            let mut r = r.clone();
            s.apply(&mut r);
            for j in 0..3 {
                sum[j] += f64::from(r[j]);
            }
        }
        assert!(sum.iter().all(|v| v.abs() < 1e-2), "{sum:?}");
    }
}
