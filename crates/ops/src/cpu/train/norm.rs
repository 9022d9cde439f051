//! Training-mode BatchNorm, with the activation after it fused in, and its closed-form
//! backward.

use super::*;
use crate::act::Act;
use std::mem::MaybeUninit;

/// Training-mode BatchNorm, then `act` when given, on flex's autodiff device: the output, and
/// the batch mean and (population) variance for the running statistics; `Err(x)` when it does
/// not apply.
/// Why: Burn composes it from a dozen tensor ops (means over swapped dimensions, strided copies,
/// broadcasts), each differentiated apart; here it is two passes forward and two backward with
/// the closed-form gradient `dx = gamma / sigma * (dz - mean(dz) - xhat * mean(dz * xhat))`,
/// each channel's passes in one task, so that the second finds the channel's planes in cache
/// (steps 1.01-1.08x, docs/benchmarks.md; `COMMITTEE_BN_PER_CHANNEL=0`: pass after pass).
/// The activation's value is written in the output pass (and SiLU's slope beside it; ReLU's
/// and ReLU6's are found again from the input, [`Gate::Clamp`]) and `dz = dy act'(z)` is
/// formed inside the backward's passes, so the activation costs no pass of its own either way
/// (unfused, ReLU6 after BN was four more passes forward and two back, on MobileNetV2's
/// largest maps).
pub fn batch_norm(
    bn: &BatchNorm,
    x: Tensor<4>,
    act: Option<Act>,
) -> Result<BatchNormOut, Tensor<4>> {
    match applies_to(bn, &x, None, act) {
        true => Ok(forward(bn, x, None, act)),
        false => Err(x),
    }
}

/// A training BatchNorm's output, batch mean and population variance.
pub type BatchNormOut = (Tensor<4>, Tensor<1>, Tensor<1>);

/// [`batch_norm`] with `residual` added before the activation: `act(bn(x) + residual)`, a
/// residual block's end (ResNet's `relu(bn3(conv3(..)) + shortcut)`), as one op; the
/// activation ReLU, ReLU6 or none. `Err((x, residual))` when it does not apply.
/// Why: apart, the sum and the ReLU were two more passes forward (reading 3 maps, writing 3:
/// the sum, the output and the ReLU's slope) and one more back; fused, the forward reads `x`
/// and `residual` and writes the output, and the backward's `dz = dy act'(out)` (the
/// residual's gradient) is written as the BatchNorm pass reads it, channel by channel.
pub fn batch_norm_add(
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Tensor<4>,
    act: Option<Act>,
) -> Result<BatchNormOut, (Tensor<4>, Tensor<4>)> {
    match applies_to(bn, &x, Some(&residual), act) {
        true => Ok(forward(bn, x, Some(residual), act)),
        false => Err((x, residual)),
    }
}

/// Whether the fused op takes `x` (and `residual`): f32 on flex's autodiff device, gamma and
/// beta f32 of `x`'s channels; with a residual, of `x`'s shape and an activation that
/// [`Clamp`] covers (or none).
fn applies_to(
    bn: &BatchNorm,
    x: &Tensor<4>,
    residual: Option<&Tensor<4>>,
    act: Option<Act>,
) -> bool {
    let [n, c, h, w] = x.dims();
    let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
    applies(x)
        && n * h * w > 0
        && [&gamma, &beta]
            .iter()
            .all(|p| p.device() == x.device() && p.dtype() == DType::F32 && p.dims() == [c])
        && residual.is_none_or(|r| {
            RESIDUAL.on()
                && applies(r)
                && r.dims() == x.dims()
                && act.is_none_or(|a| Clamp::of(a).is_some())
        })
}

