//! Training ops for flex with their own backward passes: depthwise, 1x1 and other dense
//! convolutions and BatchNorm (the layers of MobileNetV2, EfficientNet and ResNet).
//!
//! Why: Burn 0.22 differentiates these generically, and on small maps that is mostly overhead.
//! A grouped convolution's weight gradient runs one convolution plus a slice and a slice-assign
//! *per channel* (960 of each in one MobileNetV2 layer); convolution input gradients go through
//! flex's transposed 3-D convolution; BatchNorm is a dozen ops with strided copies, each
//! differentiated apart. `perf` of a MobileNetV2 training step (28 px, batch 64) put ~13 % in
//! the transposed convolution and ~10 % in layout copies (docs/benchmarks.md). Here:
//! depthwise runs channels-last (every inner loop a contiguous multiply-add over channels,
//! whatever the map size), 1x1 convolutions are matrix products (`gemm`), other dense ones
//! matrix products over the unfolded image, BatchNorm is two passes each way with the closed-form gradient. Reductions are summed in a fixed order, so
//! the bits do not depend on the thread count (training stays reproducible).
//!
//! Each op is an autodiff node of Burn's own kind (`burn::backend::autodiff`'s `Backward`),
//! reached through `Tensor::try_into_primitive::<Autodiff<Flex>>`, so the rest of the graph is
//! untouched. They apply to f32 tensors on `Device::flex().autodiff()` without gradient
//! checkpointing and to layers without bias (timm's: BatchNorm follows); everything else keeps
//! Burn's ops. `--flex-kernels` without `train` turns them off, to compare.

#![allow(clippy::result_large_err)] // Err hands the input back for Burn's conv

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, GradientCheckpointingStrategy};
use burn::nn::BatchNorm;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use crate::kernels::{self, Geometry, Isa, Kernel};

type Ad = Autodiff<Flex, NoCheckpointing>;

/// `conv(x)` through the op below that handles `conv` (depthwise, 1x1, other dense); `Err(x)`
/// when none does.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let x = match depthwise(conv, x) {
        Ok(y) => return Ok(y),
        Err(x) => x,
    };
    let x = match pointwise(conv, x) {
        Ok(y) => return Ok(y),
        Err(x) => x,
    };
    dense(conv, x)
}

/// `conv(x)` for a depthwise `conv` on flex's autodiff device; `Err(x)` when it does not apply.
pub fn depthwise(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [_, _, k, _] = conv.weight.lazy_shape().dims::<4>();
    let [n, c, h, w] = x.dims();
    if !(applies(&x) && conv.bias.is_none() && kernels::is_depthwise(conv, c)) {
        return Err(x);
    }
    let Some(win) = kernels::window(conv, [h, w]) else {
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

/// True when `x` is an f32 tensor on flex's autodiff device without checkpointing, the only
/// one these ops take part in, and they are switched on.
fn applies(x: &Tensor<4>) -> bool {
    kernels::on(Kernel::Train)
        && x.dtype() == DType::F32
        && x.device() == Device::flex().autodiff()
        && x.gradient_checkpointing_strategy() == Some(GradientCheckpointingStrategy::Disabled)
}

/// `x` (checked by [`applies`]) and `conv`'s weight as autodiff flex primitives; `Err(x)` when
/// the weight is not an f32 tensor on `x`'s device.
fn operands(conv: &Conv2d, x: Tensor<4>) -> Result<(FloatTensor<Ad>, FloatTensor<Ad>), Tensor<4>> {
    let weight = conv.weight.val();
    if weight.device() != x.device() || weight.dtype() != DType::F32 {
        return Err(x);
    }
    match (
        x.try_into_primitive::<Ad>(),
        weight.try_into_primitive::<Ad>(),
    ) {
        (Ok(x), Ok(w)) => Ok((x, w)),
        _ => unreachable!("device and checkpointing strategy were checked"),
    }
}

/// Sizes of one depthwise convolution.
#[derive(Debug, Clone)]
struct Shape {
    n: usize,
    c: usize,
    oh: usize,
    geo: Geometry,
}

#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 2> for DepthwiseBackward {
    /// The padded channels-last input (the weight gradient reads it), the channels-last
    /// weight (the input gradient reads it).
    type State = (Vec<f32>, Vec<f32>, Shape);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = kernels::contiguous(grads.consume::<Flex>(&ops.node));
        let (xp, wt, shape) = ops.state;
        let (dx, dw) = backward(slice(&dy), &xp, &wt, &shape, node_x.is_some());
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, dw);
        }
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, dx);
        }
    }
}

