//! Depthwise convolution with its own backward: channels-last, or plane by plane on wide
//! maps ([`planes`]).

use super::depthwise_s2;
use super::*;
use crate::cpu::isa::{Epilogue, fma};

/// `conv(x)` for a depthwise `conv` on flex's autodiff device; `Err(x)` when it does not apply.
pub fn depthwise(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [_, _, k, _] = conv.weight.lazy_shape().dims::<4>();
    let [n, c, h, w] = x.dims();
    if !(applies(&x) && conv.bias.is_none() && is_depthwise(conv, c)) {
        return Err(x);
    }
    let Some(win) = window(conv, [h, w]) else {
        return Err(x);
    };
    let geo = Geometry {
        h,
        w,
        ow: win.ow,
        k,
        s: conv.stride[0],
        pt: win.pt,
        pl: win.pl,
    };
    let shape = Shape {
        n,
        c,
        oh: win.oh,
        geo,
    };
    let (x, weight) = operands(conv, x)?;
    Ok(Tensor::from_primitive::<Ad>(node(x, weight, shape)))
}

/// Sizes of one depthwise convolution.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) oh: usize,
    pub(crate) geo: Geometry,
}

#[derive(Debug)]
pub(crate) struct DepthwiseBackward;

/// What the backward pass reads: the padded channels-last input (the weight gradient reads
/// it) and the channels-last weight (the input gradient reads it), or, for a layer run plane
/// by plane ([`planes`]), the input and weight as they were.
#[derive(Debug, Clone)]
pub(crate) enum Saved {
    Nhwc(Vec<f32>, Vec<f32>),
    Planes(FlexTensor, FlexTensor),
}

impl Backward<Flex, 2> for DepthwiseBackward {
    type State = (Saved, Shape);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("conv depthwise backward", move || {
            let [node_x, node_w] = ops.parents;
            let dy = contiguous(grads.consume::<Flex>(&ops.node));
            let (saved, shape) = ops.state;
            let want_dx = node_x.is_some();
            let (dx, dw) = match &saved {
                Saved::Nhwc(xp, wt) => backward(slice(&dy), xp, wt, &shape, want_dx),
                Saved::Planes(x, w) => {
                    backward_planes(slice(&dy), slice(x), slice(w), &shape, want_dx)
                }
            };
            if let Some(node) = node_w {
                grads.register::<Flex>(node.id, dw);
            }
            if let (Some(node), Some(dx)) = (node_x, dx) {
                grads.register::<Flex>(node.id, dx);
            }
        })
    }
}

