//! SGD's and AdamW's updates in one pass over each parameter (flex, f32).
//!
//! Why: through Burn's tensor ops an SGD step with momentum and weight decay is six passes
//! over every parameter, each into a new tensor: ResNet-50's step took 34.6 ms where
//! `torch.optim.SGD` took 22.4 (ViT-B/16: 118 against 63; two Zen 4 cores), 2-7 % of a
//! training step; its AdamW is a dozen passes (ResNet-50: 74 ms). Here one pass reads each
//! parameter, its gradient and state (velocity, or both moments) and writes the parameter
//! and state back in place (copied first only where shared), in Burn's order of operations:
//! the same bits. Only with the training kernels on (`--flex-kernels` with `train`).

use super::*;
use crate::optim::{AdamWStep, Momentum, SgdStep};

/// The inputs [`sgd`] hands back untouched when it does not apply.
type Rejected<const D: usize> = (Tensor<D>, Tensor<D>, Option<Tensor<D>>);

/// [`crate::optim::sgd`] on flex f32 tensors of one shape; `Err` with the inputs otherwise
/// (also for a velocity without momentum).
pub fn sgd<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    velocity: Option<Tensor<D>>,
    h: &SgdStep,
) -> Result<(Tensor<D>, Option<Tensor<D>>), Rejected<D>> {
    let dims = param.dims();
    let fits = |t: &Tensor<D>| eligible(Kernel::Train, t) && t.dims() == dims;
    let ok = fits(&param)
        && fits(&grad)
        && velocity.as_ref().is_none_or(fits)
        && (velocity.is_none() || h.momentum.is_some());
    if !ok {
        return Err((param, grad, velocity));
    }
    let len = dims.iter().product();
    let mut p = eligible_input(param);
    let g = eligible_input(grad);
    // The first step's velocity is the (decayed) gradient: written over the gradient's buffer.
    let (g, mut v) = match (h.momentum, velocity) {
        (Some(_), None) => (None, Some(g)),
        (_, v) => (Some(g), v.map(eligible_input)),
    };
    let ps = &mut p.storage_mut::<f32>()[..len];
    let gs = g.as_ref().map(|g| &g.storage::<f32>()[..len]);
    let vs = v.as_mut().map(|v| &mut v.storage_mut::<f32>()[..len]);
    match (gs, vs, h.momentum) {
        (Some(gs), None, _) => ps
            .par_chunks_mut(CHUNK)
            .zip(gs.par_chunks(CHUNK))
            .for_each(|(p, g)| plain(p, g, h)),
        (Some(gs), Some(vs), Some(m)) => ps
            .par_chunks_mut(CHUNK)
            .zip(gs.par_chunks(CHUNK))
            .zip(vs.par_chunks_mut(CHUNK))
            .for_each(|((p, g), v)| with_velocity(p, g, v, h, &m)),
        (None, Some(vs), Some(m)) => ps
            .par_chunks_mut(CHUNK)
            .zip(vs.par_chunks_mut(CHUNK))
            .for_each(|(p, v)| first(p, v, h, &m)),
        _ => unreachable!("a velocity exactly where there is momentum"),
    }
    Ok((from_flex(p), v.map(from_flex)))
}

super::isa::widest!(fn plain(p: &mut [f32], g: &[f32], h: &SgdStep) = plain_body);
super::isa::widest!(
    fn with_velocity(p: &mut [f32], g: &[f32], v: &mut [f32], h: &SgdStep, m: &Momentum) =
        with_velocity_body
);
super::isa::widest!(fn first(p: &mut [f32], v: &mut [f32], h: &SgdStep, m: &Momentum) = first_body);

/// `p -= lr * (wd * p + g)` (or `lr * g`).
#[inline(always)]
fn plain_body(p: &mut [f32], g: &[f32], h: &SgdStep) {
    let lr = h.lr;
    match h.weight_decay {
        Some(wd) => p
            .iter_mut()
            .zip(g)
            .for_each(|(p, &g)| *p -= (*p * wd + g) * lr),
        None => p.iter_mut().zip(g).for_each(|(p, &g)| *p -= g * lr),
    }
}