/// [`batch_norm_add`] (or [`batch_norm`] without a residual), checked by [`applies_to`].
fn forward(
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    act: Option<Act>,
) -> BatchNormOut {
    let [n, c, h, w] = x.dims();
    let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
    let d = Norm {
        n,
        c,
        h,
        w,
        eps: bn.epsilon,
    };
    let (x, gamma, beta) = (primitive(x), primitive(gamma), primitive(beta));
    let xc = contiguous(x.primitive().clone());
    let residual = residual.map(primitive);
    let rc = residual.as_ref().map(|r| contiguous(r.primitive().clone()));
    let rs = rc.as_ref().map(slice);
    let g = slice(&contiguous(gamma.primitive().clone())).to_vec();
    let b = slice(&contiguous(beta.primitive().clone())).to_vec();
    let xs = slice(&xc);
    // Per channel: mean and variance in f64 (two passes), then y = x * scale + shift (and
    // the activation), in the same task while the channel's planes are in cache.
    let hw = d.hw();
    let stats_of = |ch: usize| {
        let planes = || (0..n).map(|i| &xs[(i * c + ch) * hw..][..hw]);
        let count = (n * hw) as f64;
        let mean = planes().map(|p| plane_sum(p) as f64).sum::<f64>() / count;
        let m = mean as f32;
        let var = planes().map(|p| plane_sq_dev(p, m) as f64).sum::<f64>() / count;
        (mean, var)
    };
    let inv_std = |var: f64| (1.0 / (var + d.eps).sqrt()) as f32;
    // The output plane `at` of channel `ch` (and the activation's slope), from the statistics.
    let isa = Isa::get();
    let scale_shift = |ch: usize, (mean, var): (f64, f64)| {
        let scale = g[ch] * inv_std(var);
        [scale, b[ch] - mean as f32 * scale]
    };
    // ReLU's and ReLU6's slopes (0 or 1) are found again in the backward: from the input,
    // or after a residual sum from the output.
    let clamp = act
        .and_then(Clamp::of)
        .filter(|_| rs.is_some() || SLOPE_FROM_INPUT.on());
    let act = act.filter(|_| clamp.is_none());
    let write = |ch: usize,
                 st: (f64, f64),
                 at: usize,
                 y: &mut [MaybeUninit<f32>],
                 sl: Option<&mut [MaybeUninit<f32>]>| {
        let [scale, shift] = scale_shift(ch, st);
        let x = &xs[at..at + hw];
        match (act, sl) {
            (Some(act), Some(sl)) => isa.affine_act(x, [scale, shift], act, y, sl),
            _ => affine_plane(x, rs.map(|r| &r[at..at + hw]), y, [scale, shift], clamp),
        }
    };
    let len = xs.len();
    let (stats, y, slope) = if PER_CHANNEL.on() {
        let mut y: Vec<f32> = Vec::with_capacity(len);
        let mut sl: Vec<f32> = Vec::with_capacity(if act.is_some() { len } else { 0 });
        let (yo, so) = (
            crate::cpu::bf16::Out(y.as_mut_ptr()),
            crate::cpu::bf16::Out(sl.as_mut_ptr()),
        );
        let stats = (0..c)
            .into_par_iter()
            .map(|ch| {
                let st = stats_of(ch);
                for i in 0..n {
                    let at = (i * c + ch) * hw;
                    // SAFETY: plane `at..at + hw` lies inside both vectors' capacity (`len`;
                    // the slope's only with an activation), and only this channel's task
                    // writes it.
                    let (yp, sp) = unsafe { (yo.part(at, hw), act.map(|_| so.part(at, hw))) };
                    write(ch, st, at, yp, sp);
                }
                st
            })
            .collect::<Vec<(f64, f64)>>();
        // SAFETY: every plane of every channel was written above (the slope's with an
        // activation).
        unsafe {
            y.set_len(len);
            if act.is_some() {
                sl.set_len(len);
            }
        }
        (stats, y, act.map(|_| sl))
    } else {
        let stats: Vec<(f64, f64)> = (0..c).into_par_iter().map(stats_of).collect();
        match act {
            None => {
                let y = preloaded(len, hw, |p, y| write(p % c, stats[p % c], p * hw, y, None));
                (stats, y, None)
            }
            Some(_) => {
                let fill = |p: usize, y: &mut [MaybeUninit<f32>], s: &mut [MaybeUninit<f32>]| {
                    write(p % c, stats[p % c], p * hw, y, Some(s))
                };
                let (y, s) = preloaded_pair(len, hw, fill);
                (stats, y, Some(s))
            }
        }
    };
    let invstd: Vec<f32> = stats.iter().map(|&(_, v)| inv_std(v)).collect();
    let mean: Vec<f32> = stats.iter().map(|&(m, _)| m as f32).collect();
    let var: Vec<f32> = stats.iter().map(|&(_, v)| v as f32).collect();
    let y = FlexTensor::from_data(TensorData::new(y, [n, c, h, w]));
    let gate = match (slope, clamp) {
        (Some(sl), _) => Gate::Slope(sl),
        // The output is what the next layer keeps for its own backward: no copy.
        _ if rs.is_some() => Gate::Output {
            kind: clamp,
            y: y.clone(),
        },
        (None, Some(kind)) => Gate::Clamp {
            kind,
            affine: (0..c).map(|ch| scale_shift(ch, stats[ch])).collect(),
        },
        (None, None) => Gate::None,
    };
    let state = NormState {
        x: xc.clone(),
        mean: mean.clone(),
        invstd,
        gamma: g,
        gate,
        d,
    };
    let out = match residual {
        Some(r) => finish([x.node(), gamma.node(), beta.node(), r.node()], state, y),
        None => finish([x.node(), gamma.node(), beta.node()], state, y),
    };
    let device = Device::flex();
    let stat = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [c]), &device).autodiff();
    (Tensor::from_primitive::<Ad>(out), stat(mean), stat(var))
}

