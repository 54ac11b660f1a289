//! Training losses: soft-label cross-entropy on the annotators' label distribution,
//! and masked binary cross-entropy with soft targets for the `disagreement` (D) and
//! `human_error` (H) heads.

use candle_core::{Result, Tensor, D};

/// Mean over the batch of `−Σ_c q_c log softmax(z)_c`.
pub fn soft_cross_entropy(logits: &Tensor, soft_targets: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (soft_targets * logp)?.sum(D::Minus1)?.neg()?.mean_all()
}

/// Binary cross-entropy between `sigmoid(z)` and soft targets `t ∈ [0,1]`, averaged
/// over the cases where `mask = 1`. Written as `softplus(z) − t·z` with a stable
/// softplus, so large logits cannot overflow.
pub fn masked_bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    mask_count: f64,
) -> Result<Tensor> {
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let per_case = (softplus - (targets * logits)?)?;
    (per_case * mask)?.sum_all()? / mask_count.max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn soft_ce_matches_hand_computation() {
        let dev = Device::Cpu;
        let z = Tensor::new(&[[0.0f32, 0.0]], &dev).unwrap();
        let q = Tensor::new(&[[0.5f32, 0.5]], &dev).unwrap();
        let l = soft_cross_entropy(&z, &q)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - 2f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn bce_matches_hand_computation_and_ignores_masked() {
        let dev = Device::Cpu;
        let z = Tensor::new(&[2.0f32, -1.0, 50.0], &dev).unwrap();
        let t = Tensor::new(&[0.25f32, 1.0, 0.0], &dev).unwrap();
        let m = Tensor::new(&[1.0f32, 1.0, 0.0], &dev).unwrap();
        let l = masked_bce_with_logits(&z, &t, &m, 2.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let bce = |z: f64, t: f64| {
            let p = 1.0 / (1.0 + (-z).exp());
            -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
        };
        let want = (bce(2.0, 0.25) + bce(-1.0, 1.0)) / 2.0;
        assert!((f64::from(l) - want).abs() < 1e-5, "{l} vs {want}");
    }
}