/// One element after the gradient `g` is decayed: the new velocity from the old one `v`
/// (`None`: the first step) and the parameter's step.
#[inline(always)]
fn velocity_and_step<const NESTEROV: bool>(g: f32, v: Option<f32>, m: &Momentum) -> [f32; 2] {
    let v = match v {
        Some(v) => g * m.keep + v * m.momentum,
        None => g,
    };
    [v, if NESTEROV { v * m.momentum + g } else { v }]
}

/// The loops of one variant (decay or not, Nesterov or not) of a step with a velocity.
#[inline(always)]
fn velocity_loop<const DECAY: bool, const NESTEROV: bool>(
    p: &mut [f32],
    g: &[f32],
    v: &mut [f32],
    [lr, wd]: [f32; 2],
    m: &Momentum,
) {
    for ((p, &g), v) in p.iter_mut().zip(g).zip(v) {
        let g = if DECAY { *p * wd + g } else { g };
        let [nv, step] = velocity_and_step::<NESTEROV>(g, Some(*v), m);
        *v = nv;
        *p -= step * lr;
    }
}

/// `v = keep * g + momentum * v` (the gradient decayed first), then the step.
#[inline(always)]
fn with_velocity_body(p: &mut [f32], g: &[f32], v: &mut [f32], h: &SgdStep, m: &Momentum) {
    let f = [h.lr, h.weight_decay.unwrap_or(0.0)];
    match (h.weight_decay.is_some(), m.nesterov) {
        (true, true) => velocity_loop::<true, true>(p, g, v, f, m),
        (true, false) => velocity_loop::<true, false>(p, g, v, f, m),
        (false, true) => velocity_loop::<false, true>(p, g, v, f, m),
        (false, false) => velocity_loop::<false, false>(p, g, v, f, m),
    }
}

/// The first step with momentum: `v` holds the gradient and becomes the velocity.
#[inline(always)]
fn first_loop<const DECAY: bool, const NESTEROV: bool>(
    p: &mut [f32],
    v: &mut [f32],
    [lr, wd]: [f32; 2],
    m: &Momentum,
) {
    for (p, v) in p.iter_mut().zip(v) {
        let g = if DECAY { *p * wd + *v } else { *v };
        let [nv, step] = velocity_and_step::<NESTEROV>(g, None, m);
        *v = nv;
        *p -= step * lr;
    }
}

/// [`first_loop`] for the step's variant.
#[inline(always)]
fn first_body(p: &mut [f32], v: &mut [f32], h: &SgdStep, m: &Momentum) {
    let f = [h.lr, h.weight_decay.unwrap_or(0.0)];
    match (h.weight_decay.is_some(), m.nesterov) {
        (true, true) => first_loop::<true, true>(p, v, f, m),
        (true, false) => first_loop::<true, false>(p, v, f, m),
        (false, true) => first_loop::<false, true>(p, v, f, m),
        (false, false) => first_loop::<false, false>(p, v, f, m),
    }
}

/// The inputs [`adamw`] hands back untouched when it does not apply.
type RejectedAdamW<const D: usize> = (Tensor<D>, Tensor<D>, Option<[Tensor<D>; 2]>);

