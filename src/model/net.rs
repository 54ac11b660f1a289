//! The network: an ensemble of MLP members, each a shared body with a `class`
//! head (softmax over K), a `disagreement` head (sigmoid, predicts `D`) and an
//! optional `human_error` head (sigmoid, predicts `H`). One definition, built from a
//! `VarBuilder`, serves both training (over a `VarMap`) and serving (over the
//! bundle's safetensors).

use candle_core::{DType, Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::bundle::{Architecture, Head};

/// Raw head outputs of one member for a batch.
pub struct MemberOutputs {
    /// `[B, K]` class logits (before temperature).
    pub class_logits: Tensor,
    /// `[B]` disagreement logits.
    pub disagreement_logit: Tensor,
    /// `[B]` human-error logits, when the head exists.
    pub human_error_logit: Option<Tensor>,
    /// The last hidden layer `[B, width]`, the input of every head (a head-only
    /// refit trains new heads on it with the body frozen).
    pub features: Tensor,
}

/// The dense part every member ends in (the whole MLP member; the CNN's after its
/// conv stages): hidden ReLU layers `body{l}`, then the `class`, `disagreement`
/// and optional `human_error` heads.
pub(crate) struct DenseTop {
    body: Vec<Linear>,
    class_head: Linear,
    disagreement_head: Linear,
    human_error_head: Option<Linear>,
}

impl DenseTop {
    pub(crate) fn new(
        input_width: usize,
        hidden: &[usize],
        num_classes: usize,
        heads: &[Head],
        vb: &VarBuilder,
    ) -> candle_core::Result<DenseTop> {
        let mut body = Vec::with_capacity(hidden.len());
        let mut width = input_width;
        for (l, &units) in hidden.iter().enumerate() {
            body.push(linear(width, units, vb.pp(format!("body{l}")))?);
            width = units;
        }
        Ok(DenseTop {
            body,
            class_head: linear(width, num_classes, vb.pp("class"))?,
            disagreement_head: linear(width, 1, vb.pp("disagreement"))?,
            human_error_head: if heads.contains(&Head::HumanError) {
                Some(linear(width, 1, vb.pp("human_error"))?)
            } else {
                None
            },
        })
    }

    /// `h` is `[B, input_width]`; `dropout` is `Some` only in training.
    pub(crate) fn forward(
        &self,
        mut h: Tensor,
        mut dropout: Option<&mut Dropout>,
    ) -> candle_core::Result<MemberOutputs> {
        for layer in &self.body {
            h = layer.forward(&h)?.relu()?;
            if let Some(d) = dropout.as_deref_mut() {
                h = d.apply(&h)?;
            }
        }
        Ok(MemberOutputs {
            class_logits: self.class_head.forward(&h)?,
            disagreement_logit: self.disagreement_head.forward(&h)?.squeeze(1)?,
            human_error_logit: self
                .human_error_head
                .as_ref()
                .map(|head| head.forward(&h)?.squeeze(1))
                .transpose()?,
            features: h,
        })
    }
}

/// Seeded dropout masks, so training is reproducible bit for bit (candle's own
/// dropout draws from an unseeded generator).
pub struct Dropout {
    pub p: f32,
    pub rng: ChaCha8Rng,
}

impl Dropout {
    pub(crate) fn apply(&mut self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(xs.clone());
        }
        let keep = 1.0 - self.p;
        let scale = 1.0 / keep;
        let mask: Vec<f32> = (0..xs.elem_count())
            .map(|_| {
                if self.rng.gen::<f32>() < keep {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?;
        xs.mul(&mask)
    }
}

/// The ensemble. Parameter names: `member{i}.body{l}.{weight,bias}`,
/// `member{i}.class.*`, `member{i}.disagreement.*`, `member{i}.human_error.*`.
pub struct TriageNet {
    members: Vec<DenseTop>,
}

impl TriageNet {
    pub fn new(
        arch: &Architecture,
        input_dim: usize,
        num_classes: usize,
        heads: &[Head],
        vb: VarBuilder,
    ) -> candle_core::Result<TriageNet> {
        let mut members = Vec::with_capacity(arch.ensemble);
        for m in 0..arch.ensemble {
            let vb = vb.pp(format!("member{m}"));
            members.push(DenseTop::new(
                input_dim,
                &arch.hidden,
                num_classes,
                heads,
                &vb,
            )?);
        }
        Ok(TriageNet { members })
    }

    pub fn ensemble_size(&self) -> usize {
        self.members.len()
    }

    /// Forward pass of every member on `x` (`[B, D]`, already preprocessed).
    /// `dropout` is `Some` only in training.
    pub fn forward(
        &self,
        x: &Tensor,
        mut dropout: Option<&mut Dropout>,
    ) -> candle_core::Result<Vec<MemberOutputs>> {
        let x = x.to_dtype(DType::F32)?;
        self.members
            .iter()
            .map(|m| m.forward(x.clone(), dropout.as_deref_mut()))
            .collect()
    }
}

/// The ensemble's members stacked layer by layer, for inference on frozen
/// weights (a bundle loaded from disk): each layer of all `E` members is one
/// batched matrix product, and the three heads are one more. About ten tensor
/// operations per forward pass instead of about fifteen per member — on the
/// small feature MLPs, candle's fixed cost per operation is most of the time.
pub(crate) struct StackedMlp {
    /// Per hidden layer: weights `[E, in, out]` and biases `[E, 1, out]`.
    body: Vec<(Tensor, Tensor)>,
    /// The class, disagreement and (optional) human-error heads side by side:
    /// `[E, width, K + 1 (+ 1)]` and `[E, 1, K + 1 (+ 1)]`.
    heads: (Tensor, Tensor),
    members: usize,
    num_classes: usize,
    human_error: bool,
}

/// Outputs of [`StackedMlp::forward`]: for each member and case, the `K` class
/// logits, then the disagreement logit, then the human-error logit if present.
pub(crate) struct StackedOutputs {
    pub values: Vec<f32>,
    pub members: usize,
    pub cases: usize,
    /// Values per member and case.
    pub stride: usize,
}

impl StackedOutputs {
    /// Member `m`'s outputs for case `i`.
    pub fn row(&self, m: usize, i: usize) -> &[f32] {
        let start = (m * self.cases + i) * self.stride;
        &self.values[start..start + self.stride]
    }
}

/// A linear layer as `([in, out], [1, out])`, the orientation of `x · W + b`.
fn transposed(layer: &Linear) -> candle_core::Result<(Tensor, Tensor)> {
    let w = layer.weight().t()?;
    let b = match layer.bias() {
        Some(b) => b.unsqueeze(0)?,
        None => Tensor::zeros((1, w.dim(1)?), w.dtype(), w.device())?,
    };
    Ok((w, b))
}

impl TriageNet {
    /// The stacked inference form of these weights (a copy: later changes to the
    /// weights do not reach it).
    pub(crate) fn stacked(&self) -> candle_core::Result<StackedMlp> {
        let members = self.members.len();
        let first = self
            .members
            .first()
            .ok_or_else(|| candle_core::Error::Msg("an ensemble of no members".into()))?;
        let stack = |parts: Vec<Tensor>| Tensor::stack(&parts, 0);
        let mut body = Vec::with_capacity(first.body.len());
        for l in 0..first.body.len() {
            let (ws, bs): (Vec<_>, Vec<_>) = self
                .members
                .iter()
                .map(|m| transposed(&m.body[l]))
                .collect::<candle_core::Result<Vec<_>>>()?
                .into_iter()
                .unzip();
            body.push((stack(ws)?, stack(bs)?));
        }
        let mut head_ws = Vec::with_capacity(members);
        let mut head_bs = Vec::with_capacity(members);
        for m in &self.members {
            let mut parts = vec![
                transposed(&m.class_head)?,
                transposed(&m.disagreement_head)?,
            ];
            if let Some(h) = &m.human_error_head {
                parts.push(transposed(h)?);
            }
            let (ws, bs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
            head_ws.push(Tensor::cat(&ws, 1)?);
            head_bs.push(Tensor::cat(&bs, 1)?);
        }
        Ok(StackedMlp {
            body,
            heads: (stack(head_ws)?, stack(head_bs)?),
            members,
            num_classes: first.class_head.weight().dim(0)?,
            human_error: first.human_error_head.is_some(),
        })
    }
}

impl StackedMlp {
    /// Inference forward pass on `x` (`[B, D]`, already preprocessed).
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<StackedOutputs> {
        let (cases, dim) = x.dims2()?;
        let mut h = x
            .to_dtype(DType::F32)?
            .unsqueeze(0)?
            .broadcast_as((self.members, cases, dim))?
            .contiguous()?;
        for (w, b) in &self.body {
            h = h.matmul(w)?.broadcast_add(b)?.relu()?;
        }
        let (w, b) = &self.heads;
        let out = h.matmul(w)?.broadcast_add(b)?;
        Ok(StackedOutputs {
            values: out.flatten_all()?.to_vec1::<f32>()?,
            members: self.members,
            cases,
            stride: self.num_classes + 1 + usize::from(self.human_error),
        })
    }

    pub(crate) fn num_classes(&self) -> usize {
        self.num_classes
    }

    pub(crate) fn has_human_error(&self) -> bool {
        self.human_error
    }
}