pub(crate) fn node(x: FloatTensor<Ad>, w: FloatTensor<Ad>, shape: Shape) -> FloatTensor<Ad> {
    let xc = contiguous(x.primitive().clone());
    let wc = contiguous(w.primitive().clone());
    let (saved, y) = match planes(&shape) {
        true => {
            let y = forward_planes(slice(&xc), slice(&wc), &shape);
            (Saved::Planes(xc, wc), y)
        }
        false => {
            let (xp, wt, y) = forward(slice(&xc), slice(&wc), &shape);
            (Saved::Nhwc(xp, wt), y)
        }
    };
    match DepthwiseBackward
        .prepare::<NoCheckpointing>([x.node(), w.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((saved, shape), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

// Layout: the kernels work channels-last (one image's pixels in rows of `c` channels), so every
// inner loop is a contiguous multiply-add over the channels, whatever the map size (MobileNetV2
// at 28 px has 1x1 to 14x14 maps, too small for per-plane loops to vectorise). Stride-1 and
// stride-2 layers with output rows of 48 or more run plane by plane in the tensors' own layout
// instead ([`planes`]).

/// Whether a layer runs plane by plane, NCHW as the tensors lie: stride 1 or 2, output rows
/// at least three vectors (48) wide, padding smaller than the kernel on every side (so the
/// input gradient is the same plane kernel, stride 1, with the taps flipped; at stride 2 both
/// gradients go by phases, [`depthwise_s2`], or, switched off, over the output gradient
/// spread over the stride's grid, [`Shape::dilated`]). Why: at 224 px the layout
/// changes to and from channels-last (five per layer: input and output forward, output
/// gradient, input gradient and the padded input) were a sixth of a MobileNetV2 training step
/// (`perf`, AMD EPYC). Per layer, forward and both gradients at batch 8 (`DW=1 cargo run
/// --release -p committee-ops --example train_conv_rate`): stride 1, 112x112 maps 2.34x of
/// channels-last, 56x56 1.49-1.79x, but 28x28 0.82-0.97x (the plane loops' row ends and
/// per-plane setup), 14x14 level; stride 2, 56 output columns 1.62-1.82x, 28 0.95-1.01x
/// (3x3) and 0.68-0.71x (5x5: the spread gradient's zeros cost 25 taps each). With the
/// gradients by phases (2026-12-08, same host): 56 columns 1.78-1.81x, 28 columns 1.12-1.29x
/// (3x3) but 0.86-0.95x (5x5), 14 columns 0.64-0.70x: the threshold stays.
/// `COMMITTEE_DEPTHWISE_PLANES=0` keeps every layer channels-last.
fn planes(s: &Shape) -> bool {
    use crate::cpu::depthwise::{MAX_K, V};
    let (g, d) = (&s.geo, s.dilated());
    PLANES.on()
        && (g.s == 1 || g.s == 2)
        && g.ow >= 3 * V
        && g.k <= MAX_K
        && g.pt < g.k
        && g.pl < g.k
        && d.oh <= g.h + g.pt
        && d.geo.ow <= g.w + g.pl
}

static PLANES: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_DEPTHWISE_PLANES"));

static PHASES: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_DEPTHWISE_PHASES"));

/// Turns the phase-split gradients of stride-2 layers run plane by plane
/// ([`depthwise_s2`]) on or off for the process (over `COMMITTEE_DEPTHWISE_PHASES`; off:
/// stride-1 passes over the spread output gradient), to time the two in one process
/// (`examples/ab_train.rs` in committee-train, switch `depthwise-phases`).
pub fn set_phases(on: bool) {
    PHASES.set(on)
}

/// Turns the plane-by-plane depthwise training path on or off for the process (over
/// `COMMITTEE_DEPTHWISE_PLANES`), to time it in one process (`examples/ab_train.rs` in
/// committee-train).
pub fn set_planes(on: bool) {
    PLANES.set(on)
}

/// The output of a layer [`planes`] takes: the inference kernel's plane loop, per image and
/// channel.
fn forward_planes(x: &[f32], w: &[f32], s: &Shape) -> FlexTensor {
    let g = &s.geo;
    let (c, kk) = (s.c, g.k * g.k);
    let (plane_in, plane_out) = (g.h * g.w, s.oh * g.ow);
    let isa = Isa::get();
    let out = written(s.n * c * plane_out, |out| {
        out.par_chunks_mut(plane_out)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (p, o)| {
                let (x, taps) = (&x[p * plane_in..][..plane_in], &w[(p % c) * kk..][..kk]);
                isa.depthwise_plane(x, o, taps, 0.0, g, Epilogue::None, scratch);
            })
    });
    FlexTensor::from_data(TensorData::new(out, [s.n, c, s.oh, g.ow]))
}

/// The input gradient (when asked for) and the weight gradient of a layer [`planes`] takes,
/// per image and channel: the input gradient is the plane kernel over the output gradient
/// with the taps flipped and the padding `k - 1 - p`; each plane's share of the weight
/// gradient is summed in image order (the same bits whatever the thread count).
fn backward_planes(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    s: &Shape,
    want_dx: bool,
) -> (Option<FlexTensor>, FlexTensor) {
    let g = &s.geo;
    let (c, k) = (s.c, g.k);
    let kk = k * k;
    let (plane_in, plane_out) = (g.h * g.w, s.oh * g.ow);
    // Stride 2: the gradients as a stride-1 layer's over the output gradient spread out.
    let d = s.dilated();
    let back = Geometry {
        h: d.oh,
        w: d.geo.ow,
        ow: g.w,
        k,
        s: 1,
        pt: k - 1 - g.pt,
        pl: k - 1 - g.pl,
    };
    let isa = Isa::get();
    let phases = PHASES.on() && depthwise_s2::applies(g);
    let per_plane = |p: usize, dx: Option<&mut [Out]>, dw: &mut [f32], bufs: &mut Buffers| {
        let mut dy = &dy[p * plane_out..][..plane_out];
        if phases {
            let x = &x[p * plane_in..][..plane_in];
            if let Some(dx) = dx {
                let taps = &w[(p % c) * kk..][..kk];
                depthwise_s2::input_grad(dy, taps, g, s.oh, dx, &mut bufs.phases);
            }
            depthwise_s2::weight_grad(dy, x, g, s.oh, dw, &mut bufs.phases);
            return;
        }
        if g.s > 1 {
            let spread = &mut bufs.dyt;
            spread.clear();
            spread.resize(d.oh * d.geo.ow, 0.0);
            for (oy, row) in dy.chunks_exact(g.ow).enumerate() {
                let at = &mut spread[oy * g.s * d.geo.ow..];
                for (ox, &v) in row.iter().enumerate() {
                    at[ox * g.s] = v;
                }
            }
            dy = spread;
        }
        if let Some(dx) = dx {
            let taps = &w[(p % c) * kk..][..kk];
            let mut flipped = [0f32; crate::cpu::depthwise::MAX_K * crate::cpu::depthwise::MAX_K];
            for (f, &t) in flipped.iter_mut().zip(taps.iter().rev()) {
                *f = t;
            }
            let scratch = &mut bufs.dxp;
            isa.depthwise_plane(dy, dx, &flipped[..kk], 0.0, &back, Epilogue::None, scratch);
        }
        plane_wgrad(dy, &x[p * plane_in..][..plane_in], &d, dw);
    };
    let dx_len = if want_dx { s.n * c * plane_in } else { 0 };
    let parts = [s.n * c, kk, c * kk];
    let (dx, dw) = with_shares(dx_len, plane_in, parts, Buffers::default, per_plane);
    // Shares `[image][c][tap]`, summed `[c][tap]`: the weight's own layout.
    let dw = FlexTensor::from_data(TensorData::new(dw, [c, 1, k, k]));
    let dx = want_dx.then(|| FlexTensor::from_data(TensorData::new(dx, [s.n, c, g.h, g.w])));
    (dx, dw)
}

/// Runs `part(i, dx_i, share_i, scratch)` for the `parts` parts of a backward pass (images, or
/// image planes), in parallel, each writing the whole of its own `dx_i` (`part_len` long, in
/// fresh memory, [`written`]; `None` when `dx_len` is 0: no input gradient asked for) and its
/// own share of the weight gradient (`share` long); the parts of one image are consecutive,
/// their shares together `image` long, and the images' shares are summed in image order into
/// one `image`-long gradient: the same bits whatever the thread count or scheduling (training
/// runs are reproducible). Returns the input gradient (`dx_len` long) and the sum.
fn with_shares<B: Send>(
    dx_len: usize,
    part_len: usize,
    [parts, share, image]: [usize; 3],
    init: impl Fn() -> B + Sync + Send,
    part: impl Fn(usize, Option<&mut [Out]>, &mut [f32], &mut B) + Sync + Send,
) -> (Vec<f32>, Vec<f32>) {
    let mut shares = vec![0f32; parts * share];
    let dx = written(dx_len, |dx| match dx.is_empty() {
        true => shares
            .par_chunks_mut(share)
            .enumerate()
            .for_each_init(&init, |b, (i, sh)| part(i, None, sh, b)),
        false => dx
            .par_chunks_mut(part_len)
            .zip(shares.par_chunks_mut(share))
            .enumerate()
            .for_each_init(&init, |b, (i, (dx, sh))| part(i, Some(dx), sh, b)),
    });
    let mut sum = vec![0f32; image];
    sum.par_chunks_mut(CHUNK).enumerate().for_each(|(j, out)| {
        for img in 0..shares.len() / image.max(1) {
            for (a, &b) in out.iter_mut().zip(&shares[img * image + j * CHUNK..]) {
                *a += b;
            }
        }
    });
    (dx, sum)
}

crate::cpu::isa::widest!(
    fn plane_wgrad(dy: &[f32], x: &[f32], s: &Shape, dw: &mut [f32]) = plane_wgrad_body
);

/// Lanes of a weight gradient's dot products ([`lane_dot`]).
pub(super) const L: usize = crate::cpu::depthwise::V;

/// `acc[i] += a[j] * b[j]` over the whole runs of `L` (`j % L == i`), `tail +=` the rest: one
/// row's part of a tap's dot product, in a fixed order (the lanes are summed last).
#[inline(always)]
pub(super) fn lane_dot(acc: &mut [f32; L], tail: &mut f32, a: &[f32], b: &[f32]) {
    let (mut ac, mut bc) = (a.chunks_exact(L), b.chunks_exact(L));
    for (a, b) in (&mut ac).zip(&mut bc) {
        for i in 0..L {
            acc[i] += a[i] * b[i];
        }
    }
    for (a, b) in ac.remainder().iter().zip(bc.remainder()) {
        *tail += a * b;
    }
}

/// One plane's weight-gradient share: `dw[ky][kx] = sum over outputs of dy[oy][ox] *
/// x[oy + ky - pt][ox + kx - pl]` (inside the map), each tap a dot product along the rows in
/// 16 lanes, summed in a fixed order.
#[inline(always)]
fn plane_wgrad_body(dy: &[f32], x: &[f32], s: &Shape, dw: &mut [f32]) {
    let g = &s.geo;
    let (k, w, ow) = (g.k, g.w, g.ow);
    for ky in 0..k {
        for kx in 0..k {
            // Output columns whose input column `ox + kx - pl` lies inside the map.
            let lo = g.pl.saturating_sub(kx);
            let hi = ow.min((w + g.pl).saturating_sub(kx));
            let (mut acc, mut tail) = ([0f32; L], 0f32);
            for oy in 0..s.oh {
                let iy = oy + ky;
                if lo >= hi || iy < g.pt || iy - g.pt >= g.h {
                    continue;
                }
                let d = &dy[oy * ow + lo..oy * ow + hi];
                let xr = &x[(iy - g.pt) * w + lo + kx - g.pl..][..hi - lo];
                lane_dot(&mut acc, &mut tail, d, xr);
            }
            dw[ky * k + kx] = acc.iter().sum::<f32>() + tail;
        }
    }
}

impl Shape {
    /// The layer seen from its gradients as a stride-1 one: its output gradient spread over
    /// the stride's grid with zeros between (`(oh - 1) s + 1` rows), which a stride-1 kernel
    /// then meets at every offset. Stride 1: the layer itself.
    pub(crate) fn dilated(&self) -> Shape {
        let g = &self.geo;
        Shape {
            oh: self.oh.saturating_sub(1) * g.s + 1,
            geo: Geometry {
                ow: g.ow.saturating_sub(1) * g.s + 1,
                s: 1,
                ..g.clone()
            },
            ..self.clone()
        }
    }

    /// Padded rows and columns the taps reach.
    pub(crate) fn padded(&self) -> (usize, usize) {
        let g = &self.geo;
        ((self.oh - 1) * g.s + g.k, (g.ow - 1) * g.s + g.k)
    }
}

/// Returns the padded channels-last input, the channels-last weight and the output.
pub(crate) fn forward(x: &[f32], w: &[f32], s: &Shape) -> (Vec<f32>, Vec<f32>, FlexTensor) {
    let g = &s.geo;
    let (c, k) = (s.c, g.k);
    let (hp, wp) = s.padded();
    let (plane_in, plane_out) = (g.h * g.w, s.oh * g.ow);
    // w[c][tap] -> wt[tap][c]
    let mut wt = vec![0f32; k * k * c];
    for ch in 0..c {
        for t in 0..k * k {
            wt[t * c + ch] = w[ch * k * k + t];
        }
    }
    let mut xp = vec![0f32; s.n * hp * wp * c];
    let out = written(s.n * c * plane_out, |out| {
        xp.par_chunks_mut(hp * wp * c)
            .zip(out.par_chunks_mut(c * plane_out))
            .enumerate()
            .for_each_init(Vec::new, |acc, (img, (xp, out))| {
                let x = &x[img * c * plane_in..(img + 1) * c * plane_in];
                to_padded_nhwc(x, xp, s);
                acc.clear();
                acc.resize(plane_out * c, 0.0);
                image_forward(acc, xp, &wt, s);
                from_nhwc(acc, out, c, plane_out);
            })
    });
    let y = FlexTensor::from_data(TensorData::new(out, [s.n, s.c, s.oh, g.ow]));
    (xp, wt, y)
}

/// The input gradient (when asked for) and the weight gradient.
pub(crate) fn backward(
    dy: &[f32],
    xp: &[f32],
    wt: &[f32],
    s: &Shape,
    want_dx: bool,
) -> (Option<FlexTensor>, FlexTensor) {
    let g = &s.geo;
    let (c, k) = (s.c, g.k);
    let (hp, wp) = s.padded();
    let (plane_in, plane_out) = (g.h * g.w, s.oh * g.ow);
    let per_image = |img: usize, dx: Option<&mut [Out]>, dw: &mut [f32], buf: &mut Buffers| {
        let xp = &xp[img * hp * wp * c..(img + 1) * hp * wp * c];
        buf.dyt.clear();
        buf.dyt.resize(plane_out * c, 0.0);
        to_nhwc(
            &dy[img * c * plane_out..(img + 1) * c * plane_out],
            &mut buf.dyt,
            c,
            plane_out,
        );
        if dx.is_some() {
            buf.dxp.clear();
            buf.dxp.resize(hp * wp * c, 0.0);
        }
        let dxp = dx.is_some().then_some(&mut buf.dxp[..]);
        image_backward(&buf.dyt, xp, wt, s, dw, dxp);
        if let Some(dx) = dx {
            from_padded_nhwc(&buf.dxp, dx, s);
        }
    };
    // Each image's share of the weight gradient apart, then summed in image order.
    let dx_len = if want_dx { s.n * c * plane_in } else { 0 };
    let parts = [s.n, k * k * c, k * k * c];
    let (dx, dw_t) = with_shares(dx_len, c * plane_in, parts, Buffers::default, per_image);
    // dw_t[tap][c] -> dw[c][1][k][k]
    let mut dw = vec![0f32; c * k * k];
    for ch in 0..c {
        for t in 0..k * k {
            dw[ch * k * k + t] = dw_t[t * c + ch];
        }
    }
    let dw = FlexTensor::from_data(TensorData::new(dw, [c, 1, k, k]));
    let dx = want_dx.then(|| FlexTensor::from_data(TensorData::new(dx, [s.n, c, g.h, g.w])));
    (dx, dw)
}

crate::cpu::isa::widest!(
    fn image_forward(acc: &mut [f32], xp: &[f32], wt: &[f32], s: &Shape) = image_forward_body
);
crate::cpu::isa::widest!(
    fn image_backward(
        dyt: &[f32],
        xp: &[f32],
        wt: &[f32],
        s: &Shape,
        dw: &mut [f32],
        dxp: Option<&mut [f32]>,
    ) = image_backward_body
);

/// One image's output `acc[p][c]` from its padded channels-last input, every tap a
/// multiply-add over the channels. Compiled per instruction set with the multiply-adds
/// inlined: through `Isa::fma`, a call per pixel and tap (32 channels at 112x112), the calls
/// were a fifth of a MobileNetV2 training step.
#[inline(always)]
fn image_forward_body(acc: &mut [f32], xp: &[f32], wt: &[f32], s: &Shape) {
    match Isa::get() {
        Isa::Base => forward_taps::<false>(acc, xp, wt, s),
        _ => forward_taps::<true>(acc, xp, wt, s),
    }
}

#[inline(always)]
fn forward_taps<const FMA: bool>(acc: &mut [f32], xp: &[f32], wt: &[f32], s: &Shape) {
    let (g, c) = (&s.geo, s.c);
    let (k, wp) = (g.k, s.padded().1);
    for oy in 0..s.oh {
        for ox in 0..g.ow {
            let o = &mut acc[(oy * g.ow + ox) * c..][..c];
            for ky in 0..k {
                for kx in 0..k {
                    let (t, at) = (ky * k + kx, ((oy * g.s + ky) * wp + ox * g.s + kx) * c);
                    fma::<FMA>(o, &wt[t * c..][..c], &xp[at..at + c]);
                }
            }
        }
    }
}

/// One image's weight-gradient share `dw[tap][c]` and, when asked, its padded input gradient
/// `dxp`, from its channels-last output gradient `dyt`; compiled as [`image_forward_body`].
#[inline(always)]
fn image_backward_body(
    dyt: &[f32],
    xp: &[f32],
    wt: &[f32],
    s: &Shape,
    dw: &mut [f32],
    dxp: Option<&mut [f32]>,
) {
    match Isa::get() {
        Isa::Base => backward_taps::<false>(dyt, xp, wt, s, dw, dxp),
        _ => backward_taps::<true>(dyt, xp, wt, s, dw, dxp),
    }
}

#[inline(always)]
fn backward_taps<const FMA: bool>(
    dyt: &[f32],
    xp: &[f32],
    wt: &[f32],
    s: &Shape,
    dw: &mut [f32],
    mut dxp: Option<&mut [f32]>,
) {
    let (g, c) = (&s.geo, s.c);
    let (k, wp) = (g.k, s.padded().1);
    for oy in 0..s.oh {
        for ox in 0..g.ow {
            let d = &dyt[(oy * g.ow + ox) * c..][..c];
            for ky in 0..k {
                for kx in 0..k {
                    let (t, at) = (ky * k + kx, ((oy * g.s + ky) * wp + ox * g.s + kx) * c);
                    fma::<FMA>(&mut dw[t * c..][..c], d, &xp[at..at + c]);
                    if let Some(dxp) = dxp.as_deref_mut() {
                        fma::<FMA>(&mut dxp[at..at + c], d, &wt[t * c..][..c]);
                    }
                }
            }
        }
    }
}

/// Per-thread scratch of the backward pass (plane by plane: the spread output gradient and the
/// plane kernel's padded copy).
#[derive(Default)]
pub(crate) struct Buffers {
    pub(crate) dyt: Vec<f32>,
    pub(crate) dxp: Vec<f32>,
    /// A stride-2 layer's rows by phases ([`depthwise_s2`]).
    phases: depthwise_s2::Scratch,
}

/// One image `x[c][h][w]` into the zeroed padded channels-last buffer `xp[hp][wp][c]`.
pub(crate) fn to_padded_nhwc(x: &[f32], xp: &mut [f32], s: &Shape) {
    let g = &s.geo;
    let (hp, wp) = s.padded();
    let cols = g.w.min(wp.saturating_sub(g.pl));
    for iy in 0..g.h.min(hp.saturating_sub(g.pt)) {
        let dst = &mut xp[((iy + g.pt) * wp + g.pl) * s.c..];
        transpose(
            &x[iy * g.w..],
            g.h * g.w,
            crate::cpu::as_uninit(dst),
            s.c,
            [s.c, cols],
        );
    }
}

/// The inverse of [`to_padded_nhwc`] for a gradient: the padding's share is dropped; inputs
/// no tap reaches (the last rows or columns of some strided layers) get 0. Every element of
/// `x` (one image, `[c][h][w]`) is written.
pub(crate) fn from_padded_nhwc(xp: &[f32], x: &mut [Out], s: &Shape) {
    let g = &s.geo;
    let (hp, wp) = s.padded();
    let cols = g.w.min(wp.saturating_sub(g.pl));
    let rows = g.h.min(hp.saturating_sub(g.pt));
    for iy in 0..rows {
        let src = &xp[((iy + g.pt) * wp + g.pl) * s.c..];
        transpose(src, s.c, &mut x[iy * g.w..], g.h * g.w, [cols, s.c]);
    }
    if rows < g.h || cols < g.w {
        for plane in x.chunks_exact_mut(g.h * g.w).take(s.c) {
            for (iy, row) in plane.chunks_exact_mut(g.w).enumerate() {
                let from = if iy < rows { cols } else { 0 };
                row[from..].fill(Out::new(0.0));
            }
        }
    }
}

/// `a[c][p]` into `t[p][c]`.
pub(crate) fn to_nhwc(a: &[f32], t: &mut [f32], c: usize, plane: usize) {
    transpose(a, plane, crate::cpu::as_uninit(t), c, [c, plane]);
}

/// `t[p][c]` into `a[c][p]` (every element of `a[..c * plane]` written).
pub(crate) fn from_nhwc(t: &[f32], a: &mut [Out], c: usize, plane: usize) {
    transpose(t, c, a, plane, [plane, c]);
}

/// An element of fresh memory a kernel writes.
type Out = MaybeUninit<f32>;

/// `dst[j * dst_rs + i] = src[i * src_rs + j]` for `i < rows`, `j < cols`, in 8x8 tiles
/// (transposed in registers where the CPU has AVX2). Element by element along whole rows, each
/// write landed in another cache line of a buffer larger than the cache, and the layout
/// changes were a fifth of a MobileNetV2 training step.
pub(crate) fn transpose(
    src: &[f32],
    src_rs: usize,
    dst: &mut [Out],
    dst_rs: usize,
    [rows, cols]: [usize; 2],
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src.len() >= (rows - 1) * src_rs + cols,
        "transpose source too short"
    );
    assert!(
        dst.len() >= (cols - 1) * dst_rs + rows,
        "transpose destination too short"
    );
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr().cast::<f32>());
    #[cfg(target_arch = "x86_64")]
    if !matches!(Isa::get(), Isa::Base) {
        // SAFETY: AVX2 was detected (`Isa` is Avx2 or Avx512); the extents are asserted.
        return unsafe { transpose_avx2(sp, src_rs, dp, dst_rs, [rows, cols]) };
    }
    // SAFETY: the extents are asserted.
    unsafe { transpose_tiles(sp, src_rs, dp, dst_rs, [rows, cols], |_, _| false) };
}

/// The tiles of [`transpose`], each handed first to `whole(i0, j0)` (which transposes a full
/// 8x8 tile and returns true, or declines), else copied element by element.
///
/// # Safety
/// `src` and `dst` hold the extents [`transpose`] asserts.
#[inline(always)]
unsafe fn transpose_tiles(
    src: *const f32,
    src_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
    [rows, cols]: [usize; 2],
    mut whole: impl FnMut(usize, usize) -> bool,
) {
    const T: usize = 8;
    for i0 in (0..rows).step_by(T) {
        for j0 in (0..cols).step_by(T) {
            if i0 + T <= rows && j0 + T <= cols && whole(i0, j0) {
                continue;
            }
            for i in i0..(i0 + T).min(rows) {
                for j in j0..(j0 + T).min(cols) {
                    // SAFETY: i < rows, j < cols: inside both extents.
                    unsafe { *dst.add(j * dst_rs + i) = *src.add(i * src_rs + j) };
                }
            }
        }
    }
}

/// [`transpose`] with each full 8x8 tile transposed in eight AVX registers.
///
/// # Safety
/// The CPU has AVX2; `sp` and `dp` hold the extents [`transpose`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_avx2(
    sp: *const f32,
    src_rs: usize,
    dp: *mut f32,
    dst_rs: usize,
    shape: [usize; 2],
) {
    use std::arch::x86_64::*;
    let whole = |i0: usize, j0: usize| {
        // SAFETY: a full tile: rows i0..i0 + 8 of `src` at columns j0..j0 + 8 and rows
        // j0..j0 + 8 of `dst` at columns i0..i0 + 8, inside the asserted extents.
        unsafe {
            let r = |i: usize| _mm256_loadu_ps(sp.add((i0 + i) * src_rs + j0));
            let (t0, t1) = (
                _mm256_unpacklo_ps(r(0), r(1)),
                _mm256_unpackhi_ps(r(0), r(1)),
            );
            let (t2, t3) = (
                _mm256_unpacklo_ps(r(2), r(3)),
                _mm256_unpackhi_ps(r(2), r(3)),
            );
            let (t4, t5) = (
                _mm256_unpacklo_ps(r(4), r(5)),
                _mm256_unpackhi_ps(r(4), r(5)),
            );
            let (t6, t7) = (
                _mm256_unpacklo_ps(r(6), r(7)),
                _mm256_unpackhi_ps(r(6), r(7)),
            );
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
                _mm256_permute2f128_ps::<0x31>(s3, s7),
            ];
            for (j, v) in out.into_iter().enumerate() {
                _mm256_storeu_ps(dp.add((j0 + j) * dst_rs + i0), v);
            }
        }
        true
    };
    // SAFETY: the caller's contract.
    unsafe { transpose_tiles(sp, src_rs, dp, dst_rs, shape, whole) };
}