fn node(x: FloatTensor<Ad>, w: FloatTensor<Ad>, shape: Shape) -> FloatTensor<Ad> {
    let xc = kernels::contiguous(x.primitive().clone());
    let wc = kernels::contiguous(w.primitive().clone());
    let (xp, wt, y) = forward(slice(&xc), slice(&wc), &shape);
    match DepthwiseBackward
        .prepare::<NoCheckpointing>([x.node(), w.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((xp, wt, shape), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

fn slice(t: &FlexTensor) -> &[f32] {
    &t.storage::<f32>()[..t.layout().num_elements()]
}

// Layout: the kernels work channels-last (one image's pixels in rows of `c` channels), so every
// inner loop is a contiguous multiply-add over the channels, whatever the map size (MobileNetV2
// at 28 px has 1x1 to 14x14 maps, too small for per-plane loops to vectorise).

impl Shape {
    /// Padded rows and columns the taps reach.
    fn padded(&self) -> (usize, usize) {
        let g = &self.geo;
        ((self.oh - 1) * g.s + g.k, (g.ow - 1) * g.s + g.k)
    }
}

/// Returns the padded channels-last input, the channels-last weight and the output.
fn forward(x: &[f32], w: &[f32], s: &Shape) -> (Vec<f32>, Vec<f32>, FlexTensor) {
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
    let mut out = vec![0f32; s.n * c * plane_out];
    let isa = Isa::get();
    xp.par_chunks_mut(hp * wp * c)
        .zip(out.par_chunks_mut(c * plane_out))
        .enumerate()
        .for_each_init(Vec::new, |acc, (img, (xp, out))| {
            let x = &x[img * c * plane_in..(img + 1) * c * plane_in];
            to_padded_nhwc(x, xp, s);
            acc.clear();
            acc.resize(plane_out * c, 0.0);
            for oy in 0..s.oh {
                for ox in 0..g.ow {
                    let o = &mut acc[(oy * g.ow + ox) * c..][..c];
                    for ky in 0..k {
                        for kx in 0..k {
                            let (t, at) = (ky * k + kx, ((oy * g.s + ky) * wp + ox * g.s + kx) * c);
                            isa.fma(o, &wt[t * c..][..c], &xp[at..at + c]);
                        }
                    }
                }
            }
            from_nhwc(acc, out, c, plane_out);
        });
    let y = FlexTensor::from_data(TensorData::new(out, [s.n, s.c, s.oh, g.ow]));
    (xp, wt, y)
}

/// The input gradient (when asked for) and the weight gradient.
fn backward(
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
    let isa = Isa::get();
    let mut dx = vec![0f32; if want_dx { s.n * c * plane_in } else { 0 }];
    let per_image = |img: usize, dx: Option<&mut [f32]>, dw: &mut [f32], buf: &mut Buffers| {
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
        for oy in 0..s.oh {
            for ox in 0..g.ow {
                let d = &buf.dyt[(oy * g.ow + ox) * c..][..c];
                for ky in 0..k {
                    for kx in 0..k {
                        let (t, at) = (ky * k + kx, ((oy * g.s + ky) * wp + ox * g.s + kx) * c);
                        isa.fma(&mut dw[t * c..][..c], d, &xp[at..at + c]);
                        if dx.is_some() {
                            isa.fma(&mut buf.dxp[at..at + c], d, &wt[t * c..][..c]);
                        }
                    }
                }
            }
        }
        if let Some(dx) = dx {
            from_padded_nhwc(&buf.dxp, dx, s);
        }
    };
    // Each image's share of the weight gradient apart, then summed in image order: the same
    // bits whatever the thread count or scheduling (training runs are reproducible).
    let kkc = k * k * c;
    let mut shares = vec![0f32; s.n * kkc];
    if want_dx {
        dx.par_chunks_mut(c * plane_in)
            .zip(shares.par_chunks_mut(kkc))
            .enumerate()
            .for_each_init(Buffers::default, |buf, (img, (dx, dw))| {
                per_image(img, Some(dx), dw, buf)
            });
    } else {
        shares
            .par_chunks_mut(kkc)
            .enumerate()
            .for_each_init(Buffers::default, |buf, (img, dw)| {
                per_image(img, None, dw, buf)
            });
    }
    let mut dw_t = vec![0f32; kkc];
    dw_t.par_chunks_mut(c).enumerate().for_each(|(t, row)| {
        for img in 0..s.n {
            for (a, &b) in row.iter_mut().zip(&shares[img * kkc + t * c..][..c]) {
                *a += b;
            }
        }
    });
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

/// Per-thread scratch of the backward pass.
#[derive(Default)]
struct Buffers {
    dyt: Vec<f32>,
    dxp: Vec<f32>,
}

/// One image `x[c][h][w]` into the zeroed padded channels-last buffer `xp[hp][wp][c]`.
fn to_padded_nhwc(x: &[f32], xp: &mut [f32], s: &Shape) {
    let g = &s.geo;
    let (hp, wp) = s.padded();
    for ch in 0..s.c {
        for iy in 0..g.h.min(hp.saturating_sub(g.pt)) {
            let row = &x[(ch * g.h + iy) * g.w..][..g.w];
            for (ix, &v) in row.iter().enumerate().take(wp.saturating_sub(g.pl)) {
                xp[((iy + g.pt) * wp + ix + g.pl) * s.c + ch] = v;
            }
        }
    }
}

/// The inverse of [`to_padded_nhwc`] for a gradient: the padding's share is dropped.
fn from_padded_nhwc(xp: &[f32], x: &mut [f32], s: &Shape) {
    let g = &s.geo;
    let (hp, wp) = s.padded();
    for ch in 0..s.c {
        for iy in 0..g.h.min(hp.saturating_sub(g.pt)) {
            let row = &mut x[(ch * g.h + iy) * g.w..][..g.w];
            for (ix, v) in row.iter_mut().enumerate().take(wp.saturating_sub(g.pl)) {
                *v = xp[((iy + g.pt) * wp + ix + g.pl) * s.c + ch];
            }
        }
    }
}

/// `a[c][p]` into `t[p][c]`.
fn to_nhwc(a: &[f32], t: &mut [f32], c: usize, plane: usize) {
    for ch in 0..c {
        for (p, &v) in a[ch * plane..(ch + 1) * plane].iter().enumerate() {
            t[p * c + ch] = v;
        }
    }
}

/// `t[p][c]` into `a[c][p]`.
fn from_nhwc(t: &[f32], a: &mut [f32], c: usize, plane: usize) {
    for ch in 0..c {
        for (p, v) in a[ch * plane..(ch + 1) * plane].iter_mut().enumerate() {
            *v = t[p * c + ch];
        }
    }
}

/// `conv(x)` for a 1x1, stride-1, unpadded, bias-free `conv` (MobileNetV2's and
/// EfficientNet's expansions and projections, ResNet's bottleneck ends) on flex's autodiff
/// device, as matrix products: `Y[i] = W X[i]`, `dX[i] = W^T dY[i]`, `dW = sum_i dY[i] X[i]^T`.
/// Why: Burn's backward of a convolution goes through flex's transposed 3-D convolution and a
/// batch/channel swap of both operands (strided copies); `Err(x)` when it does not apply.
pub fn pointwise(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [c_out, c_in, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    let [n, c, h, w] = x.dims();
    let unpadded = match conv.padding {
        PaddingConfig2d::Valid | PaddingConfig2d::Same => true,
        PaddingConfig2d::Explicit(t, l, b, r) => t + l + b + r == 0,
    };
    let ok = applies(&x)
        && conv.bias.is_none()
        && (kh, kw) == (1, 1)
        && conv.stride == [1, 1]
        && conv.groups == 1
        && conv.dilation == [1, 1]
        && unpadded
        && c == c_in;
    if !ok {
        return Err(x);
    }
    let dims = Pointwise {
        n,
        c_in,
        c_out,
        h,
        w,
    };
    let (x, weight) = operands(conv, x)?;
    let xc = kernels::contiguous(x.primitive().clone());
    let wc = kernels::contiguous(weight.primitive().clone());
    let mut y = vec![0f32; n * c_out * h * w];
    {
        let (xs, ws) = (slice(&xc), slice(&wc));
        y.par_chunks_mut(c_out * dims.hw())
            .enumerate()
            .for_each(|(i, y)| {
                let xi = &xs[i * c_in * dims.hw()..(i + 1) * c_in * dims.hw()];
                kernels::gemm_strided(
                    [c_out, dims.hw(), c_in],
                    y,
                    kernels::Mat::rows(ws, c_in),
                    kernels::Mat::rows(xi, dims.hw()),
                    false,
                    gemm::Parallelism::None,
                );
            });
    }
    let y = FlexTensor::from_data(TensorData::new(y, [n, c_out, h, w]));
    let out = match PointwiseBackward
        .prepare::<NoCheckpointing>([x.node(), weight.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((xc, wc, dims), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Ok(Tensor::from_primitive::<Ad>(out))
}

/// `conv(x)` for a dense (groups 1), bias-free `conv` on flex's autodiff device, other than the
/// 1x1 stride-1 case [`pointwise`] takes (ResNet's 3x3 and 7x7 layers and strided 1x1
/// shortcuts, the stems of MobileNetV2 and EfficientNet), as matrix products over the
/// unfolded image (`im2col`): `Y[i] = W col(X[i])`, `dW = dY col(X)^T` as one product over the
/// whole batch, `dX[i] = col^-1(W^T dY[i])` (the adjoint of the unfold, a scatter-add).
/// `Err(x)` when it does not apply.
pub fn dense(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [c_out, cin_g, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    let [n, c, h, w] = x.dims();
    let ok = applies(&x)
        && conv.bias.is_none()
        && conv.groups == 1
        && cin_g == c
        && conv.dilation == [1, 1];
    let Some(win) = ok.then(|| kernels::window(conv, [h, w])).flatten() else {
        return Err(x);
    };
    let d = Dense {
        n,
        c_in: c,
        c_out,
        h,
        w,
        k: [kh, kw],
        s: conv.stride,
        pad: [win.pt, win.pl],
        out: [win.oh, win.ow],
    };
    let (x, weight) = operands(conv, x)?;
    let xc = kernels::contiguous(x.primitive().clone());
    let wc = kernels::contiguous(weight.primitive().clone());
    let (kk, pix) = (d.taps(), d.pix());
    let mut y = vec![0f32; n * c_out * pix];
    {
        let (xs, ws) = (slice(&xc), slice(&wc));
        y.par_chunks_mut(c_out * pix)
            .enumerate()
            .for_each_init(Vec::new, |col, (i, y)| {
                col.clear();
                col.resize(kk * pix, 0.0);
                d.unfold(&xs[i * c * h * w..(i + 1) * c * h * w], col, pix, 0);
                kernels::gemm_strided(
                    [c_out, pix, kk],
                    y,
                    kernels::Mat::rows(ws, kk),
                    kernels::Mat::rows(col, pix),
                    false,
                    gemm::Parallelism::None,
                );
            });
    }
    let y = FlexTensor::from_data(TensorData::new(y, [n, c_out, win.oh, win.ow]));
    let out = match DenseBackward
        .prepare::<NoCheckpointing>([x.node(), weight.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((xc, wc, d), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Ok(Tensor::from_primitive::<Ad>(out))
}

/// Sizes of one dense convolution.
#[derive(Debug, Clone)]
struct Dense {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    s: [usize; 2],
    /// Top and left padding.
    pad: [usize; 2],
    out: [usize; 2],
}

impl Dense {
    /// Rows of the unfolded image: input channels times taps.
    fn taps(&self) -> usize {
        self.c_in * self.k[0] * self.k[1]
    }

    fn pix(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// Unfolds one image into `col`, whose rows are `stride` long; the image's columns start
    /// at `offset` in each row (0 for one image alone, `i * pix` in the whole batch's).
    fn unfold(&self, x: &[f32], col: &mut [f32], stride: usize, offset: usize) {
        let (pix, [kh, kw]) = (self.pix(), self.k);
        for ci in 0..self.c_in {
            let plane = &x[ci * self.h * self.w..(ci + 1) * self.h * self.w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let r = (ci * kh + ky) * kw + kx;
                    let row = &mut col[r * stride + offset..][..pix];
                    self.unfold_row(plane, row, [ky, kx]);
                }
            }
        }
    }

    fn unfold_row(&self, plane: &[f32], row: &mut [f32], tap: [usize; 2]) {
        kernels::im2col_row(
            plane,
            row,
            [self.h, self.w],
            [self.out[1], self.s[0], self.s[1]],
            tap,
            self.pad,
        );
    }

    /// The adjoint of [`Dense::unfold`] for one image: adds each row of `col` back onto the
    /// input pixels it was read from.
    fn fold(&self, col: &[f32], x: &mut [f32]) {
        let ([kh, kw], [sh, sw], [pt, pl], [oh, ow]) = (self.k, self.s, self.pad, self.out);
        let (h, w) = (self.h, self.w);
        for ci in 0..self.c_in {
            let plane = &mut x[ci * h * w..(ci + 1) * h * w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let r = (ci * kh + ky) * kw + kx;
                    let row = &col[r * oh * ow..(r + 1) * oh * ow];
                    // Output columns whose input column ox * sw + kx - pl lies inside the image.
                    let lo = pl.saturating_sub(kx).div_ceil(sw).min(ow);
                    let hi = if w + pl > kx {
                        ((w + pl - kx - 1) / sw + 1).min(ow)
                    } else {
                        0
                    }
                    .max(lo);
                    for oy in 0..oh {
                        let Some(iy) = (oy * sh + ky).checked_sub(pt).filter(|&iy| iy < h) else {
                            continue;
                        };
                        let src = &row[oy * ow + lo..oy * ow + hi];
                        let first = iy * w + lo * sw + kx - pl;
                        if sw == 1 {
                            for (o, &v) in plane[first..first + src.len()].iter_mut().zip(src) {
                                *o += v;
                            }
                        } else {
                            for (o, &v) in plane[first..].iter_mut().step_by(sw).zip(src) {
                                *o += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
struct DenseBackward;

impl Backward<Flex, 2> for DenseBackward {
    type State = (FlexTensor, FlexTensor, Dense);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = kernels::contiguous(grads.consume::<Flex>(&ops.node));
        let (x, w, d) = ops.state;
        let (dys, xs, ws) = (slice(&dy), slice(&x), slice(&w));
        let (kk, pix) = (d.taps(), d.pix());
        let (img_in, img_out) = (d.c_in * d.h * d.w, d.c_out * pix);
        let [kh, kw] = d.k;
        if let Some(node) = node_w {
            // The whole batch unfolded side by side ([taps][n * pix]) and dY as [c_out][n * pix]:
            // one product over every image and pixel, summed in a fixed order.
            let all = d.n * pix;
            let mut col = vec![0f32; kk * all];
            col.par_chunks_mut(all).enumerate().for_each(|(r, row)| {
                let (ci, tap) = (r / (kh * kw), r % (kh * kw));
                for i in 0..d.n {
                    let plane = &xs[i * img_in + ci * d.h * d.w..][..d.h * d.w];
                    d.unfold_row(
                        plane,
                        &mut row[i * pix..(i + 1) * pix],
                        [tap / kw, tap % kw],
                    );
                }
            });
            let mut dyt = vec![0f32; d.c_out * all];
            dyt.par_chunks_mut(all).enumerate().for_each(|(o, row)| {
                for i in 0..d.n {
                    row[i * pix..(i + 1) * pix]
                        .copy_from_slice(&dys[i * img_out + o * pix..][..pix]);
                }
            });
            let mut dw = vec![0f32; d.c_out * kk];
            kernels::gemm_strided(
                [d.c_out, kk, all],
                &mut dw,
                kernels::Mat::rows(&dyt, all),
                kernels::Mat::cols(&col, all),
                false,
                gemm::Parallelism::Rayon(0),
            );
            let dw = FlexTensor::from_data(TensorData::new(dw, [d.c_out, d.c_in, kh, kw]));
            grads.register::<Flex>(node.id, dw);
        }
        if let Some(node) = node_x {
            let mut dx = vec![0f32; d.n * img_in];
            dx.par_chunks_mut(img_in)
                .enumerate()
                .for_each_init(Vec::new, |col, (i, dx)| {
                    col.clear();
                    col.resize(kk * pix, 0.0);
                    kernels::gemm_strided(
                        [kk, pix, d.c_out],
                        col,
                        kernels::Mat::cols(ws, kk),
                        kernels::Mat::rows(&dys[i * img_out..(i + 1) * img_out], pix),
                        false,
                        gemm::Parallelism::None,
                    );
                    d.fold(col, dx);
                });
            let dx = FlexTensor::from_data(TensorData::new(dx, [d.n, d.c_in, d.h, d.w]));
            grads.register::<Flex>(node.id, dx);
        }
    }
}

#[derive(Debug, Clone)]
struct Pointwise {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
}

impl Pointwise {
    fn hw(&self) -> usize {
        self.h * self.w
    }
}

#[derive(Debug)]
struct PointwiseBackward;

impl Backward<Flex, 2> for PointwiseBackward {
    type State = (FlexTensor, FlexTensor, Pointwise);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = kernels::contiguous(grads.consume::<Flex>(&ops.node));
        let (x, w, d) = ops.state;
        let (dys, xs, ws) = (slice(&dy), slice(&x), slice(&w));
        let (img_in, img_out) = (d.c_in * d.hw(), d.c_out * d.hw());
        if let Some(node) = node_w {
            // dW += dY[i] X[i]^T in image order (the same bits whatever the thread count).
            let mut dw = vec![0f32; d.c_out * d.c_in];
            for i in 0..d.n {
                kernels::gemm_strided(
                    [d.c_out, d.c_in, d.hw()],
                    &mut dw,
                    kernels::Mat::rows(&dys[i * img_out..(i + 1) * img_out], d.hw()),
                    kernels::Mat::cols(&xs[i * img_in..(i + 1) * img_in], d.hw()),
                    i > 0,
                    gemm::Parallelism::Rayon(0),
                );
            }
            let dw = FlexTensor::from_data(TensorData::new(dw, [d.c_out, d.c_in, 1, 1]));
            grads.register::<Flex>(node.id, dw);
        }
        if let Some(node) = node_x {
            let mut dx = vec![0f32; d.n * img_in];
            dx.par_chunks_mut(img_in).enumerate().for_each(|(i, dx)| {
                kernels::gemm_strided(
                    [d.c_in, d.hw(), d.c_out],
                    dx,
                    kernels::Mat::cols(ws, d.c_in),
                    kernels::Mat::rows(&dys[i * img_out..(i + 1) * img_out], d.hw()),
                    false,
                    gemm::Parallelism::None,
                );
            });
            let dx = FlexTensor::from_data(TensorData::new(dx, [d.n, d.c_in, d.h, d.w]));
            grads.register::<Flex>(node.id, dx);
        }
    }
}

/// Training-mode BatchNorm on flex's autodiff device: the output, and the batch mean and
/// (population) variance for the running statistics; `Err(x)` when it does not apply.
/// Why: Burn composes it from a dozen tensor ops (means over swapped dimensions, strided copies,
/// broadcasts), each differentiated apart; here it is two passes forward and two backward with
/// the closed-form gradient `dx = gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat))`.
pub fn batch_norm(
    bn: &BatchNorm,
    x: Tensor<4>,
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
    let (Ok(x), Ok(gamma), Ok(beta)) = (
        x.try_into_primitive::<Ad>(),
        gamma.try_into_primitive::<Ad>(),
        beta.try_into_primitive::<Ad>(),
    ) else {
        unreachable!("device and checkpointing strategy were checked")
    };
    let xc = kernels::contiguous(x.primitive().clone());
    let g = slice(&kernels::contiguous(gamma.primitive().clone())).to_vec();
    let b = slice(&kernels::contiguous(beta.primitive().clone())).to_vec();
    let xs = slice(&xc);
    // Per channel: mean and variance in f64 (two passes), then y = x * scale + shift.
    let stats: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(|i| &xs[(i * c + ch) * d.hw()..][..d.hw()]);
            let count = (n * d.hw()) as f64;
            let mean = planes().map(|p| sum8(p, p, |v, _| v) as f64).sum::<f64>() / count;
            let m = mean as f32;
            let var = planes()
                .map(|p| sum8(p, p, |v, _| (v - m) * (v - m)) as f64)
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .collect();
    let invstd: Vec<f32> = stats
        .iter()
        .map(|&(_, v)| (1.0 / (v + d.eps).sqrt()) as f32)
        .collect();
    let mean: Vec<f32> = stats.iter().map(|&(m, _)| m as f32).collect();
    let var: Vec<f32> = stats.iter().map(|&(_, v)| v as f32).collect();
    let mut y = vec![0f32; xs.len()];
    y.par_chunks_mut(d.hw()).enumerate().for_each(|(p, y)| {
        let ch = p % c;
        let scale = g[ch] * invstd[ch];
        let shift = b[ch] - mean[ch] * scale;
        for (y, &v) in y.iter_mut().zip(&xs[p * d.hw()..(p + 1) * d.hw()]) {
            *y = v * scale + shift;
        }
    });
    let y = FlexTensor::from_data(TensorData::new(y, [n, c, h, w]));
    let state = NormState {
        x: xc.clone(),
        mean: mean.clone(),
        invstd,
        gamma: g,
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
fn sum8(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
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

#[derive(Debug, Clone)]
struct Norm {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    eps: f64,
}

impl Norm {
    fn hw(&self) -> usize {
        self.h * self.w
    }
}

#[derive(Debug, Clone)]
struct NormState {
    x: FlexTensor,
    mean: Vec<f32>,
    invstd: Vec<f32>,
    gamma: Vec<f32>,
    d: Norm,
}

#[derive(Debug)]
struct NormBackward;

impl Backward<Flex, 3> for NormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let dy = kernels::contiguous(grads.consume::<Flex>(&ops.node));
        let st = ops.state;
        let d = &st.d;
        let (dys, xs) = (slice(&dy), slice(&st.x));
        // Per channel: sum(dy) and sum(dy * xhat), in f64.
        let sums: Vec<(f64, f64)> = (0..d.c)
            .into_par_iter()
            .map(|ch| {
                let (m, s) = (st.mean[ch], st.invstd[ch]);
                (0..d.n).fold((0.0, 0.0), |(a, b), i| {
                    let at = (i * d.c + ch) * d.hw();
                    let (dy, x) = (&dys[at..at + d.hw()], &xs[at..at + d.hw()]);
                    let pa = sum8(dy, dy, |g, _| g) as f64;
                    let pb = sum8(dy, x, |g, v| g * (v - m)) as f64 * s as f64;
                    (a + pa, b + pb)
                })
            })
            .collect();
        if let Some(node) = node_x {
            let count = (d.n * d.hw()) as f32;
            let mut dx = vec![0f32; xs.len()];
            dx.par_chunks_mut(d.hw()).enumerate().for_each(|(p, dx)| {
                let ch = p % d.c;
                let (m, s) = (st.mean[ch], st.invstd[ch]);
                let k = st.gamma[ch] * s;
                let mdy = sums[ch].0 as f32 / count;
                let mdyx = sums[ch].1 as f32 / count;
                let at = p * d.hw();
                for ((o, &g), &v) in dx
                    .iter_mut()
                    .zip(&dys[at..at + d.hw()])
                    .zip(&xs[at..at + d.hw()])
                {
                    *o = k * (g - mdy - (v - m) * s * mdyx);
                }
            });
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    fn max_rel_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    type ConvOp = fn(&Conv2d, Tensor<4>) -> Result<Tensor<4>, Tensor<4>>;

    /// `op`'s output, input gradient and weight gradient on a random input of `shape` equal
    /// Burn's conv's within 1e-5 of the largest value.
    fn assert_matches_burn(op: ConvOp, conv: &Conv2d, shape: [usize; 4], what: &str) {
        let dev = conv.weight.val().device();
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let ours = op(conv, x.clone()).expect("kernel applies");
        let burn = conv.forward(x.clone());
        assert_eq!(ours.dims(), burn.dims(), "{what}");
        let d = max_rel_diff(ours.clone().inner(), burn.clone().inner());
        assert!(d < 1e-5, "output {what}: {d}");
        // A weighted sum, so every output pixel's gradient differs.
        let wts = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &dev);
        let g_ours = (ours * wts.clone()).sum().backward();
        let g_burn = (burn * wts).sum().backward();
        let dx = max_rel_diff(
            x.grad(&g_ours).expect("dx").reshape(shape),
            x.grad(&g_burn).expect("dx").reshape(shape),
        );
        assert!(dx < 1e-5, "input grad {what}: {dx}");
        let dw = max_rel_diff(
            conv.weight.val().grad(&g_ours).expect("dw"),
            conv.weight.val().grad(&g_burn).expect("dw"),
        );
        assert!(dw < 1e-5, "weight grad {what}: {dw}");
    }

    /// Output, input gradient and weight gradient equal Burn's conv's (its generic grouped
    /// backward), for the strides, kernels and paddings timm's models use, including TF's
    /// asymmetric SAME and maps smaller than the kernel.
    #[test]
    fn depthwise_training_matches_burns_conv() {
        let dev = Device::flex().autodiff();
        let cases = [
            // (channels, k, stride, padding, h, w)
            (8, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 7),
            (8, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 8),
            (6, 5, 1, PaddingConfig2d::Explicit(2, 2, 2, 2), 7, 7),
            (6, 5, 2, PaddingConfig2d::Explicit(2, 2, 2, 2), 11, 10),
            (5, 3, 2, PaddingConfig2d::Same, 8, 9),
            (5, 5, 2, PaddingConfig2d::Same, 7, 6),
            (4, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 1, 1),
            (4, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 2, 2),
            (4, 5, 1, PaddingConfig2d::Explicit(2, 2, 2, 2), 2, 3),
            (4, 3, 2, PaddingConfig2d::Valid, 8, 9),
        ];
        for (c, k, s, pad, h, w) in cases {
            let conv = Conv2dConfig::new([c, c], [k, k])
                .with_stride([s, s])
                .with_groups(c)
                .with_padding(pad.clone())
                .with_bias(false)
                .init(&dev);
            let what = format!("c {c} k {k} s {s} {pad:?} {h}x{w}");
            assert_matches_burn(depthwise, &conv, [3, c, h, w], &what);
        }
    }

    /// The 1x1 op's output and gradients equal Burn's conv's, on maps down to 1x1.
    #[test]
    fn pointwise_training_matches_burns_conv() {
        let dev = Device::flex().autodiff();
        for (c_in, c_out, h, w, pad) in [
            (8, 24, 5, 7, PaddingConfig2d::Valid),
            (24, 8, 1, 1, PaddingConfig2d::Same),
            (16, 16, 3, 2, PaddingConfig2d::Explicit(0, 0, 0, 0)),
        ] {
            let conv = Conv2dConfig::new([c_in, c_out], [1, 1])
                .with_padding(pad)
                .with_bias(false)
                .init(&dev);
            assert_matches_burn(
                pointwise,
                &conv,
                [3, c_in, h, w],
                &format!("{c_in}->{c_out} {h}x{w}"),
            );
        }
    }

    /// Training BatchNorm: output, batch statistics and the gradients of x, gamma and beta
    /// equal Burn's `batch_norm_train`'s (differentiated op by op), down to 1x1 maps.
    #[test]
    fn batch_norm_training_matches_burn() {
        use burn::nn::BatchNormConfig;
        let dev = Device::flex().autodiff();
        for (n, c, h, w) in [(4, 6, 5, 3), (8, 5, 1, 1), (2, 3, 7, 7)] {
            let bn = BatchNormConfig::new(c).with_epsilon(1e-3).init(&dev);
            // Non-trivial gamma and beta, and an offset input (a mean far from zero).
            let leaf = |d| burn::module::Param::from_tensor(Tensor::<1>::random([c], d, &dev));
            let bn = BatchNorm {
                gamma: leaf(Distribution::Uniform(0.5, 1.5)),
                beta: leaf(Distribution::Normal(0.0, 1.0)),
                ..bn
            };
            let x = (Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 2.0), &dev) + 3.0)
                .require_grad();
            let (ours, mean, var) = batch_norm(&bn, x.clone()).expect("kernel applies");
            let r = burn::tensor::module::batch_norm_train(
                x.clone(),
                bn.gamma.val(),
                bn.beta.val(),
                bn.epsilon,
            );
            let what = format!("{n}x{c}x{h}x{w}");
            let close = |a: Tensor<1>, b: Tensor<1>| {
                max_rel_diff(
                    a.reshape([1, 1, 1, c]).inner(),
                    b.reshape([1, 1, 1, c]).inner(),
                )
            };
            assert!(close(mean, r.mean.clone()) < 1e-5, "mean {what}");
            assert!(close(var, r.variance.clone()) < 1e-5, "variance {what}");
            let d = max_rel_diff(ours.clone().inner(), r.output.clone().inner());
            assert!(d < 1e-5, "output {what}: {d}");
            let wts = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &dev);
            let g_ours = (ours * wts.clone()).sum().backward();
            let g_burn = (r.output * wts).sum().backward();
            let dx = max_rel_diff(
                x.grad(&g_ours).expect("dx").reshape([n, c, h, w]),
                x.grad(&g_burn).expect("dx").reshape([n, c, h, w]),
            );
            assert!(dx < 1e-4, "input grad {what}: {dx}");
            for (name, p) in [("gamma", bn.gamma.val()), ("beta", bn.beta.val())] {
                let a = p.grad(&g_ours).expect("grad").reshape([1, 1, 1, c]);
                let b = p.grad(&g_burn).expect("grad").reshape([1, 1, 1, c]);
                let e = max_rel_diff(a, b);
                assert!(e < 1e-5, "{name} grad {what}: {e}");
            }
        }
    }

    /// Dense convolutions (3x3, ResNet's 7x7 stem, strided 1x1 shortcut, TF's SAME stem, one
    /// input channel): output and gradients equal Burn's.
    #[test]
    fn dense_training_matches_burns_conv() {
        let dev = Device::flex().autodiff();
        for (c_in, c_out, k, s, pad, h, w) in [
            (4, 6, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 7, 6),
            (5, 8, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 8),
            (3, 4, 7, 2, PaddingConfig2d::Explicit(3, 3, 3, 3), 12, 11),
            (6, 10, 1, 2, PaddingConfig2d::Valid, 7, 8),
            (3, 5, 3, 2, PaddingConfig2d::Same, 10, 9),
            (1, 8, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 2, 2),
            (64, 64, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 16, 16),
        ] {
            let conv = Conv2dConfig::new([c_in, c_out], [k, k])
                .with_stride([s, s])
                .with_padding(pad.clone())
                .with_bias(false)
                .init(&dev);
            let what = format!("{c_in}->{c_out} k {k} s {s} {pad:?} {h}x{w}");
            assert_matches_burn(dense, &conv, [8, c_in, h, w], &what);
        }
    }

    /// A ResNet basic block (conv, BN, ReLU, conv, BN, + shortcut, ReLU) built from these ops
    /// has the gradients of the same block built from Burn's.
    #[test]
    fn basic_block_matches_burn() {
        use burn::nn::BatchNormConfig;
        let dev = Device::flex().autodiff();
        let c = 8;
        let conv = || {
            Conv2dConfig::new([c, c], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(&dev)
        };
        let (c1, c2) = (conv(), conv());
        let (b1, b2) = (
            BatchNormConfig::new(c).init(&dev),
            BatchNormConfig::new(c).init(&dev),
        );
        let x0 =
            Tensor::<4>::random([4, c, 6, 6], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let block = |ours: bool| {
            let x = burn::tensor::activation::relu(x0.clone() * 2.0);
            let cv = |conv: &Conv2d, x: Tensor<4>| {
                if ours {
                    dense(conv, x).expect("applies")
                } else {
                    conv.forward(x)
                }
            };
            let bn = |b: &BatchNorm, x: Tensor<4>| {
                if ours {
                    batch_norm(b, x).expect("applies").0
                } else {
                    burn::tensor::module::batch_norm_train(
                        x,
                        b.gamma.val(),
                        b.beta.val(),
                        b.epsilon,
                    )
                    .output
                }
            };
            let y = burn::tensor::activation::relu(bn(&b1, cv(&c1, x.clone())));
            let y = burn::tensor::activation::relu(bn(&b2, cv(&c2, y)) + x);
            let wts = Tensor::<4>::ones([4, c, 6, 6], &dev);
            let g = (y * wts).sum().backward();
            (
                x0.grad(&g).expect("dx").into_data(),
                c1.weight.val().grad(&g).expect("w1").into_data(),
                b1.beta.val().grad(&g).expect("b1").into_data(),
            )
        };
        let (ours, burn) = (block(true), block(false));
        let rel = |a: &burn::tensor::TensorData, b: &burn::tensor::TensorData| {
            let (a, b) = (
                a.try_to_vec::<f32>().expect("f32"),
                b.try_to_vec::<f32>().expect("f32"),
            );
            let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            a.iter()
                .zip(&b)
                .fold(0f32, |d, (p, q)| d.max((p - q).abs()))
                / m
        };
        let r = [
            rel(&ours.0, &burn.0),
            rel(&ours.1, &burn.1),
            rel(&ours.2, &burn.2),
        ];
        assert!(
            r.iter().all(|&r| r < 1e-5),
            "dx, conv1 dw, bn1 dbeta: {r:?}"
        );
    }

    /// The gradients are the same bits with 1 and 3 threads (the weight gradient is summed in
    /// image order), so training stays reproducible.
    #[test]
    fn gradients_do_not_depend_on_threads() {
        let dev = Device::flex().autodiff();
        let conv = Conv2dConfig::new([16, 16], [3, 3])
            .with_stride([2, 2])
            .with_groups(16)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&dev);
        let x = Tensor::<4>::random([9, 16, 13, 13], Distribution::Normal(0.0, 1.0), &dev);
        let grads = |op: ConvOp, conv: &Conv2d, threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                let x = x.clone().require_grad();
                let y = op(conv, x.clone()).expect("kernel applies");
                let g = (y.clone() * y).sum().backward();
                let dx = x.grad(&g).expect("dx").into_data();
                let dw = conv.weight.val().grad(&g).expect("dw").into_data();
                (dx, dw)
            })
        };
        let pw = Conv2dConfig::new([16, 40], [1, 1])
            .with_bias(false)
            .init(&dev);
        let dn = Conv2dConfig::new([16, 24], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&dev);
        for (op, conv) in [(depthwise as ConvOp, &conv), (pointwise, &pw), (dense, &dn)] {
            let (dx1, dw1) = grads(op, conv, 1);
            let (dx3, dw3) = grads(op, conv, 3);
            assert_eq!(dx1, dx3);
            assert_eq!(dw1, dw3);
        }
    }

    /// Layers the op does not handle go back untouched: with bias, dense, outside autodiff.
    #[test]
    fn other_convolutions_are_handed_back() {
        let ad = Device::flex().autodiff();
        let x = Tensor::<4>::ones([1, 4, 5, 5], &ad);
        let biased = Conv2dConfig::new([4, 4], [3, 3]).with_groups(4).init(&ad);
        assert!(depthwise(&biased, x.clone()).is_err());
        let dense = Conv2dConfig::new([4, 4], [3, 3]).with_bias(false).init(&ad);
        assert!(depthwise(&dense, x).is_err());
        let plain = Device::flex();
        let conv = Conv2dConfig::new([4, 4], [3, 3])
            .with_groups(4)
            .with_bias(false)
            .init(&plain);
        assert!(depthwise(&conv, Tensor::<4>::ones([1, 4, 5, 5], &plain)).is_err());
    }
}