/// [`crate::optim::adamw`] on flex f32 tensors of one shape; `Err` with the inputs
/// otherwise. The moments are updated in place (the first step's first moment over the
/// gradient's buffer).
pub fn adamw<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<[Tensor<D>; 2]>,
    h: &AdamWStep,
) -> Result<[Tensor<D>; 3], RejectedAdamW<D>> {
    let dims = param.dims();
    let fits = |t: &Tensor<D>| eligible(Kernel::Train, t) && t.dims() == dims;
    let ok = fits(&param) && fits(&grad) && moments.as_ref().is_none_or(|m| m.iter().all(fits));
    if !ok {
        return Err((param, grad, moments));
    }
    let len = dims.iter().product();
    let mut p = eligible_input(param);
    let (mut m1, mut m2, g) = match moments {
        Some([m1, m2]) => (
            eligible_input(m1),
            eligible_input(m2),
            Some(eligible_input(grad)),
        ),
        None => (eligible_input(grad), zeros_like(len), None),
    };
    let ps = &mut p.storage_mut::<f32>()[..len];
    let m1s = &mut m1.storage_mut::<f32>()[..len];
    let m2s = &mut m2.storage_mut::<f32>()[..len];
    let c = AdamWConsts::new(h);
    match &g {
        Some(g) => ps
            .par_chunks_mut(CHUNK)
            .zip(g.storage::<f32>()[..len].par_chunks(CHUNK))
            .zip(m1s.par_chunks_mut(CHUNK).zip(m2s.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m1, m2))| adamw_next(p, g, m1, m2, &c)),
        None => ps
            .par_chunks_mut(CHUNK)
            .zip(m1s.par_chunks_mut(CHUNK).zip(m2s.par_chunks_mut(CHUNK)))
            .for_each(|(p, (m1, m2))| adamw_first(p, m1, m2, &c)),
    }
    let shape = |t: FlexTensor| from_flex(t.reshape(dims.into()));
    Ok([from_flex(p), shape(m1), shape(m2)])
}

/// A flat f32 tensor of `len` zeros.
fn zeros_like(len: usize) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(vec![0f32; len], [len]))
}

/// [`AdamWStep`]'s values as the element loops use them.
struct AdamWConsts {
    lr: f32,
    /// The parameter's factor `1 - lr wd`, where there is decay.
    keep: Option<f32>,
    beta: [f32; 2],
    /// `[1 - beta_1, 1 - beta_2, 1 - beta_1^t, 1 - beta_2^t]`.
    f: [f32; 4],
    epsilon: f32,
}

impl AdamWConsts {
    fn new(h: &AdamWStep) -> AdamWConsts {
        AdamWConsts {
            lr: h.lr,
            keep: (h.decay_rate != 0.0).then_some((1.0 - h.decay_rate) as f32),
            beta: [h.beta_1, h.beta_2],
            f: h.factors(),
            epsilon: h.epsilon,
        }
    }
}

super::isa::widest!(
    fn adamw_next(p: &mut [f32], g: &[f32], m1: &mut [f32], m2: &mut [f32], c: &AdamWConsts) =
        adamw_next_body
);
super::isa::widest!(
    fn adamw_first(p: &mut [f32], m1: &mut [f32], m2: &mut [f32], c: &AdamWConsts) =
        adamw_first_body
);

/// One element's new parameter from its moments (bias-corrected, Burn's order).
#[inline(always)]
fn adamw_param(p: f32, m1: f32, m2: f32, c: &AdamWConsts, keep: Option<f32>) -> f32 {
    let [.., c1, c2] = c.f;
    let delta = (m1 / c1) / ((m2 / c2).sqrt() + c.epsilon);
    let p = match keep {
        Some(k) => p * k,
        None => p,
    };
    p - delta * c.lr
}

/// A step after the first: the moments move toward the gradient.
#[inline(always)]
fn adamw_next_body(p: &mut [f32], g: &[f32], m1: &mut [f32], m2: &mut [f32], c: &AdamWConsts) {
    let ([b1, b2], [f1, f2, ..]) = (c.beta, c.f);
    let keep = c.keep;
    for (((p, &g), m1), m2) in p.iter_mut().zip(g).zip(m1).zip(m2) {
        *m1 = *m1 * b1 + g * f1;
        *m2 = *m2 * b2 + (g * g) * f2;
        *p = adamw_param(*p, *m1, *m2, c, keep);
    }
}

/// The first step: `m1` holds the gradient; both moments start from it.
#[inline(always)]
fn adamw_first_body(p: &mut [f32], m1: &mut [f32], m2: &mut [f32], c: &AdamWConsts) {
    let [f1, f2, ..] = c.f;
    let keep = c.keep;
    for ((p, m1), m2) in p.iter_mut().zip(m1).zip(m2) {
        let g = *m1;
        *m1 = g * f1;
        *m2 = (g * g) * f2;
        *p = adamw_param(*p, *m1, *m2, c, keep);
    }
}