/// The autodiff node of a BatchNorm with `N` parents: input, gamma, beta and, when `N` is 4,
/// the residual.
fn finish<const N: usize>(
    nodes: [burn::backend::autodiff::ops::NodeGuard; N],
    state: NormState,
    y: FlexTensor,
) -> FloatTensor<Ad> {
    match NormBackward::<N>
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// `sum f(a[i], b[i])` in eight f32 lanes (so it vectorises), over one plane.
#[inline(always)]
pub(crate) fn sum8(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, at) = a.as_chunks::<8>();
    let (bc, bt) = b.as_chunks::<8>();
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..8 {
            acc[l] += f(x[l], y[l]);
        }
    }
    for (l, (&x, &y)) in at.iter().zip(bt).enumerate() {
        acc[l] += f(x, y);
    }
    acc.iter().sum()
}

crate::cpu::isa::widest!(pub(crate) fn plane_sum(p: &[f32]) -> f32 = plane_sum_body);
crate::cpu::isa::widest!(fn plane_sq_dev(p: &[f32], m: f32) -> f32 = plane_sq_dev_body);
crate::cpu::isa::widest!(
    fn affine_plane(
        x: &[f32],
        r: Option<&[f32]>,
        y: &mut [MaybeUninit<f32>],
        affine: [f32; 2],
        clamp: Option<Clamp>,
    ) = affine_plane_body
);
crate::cpu::isa::widest!(
    fn grad_sums(dy: &[f32], gate: PlaneGate<'_>, x: &[f32], m: f32) -> (f32, f32) =
        grad_sums_body
);
crate::cpu::isa::widest!(
    fn input_grad_plane(
        dx: &mut [MaybeUninit<f32>],
        dy: &[f32],
        gate: PlaneGate<'_>,
        x: &[f32],
        c: [f32; 5],
    ) = input_grad_plane_body
);

crate::cpu::isa::widest!(
    fn gate_plane(dy: &[f32], y: &[f32], dz: &mut [MaybeUninit<f32>], six: bool) =
        gate_plane_body
);

/// `dz = act'(z) dy` for ReLU (`six` false) or ReLU6 from their output `y`: `y > 0` (and
/// `y < 6`) exactly where `z` is (`y` is `z` there, 0 or 6 elsewhere, NaN where `z` is);
/// the product in the order the activation's own backward takes it (the same bits).
#[inline(always)]
fn gate_plane_body(dy: &[f32], y: &[f32], dz: &mut [MaybeUninit<f32>], six: bool) {
    for ((o, &g), &v) in dz.iter_mut().zip(dy).zip(y) {
        o.write(clamp_slope(v, six) * g);
    }
}

/// An activation whose slope is 0 or 1, decided by `z` alone: it need not be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clamp {
    Relu,
    Relu6,
}

