//! The image network: stages of 3×3 conv → batch-norm → ReLU blocks, each stage
//! ending in 2×2 max pooling, then optional dense layers and the same `class`,
//! `disagreement` and optional `human_error` heads as the MLP. Like the MLP, one
//! definition built from a `VarBuilder` serves training and serving.
//!
//! Layout is NHWC throughout and a convolution is an explicit im2col (one
//! `index_select` gathering the 3×3 neighbourhoods of the zero-padded input) and
//! one matrix product. On CPU this keeps both the forward and the backward pass in
//! gemm and a single gather/scatter, instead of candle's direct transposed
//! convolution in the backward pass.
//!
//! Parameter names: `member{i}.stage{s}.conv{j}.kernel` (`[9·C_in, C_out]`, rows
//! ordered (dy, dx, c_in)), `….bn.{gamma,beta,running_mean,running_var}`
//! (`[C_out]`), `member{i}.body{l}.*` (dense), and the heads as in [`super::net`].

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};

use super::bundle::{Architecture, Head};
use super::net::{DenseTop, Dropout, MemberOutputs};

/// Batch-norm ε.
const BN_EPS: f64 = 1e-5;

/// The channel counts of every conv block, stage by stage (`arch.stages`).
pub type Stages = Vec<Vec<usize>>;

/// Input image size the network is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

/// Batch statistics of one batch-norm layer in a training step, for the trainer
/// to fold into the running statistics.
pub struct BatchStats {
    /// Prefix of the layer's parameters (`member0.stage1.conv0.bn`).
    pub prefix: String,
    pub mean: Tensor,
    pub var: Tensor,
}

struct BatchNorm {
    prefix: String,
    gamma: Tensor,
    beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl BatchNorm {
    fn new(c: usize, vb: VarBuilder) -> candle_core::Result<BatchNorm> {
        Ok(BatchNorm {
            prefix: vb.prefix(),
            gamma: vb.get_with_hints(c, "gamma", Init::Const(1.0))?,
            beta: vb.get_with_hints(c, "beta", Init::Const(0.0))?,
            running_mean: vb.get_with_hints(c, "running_mean", Init::Const(0.0))?,
            running_var: vb.get_with_hints(c, "running_var", Init::Const(1.0))?,
        })
    }

    /// `x` is `[R, C]` (rows = batch × pixels).
    fn forward(
        &self,
        x: &Tensor,
        stats: Option<&mut Vec<BatchStats>>,
    ) -> candle_core::Result<Tensor> {
        let (mean, var) = match stats {
            Some(stats) => {
                let mean = x.mean_keepdim(0)?;
                let centred = x.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(0)?;
                stats.push(BatchStats {
                    prefix: self.prefix.clone(),
                    mean: mean.squeeze(0)?.detach(),
                    var: var.squeeze(0)?.detach(),
                });
                (mean, var)
            }
            None => (
                self.running_mean.unsqueeze(0)?,
                self.running_var.unsqueeze(0)?,
            ),
        };
        let scale = (var + BN_EPS)?
            .sqrt()?
            .recip()?
            .broadcast_mul(&self.gamma)?;
        x.broadcast_sub(&mean)?
            .broadcast_mul(&scale)?
            .broadcast_add(&self.beta)
    }
}

/// 3×3 convolution, stride 1, zero padding 1, no bias (batch-norm follows).
struct Conv3x3 {
    kernel: Tensor,
    bn: BatchNorm,
    c_out: usize,
    /// For frozen weights ([`ConvNet::freeze`]): the kernel with batch-norm's
    /// scale folded in, and its shift as a bias. Inference is then one product
    /// and one add instead of four passes over the activations.
    folded: Option<(Tensor, Tensor)>,
}

impl Conv3x3 {
    /// `kernel · diag(s)` and `β − μ·s`, with `s = γ / √(σ² + ε)`.
    fn fold(&self) -> candle_core::Result<(Tensor, Tensor)> {
        let bn = &self.bn;
        let scale = (&bn.running_var + BN_EPS)?
            .sqrt()?
            .recip()?
            .mul(&bn.gamma)?;
        let kernel = self.kernel.broadcast_mul(&scale.unsqueeze(0)?)?;
        let bias = (&bn.beta - bn.running_mean.mul(&scale)?)?.unsqueeze(0)?;
        Ok((kernel, bias))
    }
}

struct Stage {
    convs: Vec<Conv3x3>,
}

struct CnnMember {
    stages: Vec<Stage>,
    top: DenseTop,
}

/// Gather indices for im2col at one spatial size: for each output pixel (y, x)
/// and each tap (dy, dx), the flat index into the padded `(H+2)·(W+2)` grid.
fn im2col_index(h: usize, w: usize, device: &Device) -> candle_core::Result<Tensor> {
    let wp = w + 2;
    let mut idx = Vec::with_capacity(h * w * 9);
    for y in 0..h {
        for x in 0..w {
            for dy in 0..3 {
                for dx in 0..3 {
                    idx.push(((y + dy) * wp + (x + dx)) as u32);
                }
            }
        }
    }
    Tensor::from_vec(idx, h * w * 9, device)
}

/// The ensemble of CNN members.
pub struct ConvNet {
    members: Vec<CnnMember>,
    shape: ImageShape,
    /// im2col indices per stage (each stage halves the size).
    gather: Vec<Tensor>,
}

impl ConvNet {
    pub fn new(
        arch: &Architecture,
        shape: ImageShape,
        num_classes: usize,
        heads: &[Head],
        vb: VarBuilder,
    ) -> candle_core::Result<ConvNet> {
        let stages = arch.stages.as_deref().unwrap_or_default();
        let mut gather = Vec::with_capacity(stages.len());
        let (mut h, mut w) = (shape.height, shape.width);
        for _ in stages {
            gather.push(im2col_index(h, w, vb.device())?);
            h /= 2;
            w /= 2;
        }
        let mut members = Vec::with_capacity(arch.ensemble);
        for m in 0..arch.ensemble {
            let vb = vb.pp(format!("member{m}"));
            let mut c_in = shape.channels;
            let mut built = Vec::with_capacity(stages.len());
            for (s, widths) in stages.iter().enumerate() {
                let mut convs = Vec::with_capacity(widths.len());
                for (j, &c_out) in widths.iter().enumerate() {
                    let vb = vb.pp(format!("stage{s}.conv{j}"));
                    let bound = 1.0 / ((9 * c_in) as f64).sqrt();
                    convs.push(Conv3x3 {
                        folded: None,
                        kernel: vb.get_with_hints(
                            (9 * c_in, c_out),
                            "kernel",
                            Init::Uniform {
                                lo: -bound,
                                up: bound,
                            },
                        )?,
                        bn: BatchNorm::new(c_out, vb.pp("bn"))?,
                        c_out,
                    });
                    c_in = c_out;
                }
                built.push(Stage { convs });
            }
            members.push(CnnMember {
                stages: built,
                top: DenseTop::new(h * w * c_in, &arch.hidden, num_classes, heads, &vb)?,
            });
        }
        Ok(ConvNet {
            members,
            shape,
            gather,
        })
    }

