//! Optimiser updates (SGD, AdamW): which implementation runs them, in one place.

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
/// (`examples/ab_train.rs` in committee-train, switch `sgd-one-pass`). AdamW's update
/// ([`adamw`]) follows the same switch.
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

/// One AdamW update's constants (Burn's `AdamW`: decoupled weight decay, bias-corrected
/// moments, `epsilon` added after the square root).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    /// `lr * weight_decay` in f64 as Burn forms it; 0: no decay.
    pub decay_rate: f64,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// The step's number, from 1 (the moments' bias corrections).
    pub time: usize,
}

impl AdamWStep {
    /// `[1 - beta_1, 1 - beta_2, 1 - beta_1^t, 1 - beta_2^t]`, in f32 as Burn computes them.
    pub(crate) fn factors(&self) -> [f32; 4] {
        let t = self.time as i32;
        [
            1.0 - self.beta_1,
            1.0 - self.beta_2,
            1f32 - self.beta_1.powi(t),
            1f32 - self.beta_2.powi(t),
        ]
    }
}

/// One AdamW step for one parameter: its new value and first and second moments, from the
/// previous moments (`None`: the first step, `time` 1). `m = beta_1 m + (1 - beta_1) g`,
/// `v = beta_2 v + (1 - beta_2) g^2` (at the first step `(1 - beta_1) g` and
/// `(1 - beta_2) g^2`), then `p = p (1 - lr wd) - lr (m / (1 - beta_1^t)) / (sqrt(v / (1 -
/// beta_2^t)) + epsilon)`. Committee's one-pass kernel on flex (in place where unshared),
/// else Burn's tensor ops ([`adamw_tensor_ops`]); the two give the same bits.
pub fn adamw<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<[Tensor<D>; 2]>,
    h: &AdamWStep,
) -> [Tensor<D>; 3] {
    if !ONE_PASS.on() {
        return adamw_tensor_ops(param, grad, moments, h);
    }
    match cpu::optim::adamw(param, grad, moments, h) {
        Ok(done) => done,
        Err((param, grad, moments)) => adamw_tensor_ops(param, grad, moments, h),
    }
}

/// [`adamw`] through Burn's tensor ops (any backend): Burn's `AdamW` operations in order.
pub fn adamw_tensor_ops<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<[Tensor<D>; 2]>,
    h: &AdamWStep,
) -> [Tensor<D>; 3] {
    let [f1, f2, c1, c2] = h.factors();
    let (m1, m2) = match moments {
        Some([m1, m2]) => (
            m1.mul_scalar(h.beta_1).add(grad.clone().mul_scalar(f1)),
            m2.mul_scalar(h.beta_2).add(grad.square().mul_scalar(f2)),
        ),
        None => (grad.clone().mul_scalar(f1), grad.square().mul_scalar(f2)),
    };
    let delta = m1
        .clone()
        .div_scalar(c1)
        .div(m2.clone().div_scalar(c2).sqrt().add_scalar(h.epsilon));
    let decayed = match h.decay_rate == 0.0 {
        true => param,
        false => param.mul_scalar(1.0 - h.decay_rate),
    };
    [decayed - delta.mul_scalar(h.lr), m1, m2]
}