impl Clamp {
    fn of(act: Act) -> Option<Clamp> {
        match act {
            Act::Relu => Some(Clamp::Relu),
            Act::Relu6 => Some(Clamp::Relu6),
            Act::Silu | Act::Gelu => None,
        }
    }
}

/// The activation fused after BatchNorm, as its backward needs it.
#[derive(Debug, Clone)]
pub(crate) enum Gate {
    /// None: `dz = dy`.
    None,
    /// `act'(z)` at each output, kept from the forward (SiLU).
    Slope(Vec<f32>),
    /// ReLU's or ReLU6's slope, found again from the input: `z = x * scale + shift` with each
    /// channel's `[scale, shift]`, the forward's own arithmetic, so the same kinks. Why: a
    /// kept slope was a third of the forward's memory traffic and a quarter of the backward's
    /// (and a map the size of the output held until the backward).
    Clamp { kind: Clamp, affine: Vec<[f32; 2]> },
    /// After a residual sum ([`batch_norm_add`]): ReLU's or ReLU6's slope (or none) found
    /// again from the output `y`. The backward first writes `dz`, the residual's gradient,
    /// and runs BatchNorm's gradient on it.
    Output { kind: Option<Clamp>, y: FlexTensor },
}

impl Gate {
    /// The gate over elements `at..at + len` of channel `ch`.
    fn plane(&self, ch: usize, at: usize, len: usize) -> PlaneGate<'_> {
        match self {
            // `dz` was formed first ([`NormBackward`]).
            Gate::None | Gate::Output { .. } => PlaneGate::None,
            Gate::Slope(sl) => PlaneGate::Slope(&sl[at..at + len]),
            Gate::Clamp { kind, affine } => PlaneGate::Clamp {
                six: *kind == Clamp::Relu6,
                affine: affine[ch],
            },
        }
    }
}

/// [`Gate`] over one plane.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PlaneGate<'a> {
    None,
    Slope(&'a [f32]),
    Clamp { six: bool, affine: [f32; 2] },
}

/// ReLU's (`six` false) or ReLU6's slope at `z`: PyTorch's, 0 at the kinks and at NaN (the
/// values [`crate::cpu::isa::affine_act`] keeps).
#[inline(always)]
fn clamp_slope(z: f32, six: bool) -> f32 {
    let inside = if six { z > 0.0 && z < 6.0 } else { z > 0.0 };
    if inside { 1.0 } else { 0.0 }
}

/// A plane's sum.
#[inline(always)]
fn plane_sum_body(p: &[f32]) -> f32 {
    sum8(p, p, |v, _| v)
}

/// A plane's sum of squared deviations from `m`.
#[inline(always)]
fn plane_sq_dev_body(p: &[f32], m: f32) -> f32 {
    sum8(p, p, |v, _| (v - m) * (v - m))
}

/// `y = act((x * scale + shift) + r)`: BatchNorm's output, plus the residual `r` when given
/// (the two ops apart round the same way), then ReLU or ReLU6 as
/// [`crate::cpu::isa::affine_act`] writes them (their slopes are found again in the
/// backward), or nothing.
#[inline(always)]
fn affine_plane_body(
    x: &[f32],
    r: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
    affine: [f32; 2],
    clamp: Option<Clamp>,
) {
    match clamp {
        None => affine_into(x, r, y, affine, |z| z),
        Some(Clamp::Relu) => affine_into(x, r, y, affine, |z| if z < 0.0 { 0.0 } else { z }),
        Some(Clamp::Relu6) => affine_into(x, r, y, affine, |z| z.clamp(0.0, 6.0)),
    }
}

