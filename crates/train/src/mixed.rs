//! Mixed-precision training in f16 (`--dtype f16` on GPU backends), PyTorch's `torch.amp`
//! recipe: f32 master weights that the optimiser updates, a forward in f16 (BatchNorm and
//! LayerNorm in f32, logits returned as f32), and dynamic loss scaling so that small
//! gradients survive f16's range.
//!
//! Why a view rather than an f16 model: the update `w - lr * g` in f16 loses every step
//! smaller than w's last digit (2^-11 relative), which is most of them late in a schedule;
//! the master stays f32 and the f16 copy is cast from it at each step, inside the autodiff
//! graph, so the gradients arrive on the master in f32.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, FloatDType, Tensor};
use committee_zoo::Model;
use serde::{Deserialize, Serialize};

/// The loss scale and its history: PyTorch's `GradScaler` with its defaults (initial scale
/// 2^16; halved, and the step skipped, when a gradient is not finite; doubled after 2,000
/// finite steps in a row). Saved in the checkpoint, so a resumed run scales as the
/// uninterrupted one would.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f64,
    /// Finite steps since the scale last changed.
    pub good_steps: u32,
    /// Steps skipped for non-finite gradients over the run.
    pub skipped: u64,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale {
            scale: 65536.0,
            good_steps: 0,
            skipped: 0,
        }
    }
}

impl LossScale {
    /// Finite steps in a row before the scale doubles (`GradScaler`'s `growth_interval`).
    pub const GROWTH_INTERVAL: u32 = 2000;

    /// Records one step's outcome: `finite` when every gradient was finite (the step is
    /// taken), otherwise the step is skipped and the scale halves.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale *= 0.5;
            self.good_steps = 0;
            self.skipped += 1;
        }
    }
}

/// `module`'s trainable parameters cast to f16 inside the autodiff graph (their gradients
/// reach `module`'s f32 tensors); BatchNorm's running statistics are left as they are, shared
/// with `module`, so the f16 forward updates the master's. A whole model, or one layer.
pub fn half_view<M: Module>(module: &M) -> M {
    module.clone().map(&mut HalfTrainable)
}

struct HalfTrainable;

impl ModuleMapper for HalfTrainable {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| {
            // Running statistics are buffers (no gradient): cast, they would be replaced in
            // place (shared with the master) by an f16 copy.
            if t.is_require_grad() && t.dtype() == DType::F32 {
                t.cast(FloatDType::F16)
            } else {
                t
            }
        })
    }
}

/// `model`'s logits for `x`: through its f16 view in mixed precision (`scale` given), else
/// as it is. What a training step (and `bench --train`) runs forward.
pub fn forward(model: &Model, x: Tensor<4>, scale: Option<&LossScale>) -> Tensor<2> {
    match scale {
        Some(_) => half_view(model).forward(x),
        None => model.forward(x),
    }
}

/// `model`'s gradients of `loss`: at the loss scale in mixed precision (`None`, the step to
/// be skipped, when one is not finite; see [`scaled_grads`]), else plain.
pub fn grads(
    loss: Tensor<1>,
    model: &Model,
    scale: Option<&mut LossScale>,
) -> Option<GradientsParams> {
    match scale {
        Some(scale) => scaled_grads(loss, model, scale),
        None => Some(GradientsParams::from_grads(loss.backward(), model)),
    }
}

/// The master's gradients of `loss` computed at `scale`'s scale and divided by it again;
/// `None` (and the scale halved) when any is not finite, so the step must be skipped.
pub fn scaled_grads(
    loss: Tensor<1>,
    model: &Model,
    scale: &mut LossScale,
) -> Option<GradientsParams> {
    let grads = loss.mul_scalar(scale.scale).backward();
    let mut params = GradientsParams::from_grads(grads, model);
    let mut unscale = Unscale {
        grads: &mut params,
        inv: 1.0 / scale.scale,
        total: None,
    };
    model.visit(&mut unscale);
    // One read for all: a sum of |g| is NaN or infinite exactly when some g is (short of
    // an f32 overflow, 3e38, which no gradient here reaches).
    let finite = unscale
        .total
        .is_none_or(|t| t.into_scalar::<f32>().is_finite());
    scale.update(finite);
    finite.then_some(params)
}

struct Unscale<'a> {
    grads: &'a mut GradientsParams,
    inv: f64,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for Unscale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(g) = self.grads.remove::<D>(param.id) else {
            return;
        };
        let g = g.mul_scalar(self.inv);
        let s = g.clone().abs().sum();
        self.total = Some(match self.total.take() {
            Some(t) => t + s,
            None => s,
        });
        self.grads.register(param.id, g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_scale_follows_grad_scaler() {
        // torch.amp.GradScaler's defaults, step by step.
        let mut s = LossScale::default();
        assert_eq!(s.scale, 65536.0);
        s.update(false);
        assert_eq!((s.scale, s.good_steps, s.skipped), (32768.0, 0, 1));
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            s.update(true);
        }
        assert_eq!((s.scale, s.good_steps), (32768.0, 1999));
        s.update(true);
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
        s.update(true);
        s.update(false);
        assert_eq!((s.scale, s.good_steps, s.skipped), (32768.0, 0, 2));
    }
}