    pub fn ensemble_size(&self) -> usize {
        self.members.len()
    }

    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Folds every batch-norm into its convolution for inference on weights
    /// that no longer change (a bundle loaded from disk). Training never calls
    /// it: the fold is a copy that later updates would not reach.
    pub fn freeze(&mut self) -> candle_core::Result<()> {
        for m in &mut self.members {
            for stage in &mut m.stages {
                for conv in &mut stage.convs {
                    conv.folded = Some(conv.fold()?);
                }
            }
        }
        Ok(())
    }

    /// Forward pass on `x` (`[B, H, W, C]`, already normalised). In training,
    /// `train` carries the dropout generator and collects batch-norm statistics;
    /// batch-norm then uses batch statistics instead of the running ones.
    pub fn forward(
        &self,
        x: &Tensor,
        mut train: Option<(&mut Dropout, &mut Vec<BatchStats>)>,
    ) -> candle_core::Result<Vec<MemberOutputs>> {
        let x = x.to_dtype(DType::F32)?;
        let b = x.dim(0)?;
        let mut outputs = Vec::with_capacity(self.members.len());
        for m in &self.members {
            let mut h = x.clone();
            let (mut height, mut width) = (self.shape.height, self.shape.width);
            for (stage, gather) in m.stages.iter().zip(&self.gather) {
                for conv in &stage.convs {
                    let c_in = h.dim(3)?;
                    let cols = match (train.is_none(), cpu_im2col(&h)?) {
                        (true, Some(cols)) => cols,
                        _ => {
                            let padded = h.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
                            padded
                                .reshape((b, (height + 2) * (width + 2), c_in))?
                                .index_select(gather, 1)?
                                .reshape((b * height * width, 9 * c_in))?
                        }
                    };
                    let y = match (&conv.folded, train.is_some()) {
                        (Some((kernel, bias)), false) => {
                            cols.matmul(kernel)?.broadcast_add(bias)?
                        }
                        _ => {
                            let stats = train.as_mut().map(|(_, s)| &mut **s);
                            conv.bn.forward(&cols.matmul(&conv.kernel)?, stats)?
                        }
                    };
                    h = y.relu()?.reshape((b, height, width, conv.c_out))?;
                }
                h = match (train.is_none(), cpu_max_pool_2x2(&h)?) {
                    (true, Some(pooled)) => pooled,
                    _ => max_pool_2x2(&h)?,
                };
                height /= 2;
                width /= 2;
            }
            let dropout = train.as_mut().map(|(d, _)| &mut **d);
            outputs.push(m.top.forward(h.flatten_from(1)?, dropout)?);
        }
        Ok(outputs)
    }
}

/// Runs `f` on the `f32` values of `x` when it lives contiguously in CPU
/// memory; `None` otherwise (CUDA, a strided view), for the caller's candle path.
fn on_cpu_slice<T>(
    x: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<T>,
) -> candle_core::Result<Option<T>> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let (storage, layout) = x.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
        (&*storage, layout.contiguous_offsets())
    else {
        return Ok(None);
    };
    f(&cpu.as_slice::<f32>()?[start..end]).map(Some)
}