/// [`affine_plane_body`] for one activation `act` (a loop of its own for each).
#[inline(always)]
fn affine_into(
    x: &[f32],
    r: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
    [scale, shift]: [f32; 2],
    act: impl Fn(f32) -> f32,
) {
    match r {
        Some(r) => {
            for ((y, &v), &r) in y.iter_mut().zip(x).zip(r) {
                y.write(act((v * scale + shift) + r));
            }
        }
        None => {
            for (y, &v) in y.iter_mut().zip(x) {
                y.write(act(v * scale + shift));
            }
        }
    }
}

/// A plane's `sum(dz)` and `sum(dz * (x - m))` for `dz = dy * slope` (or `dy`), in one pass
/// over 64 lanes (four vectors per sum, so the additions do not wait on each other): each
/// input read once, where forming `dz` in a buffer and summing twice read the plane three
/// times. This pass was 8 % of a MobileNetV2 training step at 224 px; the step's speed did not
/// change measurably (2 cores, Intel Xeon, 2026-12-05), so it is a memory change.
#[inline(always)]
fn grad_sums_body(dy: &[f32], gate: PlaneGate<'_>, x: &[f32], m: f32) -> (f32, f32) {
    const L: usize = 64;
    let (mut a, mut b) = ([0f32; L], [0f32; L]);
    let (dyc, dyt) = dy.as_chunks::<L>();
    let (xc, xt) = x[..dy.len()].as_chunks::<L>();
    match gate {
        PlaneGate::Clamp { six, affine } => {
            let [scale, shift] = affine;
            for (g, v) in dyc.iter().zip(xc) {
                for l in 0..L {
                    let dz = g[l] * clamp_slope(v[l] * scale + shift, six);
                    a[l] += dz;
                    b[l] += dz * (v[l] - m);
                }
            }
            for (l, (g, v)) in dyt.iter().zip(xt).enumerate() {
                let dz = g * clamp_slope(v * scale + shift, six);
                a[l] += dz;
                b[l] += dz * (v - m);
            }
        }
        PlaneGate::Slope(sl) => {
            let (sc, st) = sl[..dy.len()].as_chunks::<L>();
            for ((g, s), v) in dyc.iter().zip(sc).zip(xc) {
                for l in 0..L {
                    let dz = g[l] * s[l];
                    a[l] += dz;
                    b[l] += dz * (v[l] - m);
                }
            }
            for (l, ((g, s), v)) in dyt.iter().zip(st).zip(xt).enumerate() {
                let dz = g * s;
                a[l] += dz;
                b[l] += dz * (v - m);
            }
        }
        PlaneGate::None => {
            for (g, v) in dyc.iter().zip(xc) {
                for l in 0..L {
                    a[l] += g[l];
                    b[l] += g[l] * (v[l] - m);
                }
            }
            for (l, (g, v)) in dyt.iter().zip(xt).enumerate() {
                a[l] += g;
                b[l] += g * (v - m);
            }
        }
    }
    (a.iter().sum(), b.iter().sum())
}

