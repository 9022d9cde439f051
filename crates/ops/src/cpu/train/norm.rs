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
/// The activation's value and slope are written in the output pass and `dz = dy act'(z)` is
/// formed inside the backward's passes, so the activation costs no pass of its own either way
/// (unfused, ReLU6 after BN was four more passes forward and two back, on MobileNetV2's
/// largest maps).
pub fn batch_norm(
    bn: &BatchNorm,
    x: Tensor<4>,
    act: Option<Act>,
) -> Result<(Tensor<4>, Tensor<1>, Tensor<1>), Tensor<4>> {
    let [n, c, h, w] = x.dims();
    let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
    let ok = applies(&x)
        && n * h * w > 0
        && [&gamma, &beta]
            .iter()
            .all(|p| p.device() == x.device() && p.dtype() == DType::F32 && p.dims() == [c]);
    if !ok {
        return Err(x);
    }
    let d = Norm {
        n,
        c,
        h,
        w,
        eps: bn.epsilon,
    };
    let (x, gamma, beta) = (primitive(x), primitive(gamma), primitive(beta));
    let xc = contiguous(x.primitive().clone());
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
    let write = |ch: usize,
                 (mean, var): (f64, f64),
                 at: usize,
                 y: &mut [MaybeUninit<f32>],
                 sl: Option<&mut [MaybeUninit<f32>]>| {
        let scale = g[ch] * inv_std(var);
        let shift = b[ch] - mean as f32 * scale;
        let x = &xs[at..at + hw];
        match (act, sl) {
            (Some(act), Some(sl)) => isa.affine_act(x, [scale, shift], act, y, sl),
            _ => affine_plane(x, y, scale, shift),
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
    let state = NormState {
        x: xc.clone(),
        mean: mean.clone(),
        invstd,
        gamma: g,
        slope,
        d,
    };
    let out = match NormBackward
        .prepare::<NoCheckpointing>([x.node(), gamma.node(), beta.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    let device = Device::flex();
    let stat = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [c]), &device).autodiff();
    Ok((Tensor::from_primitive::<Ad>(out), stat(mean), stat(var)))
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
    fn affine_plane(x: &[f32], y: &mut [MaybeUninit<f32>], scale: f32, shift: f32) =
        affine_plane_body
);
crate::cpu::isa::widest!(
    fn grad_sums(dy: &[f32], slope: Option<&[f32]>, x: &[f32], m: f32) -> (f32, f32) =
        grad_sums_body
);
crate::cpu::isa::widest!(
    fn input_grad_plane(
        dx: &mut [MaybeUninit<f32>],
        dy: &[f32],
        slope: Option<&[f32]>,
        x: &[f32],
        c: [f32; 5],
    ) = input_grad_plane_body
);

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

/// `y = x * scale + shift`.
#[inline(always)]
fn affine_plane_body(x: &[f32], y: &mut [MaybeUninit<f32>], scale: f32, shift: f32) {
    for (y, &v) in y.iter_mut().zip(x) {
        y.write(v * scale + shift);
    }
}

/// A plane's `sum(dz)` and `sum(dz * (x - m))` for `dz = dy * slope` (or `dy`), in one pass
/// over 64 lanes (four vectors per sum, so the additions do not wait on each other): each
/// input read once, where forming `dz` in a buffer and summing twice read the plane three
/// times. This pass was 8 % of a MobileNetV2 training step at 224 px; the step's speed did not
/// change measurably (2 cores, Intel Xeon, 2026-12-05), so it is a memory change.
#[inline(always)]
fn grad_sums_body(dy: &[f32], slope: Option<&[f32]>, x: &[f32], m: f32) -> (f32, f32) {
    const L: usize = 64;
    let (mut a, mut b) = ([0f32; L], [0f32; L]);
    let (dyc, dyt) = dy.as_chunks::<L>();
    let (xc, xt) = x[..dy.len()].as_chunks::<L>();
    match slope {
        Some(sl) => {
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
        None => {
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
    slope: Option<&[f32]>,
    x: &[f32],
    [k, mdy, mdyx, m, s]: [f32; 5],
) {
    match slope {
        Some(sl) => {
            for (((o, &g), &a), &v) in dx.iter_mut().zip(dy).zip(sl).zip(x) {
                o.write(k * (g * a - mdy - (v - m) * s * mdyx));
            }
        }
        None => {
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
    /// The activation's slope at each output, when one is fused in.
    pub(crate) slope: Option<Vec<f32>>,
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

#[derive(Debug)]
pub(crate) struct NormBackward;

impl Backward<Flex, 3> for NormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("batch norm backward", move || {
            let [node_x, node_g, node_b] = ops.parents;
            let dy = contiguous(grads.consume::<Flex>(&ops.node));
            let st = ops.state;
            let d = &st.d;
            let (dys, xs) = (slice(&dy), slice(&st.x));
            let slope = st.slope.as_deref();
            // Per channel: sum(dz) and sum(dz * xhat), in f64, with the gradient before the
            // activation, `dz = dy act'(z)`, formed plane by plane where it is read; then, in the
            // same task while the channel's planes are still in cache, its planes of dx.
            let count = (d.n * d.hw()) as f32;
            let (len, hw) = (xs.len(), d.hw());
            let mut dx: Vec<f32> = Vec::with_capacity(if node_x.is_some() { len } else { 0 });
            let out = crate::cpu::bf16::Out(dx.as_mut_ptr());
            let one_task = PER_CHANNEL.on();
            // Plane `at`: its input, output gradient and the activation's slope.
            let plane = |at: usize| {
                let sl = slope.map(|sl| &sl[at..at + hw]);
                (&xs[at..at + hw], &dys[at..at + hw], sl)
            };
            // dx over plane `at` of channel `ch`, from the channel's sums.
            let input_grad =
                |ch: usize, sums: (f64, f64), at: usize, dst: &mut [MaybeUninit<f32>]| {
                    let (m, s) = (st.mean[ch], st.invstd[ch]);
                    let k = st.gamma[ch] * s;
                    let (mdy, mdyx) = (sums.0 as f32 / count, sums.1 as f32 / count);
                    let (x, dy, sl) = plane(at);
                    input_grad_plane(dst, dy, sl, x, [k, mdy, mdyx, m, s]);
                };
            let channel = |ch: usize, write: bool| {
                let (m, s) = (st.mean[ch], st.invstd[ch]);
                let at = |i: usize| (i * d.c + ch) * hw;
                let sums = (0..d.n).fold((0.0, 0.0), |(a, b), i| {
                    let (x, dy, sl) = plane(at(i));
                    let (pa, pb) = grad_sums(dy, sl, x, m);
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