/// Inference-only im2col on the CPU, the padding included: `[B, H, W, C]` to
/// `[B·H·W, 9·C]`, columns ordered (dy, dx, c) like the kernel's rows. One pass
/// of contiguous copies instead of two zero-padding copies and a per-element
/// gather (candle's `index_select` was a fifth of the CNN's time). No gradient:
/// training uses the candle path.
fn cpu_im2col(x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let (b, h, w, c) = x.dims4()?;
    let cols = on_cpu_slice(x, |src| {
        let mut out = vec![0f32; b * h * w * 9 * c];
        let mut row = out.chunks_exact_mut(9 * c);
        for n in 0..b {
            let image = &src[n * h * w * c..(n + 1) * h * w * c];
            for y in 0..h {
                for x_ in 0..w {
                    let dst = row.next().expect("one row per output pixel");
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let (sy, sx) = ((y + dy).wrapping_sub(1), (x_ + dx).wrapping_sub(1));
                            if sy < h && sx < w {
                                let from = (sy * w + sx) * c;
                                let to = (dy * 3 + dx) * c;
                                dst[to..to + c].copy_from_slice(&image[from..from + c]);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    })?;
    cols.map(|v| Tensor::from_vec(v, (b * h * w, 9 * c), x.device()))
        .transpose()
}

/// Inference-only 2×2 max pooling on the CPU, same result as [`max_pool_2x2`]
/// (candle's reduction over a middle axis was a fifth of the CNN's time).
fn cpu_max_pool_2x2(x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let (b, h, w, c) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    let pooled = on_cpu_slice(x, |src| {
        let mut out = Vec::with_capacity(b * h2 * w2 * c);
        for n in 0..b {
            for y in 0..h2 {
                for x_ in 0..w2 {
                    let at = |dy: usize, dx: usize| {
                        let start = ((n * h + 2 * y + dy) * w + 2 * x_ + dx) * c;
                        &src[start..start + c]
                    };
                    let (p, q, r, s) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                    out.extend((0..c).map(|k| p[k].max(q[k]).max(r[k].max(s[k]))));
                }
            }
        }
        Ok(out)
    })?;
    pooled
        .map(|v| Tensor::from_vec(v, (b, h2, w2, c), x.device()))
        .transpose()
}

/// 2×2 max pooling with stride 2 on `[B, H, W, C]` (odd edges are dropped).
fn max_pool_2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.narrow(1, 0, 2 * h2)?.narrow(2, 0, 2 * w2)?
    } else {
        x.clone()
    };
    x.reshape((b * h2, 2, w2, 2, c))?
        .max(3)?
        .max(1)?
        .reshape((b, h2, w2, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_batch_norm_leaves_the_outputs_unchanged() {
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let arch = Architecture {
            kind: "cnn".into(),
            stages: Some(vec![vec![4], vec![6]]),
            hidden: vec![5],
            dropout: 0.0,
            ensemble: 2,
        };
        let shape = ImageShape {
            height: 8,
            width: 8,
            channels: 3,
        };
        let heads = [Head::Class, Head::Disagreement, Head::HumanError];
        let mut net = ConvNet::new(&arch, shape, 3, &heads, vb).unwrap();
        // Batch-norm statistics far from the identity, so the fold has work to do.
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.contains(".bn.") {
                let n = var.as_tensor().elem_count();
                let lo = if name.ends_with("running_var") {
                    0.2
                } else {
                    -1.5
                };
                let values: Vec<f32> = (0..n).map(|i| lo + 0.37 * i as f32).collect();
                var.set(&Tensor::from_vec(values, n, &dev).unwrap())
                    .unwrap();
            }
        }
        let x = Tensor::randn(0f32, 1.0, (3, 8, 8, 3), &dev).unwrap();
        let before = net.forward(&x, None).unwrap();
        net.freeze().unwrap();
        let after = net.forward(&x, None).unwrap();
        for (a, b) in before.iter().zip(&after) {
            for (t, u) in [
                (&a.class_logits, &b.class_logits),
                (&a.disagreement_logit, &b.disagreement_logit),
                (
                    a.human_error_logit.as_ref().unwrap(),
                    b.human_error_logit.as_ref().unwrap(),
                ),
            ] {
                let (t, u) = (
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    u.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                for (p, q) in t.iter().zip(&u) {
                    assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs()), "{p} vs {q}");
                }
            }
        }
    }

    #[test]
    fn the_cpu_kernels_match_the_candle_graph() {
        let dev = Device::Cpu;
        // Odd sizes: the pooling drops the last row and column.
        let (b, h, w, c) = (2usize, 5usize, 7usize, 3usize);
        let x = Tensor::randn(0f32, 1.0, (b, h, w, c), &dev).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let pooled = cpu_max_pool_2x2(&x).unwrap().unwrap();
        assert_eq!(pooled.dims(), &[b, h / 2, w / 2, c]);
        assert_eq!(flat(&pooled), flat(&max_pool_2x2(&x).unwrap()));
        let gather = im2col_index(h, w, &dev).unwrap();
        let want = x
            .pad_with_zeros(1, 1, 1)
            .unwrap()
            .pad_with_zeros(2, 1, 1)
            .unwrap()
            .reshape((b, (h + 2) * (w + 2), c))
            .unwrap()
            .index_select(&gather, 1)
            .unwrap()
            .reshape((b * h * w, 9 * c))
            .unwrap();
        assert_eq!(flat(&cpu_im2col(&x).unwrap().unwrap()), flat(&want));
        // A strided view is left to candle.
        assert!(cpu_im2col(&x.narrow(2, 1, 3).unwrap()).unwrap().is_none());
    }

    #[test]
    fn max_pool_picks_the_largest_of_each_window() {
        let dev = Device::Cpu;
        // One image 2×4, one channel: windows {1,2,5,6} and {3,4,7,8}.
        let x = Tensor::new(&[1f32, 2., 3., 4., 5., 6., 7., 8.], &dev)
            .unwrap()
            .reshape((1, 2, 4, 1))
            .unwrap();
        let y = max_pool_2x2(&x).unwrap().flatten_all().unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![6.0, 8.0]);
    }

    #[test]
    fn im2col_conv_matches_a_direct_convolution() {
        let dev = Device::Cpu;
        let (h, w, ci, co) = (4usize, 5usize, 2usize, 3usize);
        let xs: Vec<f32> = (0..h * w * ci).map(|i| (i as f32 * 0.37).sin()).collect();
        let ks: Vec<f32> = (0..9 * ci * co).map(|i| (i as f32 * 0.11).cos()).collect();
        let x = Tensor::from_vec(xs.clone(), (1, h, w, ci), &dev).unwrap();
        let k = Tensor::from_vec(ks.clone(), (9 * ci, co), &dev).unwrap();
        let gather = im2col_index(h, w, &dev).unwrap();
        let padded = x
            .pad_with_zeros(1, 1, 1)
            .unwrap()
            .pad_with_zeros(2, 1, 1)
            .unwrap();
        let got = padded
            .reshape((1, (h + 2) * (w + 2), ci))
            .unwrap()
            .index_select(&gather, 1)
            .unwrap()
            .reshape((h * w, 9 * ci))
            .unwrap()
            .matmul(&k)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for y in 0..h {
            for x_ in 0..w {
                for o in 0..co {
                    let mut want = 0.0f32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let (sy, sx) =
                                (y as isize + dy as isize - 1, x_ as isize + dx as isize - 1);
                            if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                continue;
                            }
                            for c in 0..ci {
                                let xv = xs[(sy as usize * w + sx as usize) * ci + c];
                                let kv = ks[((dy * 3 + dx) * ci + c) * co + o];
                                want += xv * kv;
                            }
                        }
                    }
                    let g = got[(y * w + x_) * co + o];
                    assert!((g - want).abs() < 1e-4, "({y},{x_},{o}): {g} vs {want}");
                }
            }
        }
    }
}