/// A plane of `dx = k (dz - mean(dz) - (x - m) s mean(dz xhat))`, `c = [k, mean(dz),
/// mean(dz xhat), m, s]`.
#[inline(always)]
fn input_grad_plane_body(
    dx: &mut [MaybeUninit<f32>],
    dy: &[f32],
    gate: PlaneGate<'_>,
    x: &[f32],
    [k, mdy, mdyx, m, s]: [f32; 5],
) {
    match gate {
        PlaneGate::Clamp { six, affine } => {
            let [scale, shift] = affine;
            for ((o, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
                let a = clamp_slope(v * scale + shift, six);
                o.write(k * (g * a - mdy - (v - m) * s * mdyx));
            }
        }
        PlaneGate::Slope(sl) => {
            for (((o, &g), &a), &v) in dx.iter_mut().zip(dy).zip(sl).zip(x) {
                o.write(k * (g * a - mdy - (v - m) * s * mdyx));
            }
        }
        PlaneGate::None => {
            for ((o, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
                o.write(k * (g - mdy - (v - m) * s * mdyx));
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Norm {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) eps: f64,
}

impl Norm {
    pub(crate) fn hw(&self) -> usize {
        self.h * self.w
    }
}

#[derive(Debug, Clone)]
pub(crate) struct NormState {
    pub(crate) x: FlexTensor,
    pub(crate) mean: Vec<f32>,
    pub(crate) invstd: Vec<f32>,
    pub(crate) gamma: Vec<f32>,
    /// The activation fused in, as the backward needs it.
    pub(crate) gate: Gate,
    pub(crate) d: Norm,
}

static PER_CHANNEL: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_BN_PER_CHANNEL"));

/// Turns BatchNorm's passes per channel in one task on or off for the process (off: the
/// statistics or gradient sums for every channel, then the output or input gradient over the
/// whole tensor), over `COMMITTEE_BN_PER_CHANNEL`, to time the two in one process
/// (`examples/ab_train.rs` in committee-train, switch `bn-per-channel`).
pub fn set_per_channel(on: bool) {
    PER_CHANNEL.set(on)
}

static RESIDUAL: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_BN_RESIDUAL"));

/// Turns [`batch_norm_add`] on or off for the process (off: it hands its inputs back, and
/// BatchNorm, the sum and the activation run apart), over `COMMITTEE_BN_RESIDUAL`, to time the
/// two in one process (`examples/ab_train.rs` in committee-train, switch `bn-residual`).
pub fn set_residual(on: bool) {
    RESIDUAL.set(on)
}

static SLOPE_FROM_INPUT: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_BN_SLOPE_FROM_INPUT"));

/// Turns ReLU's and ReLU6's slopes found again from BatchNorm's input ([`Gate::Clamp`]) on or
/// off for the process (off: kept from the forward, as SiLU's), over
/// `COMMITTEE_BN_SLOPE_FROM_INPUT`, to time the two in one process (`examples/ab_train.rs` in
/// committee-train, switch `bn-slope-from-input`).
pub fn set_slope_from_input(on: bool) {
    SLOPE_FROM_INPUT.set(on)
}

#[derive(Debug)]
pub(crate) struct NormBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for NormBackward<N> {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("batch norm backward", move || {
            let mut parents = ops.parents.into_iter();
            let mut parent = || parents.next().flatten();
            let (node_x, node_g, node_b, node_r) = (parent(), parent(), parent(), parent());
            let dy = contiguous(grads.consume::<Flex>(&ops.node));
            let st = ops.state;
            let d = &st.d;
            let (dys, xs) = (slice(&dy), slice(&st.x));
            // Per channel: sum(dz) and sum(dz * xhat), in f64, with the gradient before the
            // activation, `dz = dy act'(z)`, formed plane by plane where it is read; then, in the
            // same task while the channel's planes are still in cache, its planes of dx.
            let count = (d.n * d.hw()) as f32;
            let (len, hw) = (xs.len(), d.hw());
            let mut dx: Vec<f32> = Vec::with_capacity(if node_x.is_some() { len } else { 0 });
            let out = crate::cpu::bf16::Out(dx.as_mut_ptr());
            let one_task = PER_CHANNEL.on();
            // After a residual sum with an activation: `dz` (the residual's gradient) written
            // plane by plane before BatchNorm's passes read it in its place.
            let gated = match &st.gate {
                Gate::Output { kind: Some(k), y } => Some((*k == Clamp::Relu6, slice(y))),
                _ => None,
            };
            let mut dz: Vec<f32> = Vec::with_capacity(if gated.is_some() { len } else { 0 });
            let dz_out = crate::cpu::bf16::Out(dz.as_mut_ptr());
            let form_dz = |at: usize| {
                if let Some((six, ys)) = gated {
                    // SAFETY: plane `at..at + hw` lies inside `dz`'s capacity (`len`), and
                    // only the task that owns the plane writes it, once.
                    let dst = unsafe { dz_out.part(at, hw) };
                    gate_plane(&dys[at..at + hw], &ys[at..at + hw], dst, six);
                }
            };
            // Plane `at` of channel `ch`: its input, output gradient and the activation's gate.
            let plane = |ch: usize, at: usize| {
                let gate = st.gate.plane(ch, at, hw);
                let dy = match gated {
                    // SAFETY: `form_dz(at)` wrote the plane before any reader asks for it
                    // (in the same task, or in the pass over all planes before).
                    Some(_) => unsafe { std::slice::from_raw_parts(dz_out.get().add(at), hw) },
                    None => &dys[at..at + hw],
                };
                (&xs[at..at + hw], dy, gate)
            };
            // dx over plane `at` of channel `ch`, from the channel's sums.
            let input_grad =
                |ch: usize, sums: (f64, f64), at: usize, dst: &mut [MaybeUninit<f32>]| {
                    let (m, s) = (st.mean[ch], st.invstd[ch]);
                    let k = st.gamma[ch] * s;
                    let (mdy, mdyx) = (sums.0 as f32 / count, sums.1 as f32 / count);
                    let (x, dy, gate) = plane(ch, at);
                    input_grad_plane(dst, dy, gate, x, [k, mdy, mdyx, m, s]);
                };
            let channel = |ch: usize, write: bool| {
                let (m, s) = (st.mean[ch], st.invstd[ch]);
                let at = |i: usize| (i * d.c + ch) * hw;
                if one_task {
                    (0..d.n).for_each(|i| form_dz(at(i)));
                }
                let sums = (0..d.n).fold((0.0, 0.0), |(a, b), i| {
                    let (x, dy, gate) = plane(ch, at(i));
                    let (pa, pb) = grad_sums(dy, gate, x, m);
                    (a + pa as f64, b + pb as f64 * s as f64)
                });
                if write {
                    for i in 0..d.n {
                        // SAFETY: plane `at(i)..+ hw` lies inside `dx`'s capacity (`len`), and
                        // only this channel's task writes it (channels own disjoint planes).
                        let dst = unsafe { out.part(at(i), hw) };
                        input_grad(ch, sums, at(i), dst);
                    }
                }
                sums
            };
            if !one_task {
                (0..d.n * d.c).into_par_iter().for_each(|p| form_dz(p * hw));
            }
            let sums: Vec<(f64, f64)> = (0..d.c)
                .into_par_iter()
                .map(|ch| channel(ch, one_task && node_x.is_some()))
                .collect();
            if let Some(node) = node_x {
                if one_task {
                    // SAFETY: every plane of every channel was written above.
                    unsafe { dx.set_len(len) };
                } else {
                    dx = preloaded(len, hw, |p, dx| {
                        input_grad(p % d.c, sums[p % d.c], p * hw, dx)
                    });
                }
                grads.register::<Flex>(
                    node.id,
                    FlexTensor::from_data(TensorData::new(dx, [d.n, d.c, d.h, d.w])),
                );
            }
            if let Some(node) = node_r {
                let shape = [d.n, d.c, d.h, d.w];
                let dr = match gated {
                    Some(_) => {
                        // SAFETY: every plane was written by `form_dz` above.
                        unsafe { dz.set_len(len) };
                        FlexTensor::from_data(TensorData::new(dz, shape))
                    }
                    // No activation: the residual's gradient is the output's.
                    None => dy.clone(),
                };
                grads.register::<Flex>(node.id, dr);
            }
            let per_channel = |f: fn(&(f64, f64)) -> f64| {
                let v: Vec<f32> = sums.iter().map(|s| f(s) as f32).collect();
                FlexTensor::from_data(TensorData::new(v, [d.c]))
            };
            if let Some(node) = node_g {
                grads.register::<Flex>(node.id, per_channel(|s| s.1));
            }
            if let Some(node) = node_b {
                grads.register::<Flex>(node.id, per_channel(|s| s.0));
            }
        })
    }
}
