//! Optimiser updates: which implementation runs them, in one place.

use burn::tensor::Tensor;

use crate::cpu;

/// One SGD update's hyper-parameters, as PyTorch's `torch.optim.SGD` and Burn's `Sgd` take
/// them (Burn's order of operations, so that both give the same bits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    /// `weight_decay * param` added to the gradient first (L2), where set.
    pub weight_decay: Option<f32>,
    /// Momentum, where set.
    pub momentum: Option<Momentum>,
}

/// Momentum's factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Momentum {
    pub momentum: f32,
    /// `1 - dampening`: the gradient's factor in the velocity (after the first step).
    pub keep: f32,
    pub nesterov: bool,
}

/// One SGD step for one parameter: its new value and velocity (`Some` exactly when
/// momentum is set). With decay `g = wd * p + g`; with momentum `v = g` at the first step
/// (`velocity` `None`), else `v = keep * g + momentum * v`, and the step `g = momentum * v + g`
/// (Nesterov) or `g = v`; then `p = p - lr * g`. Committee's one-pass kernel on flex (in
/// place where the parameter and velocity are not shared), else Burn's tensor ops
/// ([`sgd_tensor_ops`]); the two give the same bits.
pub fn sgd<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    velocity: Option<Tensor<D>>,
    h: &SgdStep,
) -> (Tensor<D>, Option<Tensor<D>>) {
    if !ONE_PASS.on() {
        return sgd_tensor_ops(param, grad, velocity, h);
    }
    match cpu::optim::sgd(param, grad, velocity, h) {
        Ok(done) => done,
        Err((param, grad, velocity)) => sgd_tensor_ops(param, grad, velocity, h),
    }
}

static ONE_PASS: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_SGD_ONE_PASS"));

/// Turns the one-pass SGD update on or off for the process (over `COMMITTEE_SGD_ONE_PASS`;
/// off: Burn's tensor ops, the same bits), to time the two in one process
/// (`examples/ab_train.rs` in committee-train, switch `sgd-one-pass`).
pub fn set_sgd_one_pass(on: bool) {
    ONE_PASS.set(on)
}

/// [`sgd`] through Burn's tensor ops, each a pass of its own (any backend): the operations
/// of Burn's `Sgd`, `Momentum` and `WeightDecay`, in their order.
pub fn sgd_tensor_ops<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    velocity: Option<Tensor<D>>,
    h: &SgdStep,
) -> (Tensor<D>, Option<Tensor<D>>) {
    let grad = match h.weight_decay {
        Some(wd) => param.clone().mul_scalar(wd).add(grad),
        None => grad,
    };
    let (grad, velocity) = match h.momentum {
        Some(m) => {
            let v = match velocity {
                Some(v) => grad
                    .clone()
                    .mul_scalar(m.keep)
                    .add(v.mul_scalar(m.momentum)),
                None => grad.clone(),
            };
            let step = match m.nesterov {
                true => v.clone().mul_scalar(m.momentum).add(grad),
                false => v.clone(),
            };
            (step, Some(v))
        }
        None => (grad, None),
    };
    (param - grad.mul_scalar(h.lr), velocity)
}
