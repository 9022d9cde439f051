//! 1x1 and other dense convolutions with their own backward, as matrix products (in f32, or
//! with bf16 operands under `--dtype bf16`: [`half`]).

use super::*;
#[cfg(target_arch = "x86_64")]
use crate::cpu::bf16::taps::Taps;
use crate::cpu::bf16::{self, Bf16Kernel, Bias, PackedA, PackedB};
use crate::cpu::isa::Epilogue;

/// `conv(x)` for a 1x1, stride-1, unpadded, bias-free `conv` (MobileNetV2's and
/// EfficientNet's expansions and projections, ResNet's bottleneck ends) on flex's autodiff
/// device, as matrix products: `Y[i] = W X[i]`, `dX[i] = W^T dY[i]`, `dW = sum_i dY[i] X[i]^T`.
/// Why: Burn's backward of a convolution goes through flex's transposed 3-D convolution and a
/// batch/channel swap of both operands (strided copies); `Err(x)` when it does not apply.
/// The products run in the process's precision (`--dtype`).
pub fn pointwise(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [c_out, c_in, ..] = conv.weight.lazy_shape().dims::<4>();
    let [.., h, w] = x.dims();
    let half = crate::precision::bf16_kernel().filter(|_| half_pays(c_in, c_out, h * w));
    pointwise_in(conv, x, half)
}

/// Whether a 1x1 layer's training products (forward, input and weight gradient) run faster
/// with bf16 operands than in f32: not with fewer than 48 inputs or 24 outputs, nor on one
/// pixel (squeeze-and-excitation). Why: measured per layer, forward and both gradients at
/// batch 8, alternated call by call (`DTYPE=1 cargo run --release -p committee-ops --example
/// train_conv_rate`, AMD EPYC Zen 4, docs/benchmarks.md): MobileNetV2's 32 -> 16, 16 -> 96,
/// 24 -> 144 and 32 -> 192 layers ran at 0.54-0.92x of f32 in bf16 (converting and packing
/// each value costs what its few products save), 96 -> 24 at 1.03x, every layer with 64 or
/// more inputs at 1.05-1.76x. `COMMITTEE_BF16_TRAIN_EVERYWHERE=1` sends every layer to bf16
/// (and the small stems [`dense`] keeps in f32).
fn half_pays(c_in: usize, c_out: usize, pix: usize) -> bool {
    EVERYWHERE.on() || (c_in >= 48 && c_out >= 24 && pix >= 2)
}

static EVERYWHERE: crate::kernel::Switch =
    crate::kernel::Switch::new(false, Some("COMMITTEE_BF16_TRAIN_EVERYWHERE"));

/// Sends every 1x1 training layer to bf16 under `--dtype bf16` (over
/// `COMMITTEE_BF16_TRAIN_EVERYWHERE`), to time [`half_pays`]'s choice in one process
/// (`examples/ab_train.rs` in committee-train).
pub fn set_bf16_everywhere(on: bool) {
    EVERYWHERE.set(on)
}

/// [`pointwise`] with its products in f32 (`None`) or with bf16 operands on `half`.
pub(crate) fn pointwise_in(
    conv: &Conv2d,
    x: Tensor<4>,
    half: Option<Bf16Kernel>,
) -> Result<Tensor<4>, Tensor<4>> {
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
        half,
    };
    let (x, weight) = operands(conv, x)?;
    let xc = contiguous(x.primitive().clone());
    let wc = contiguous(weight.primitive().clone());
    let (xs, ws) = (slice(&xc), slice(&wc));
    let y = written(n * c_out * h * w, |y| {
        if let Some(kern) = half {
            // The weight packed once per step, each image's input per product.
            let wa = PackedA::pack(ws, c_out, c_in);
            y.par_chunks_mut(c_out * dims.hw())
                .enumerate()
                .for_each(|(i, y)| {
                    let xi = &xs[i * c_in * dims.hw()..(i + 1) * c_in * dims.hw()];
                    half::product_into(kern, &wa, xi, [c_in, dims.hw()], y);
                });
        } else {
            y.par_chunks_mut(c_out * dims.hw())
                .enumerate()
                .for_each(|(i, y)| {
                    let xi = &xs[i * c_in * dims.hw()..(i + 1) * c_in * dims.hw()];
                    gemm_into(
                        [c_out, dims.hw(), c_in],
                        y,
                        Mat::rows(ws, c_in),
                        Mat::rows(xi, dims.hw()),
                        gemm::Parallelism::None,
                    );
                });
        }
    });
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
/// `Err(x)` when it does not apply. The products run in the process's precision (`--dtype`).
pub fn dense(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [_, c_in, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    // A stem (a few input channels) with a kernel under 5x5 keeps f32 products: MobileNetV2's
    // and EfficientNet-B0's 3x3 stride-2 stem over 3 channels ran at 0.61-0.77x of f32 in bf16
    // (forward and both gradients, batch 8, `DTYPE=1 ... --example train_conv_rate`), ResNet's
    // 7x7 one at 1.35-1.43x.
    let stem = c_in <= 8 && kh * kw < 25;
    let half = crate::precision::bf16_kernel().filter(|_| EVERYWHERE.on() || !stem);
    dense_in(conv, x, half)
}

/// [`dense`] with its products in f32 (`None`) or with bf16 operands on `half`.
pub(crate) fn dense_in(
    conv: &Conv2d,
    x: Tensor<4>,
    half: Option<Bf16Kernel>,
) -> Result<Tensor<4>, Tensor<4>> {
    let [c_out, cin_g, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    let [n, c, h, w] = x.dims();
    let ok = applies(&x)
        && conv.bias.is_none()
        && conv.groups == 1
        && cin_g == c
        && conv.dilation == [1, 1];
    let Some(win) = ok.then(|| window(conv, [h, w])).flatten() else {
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
        pad_end: [win.pb, win.pr],
        out: [win.oh, win.ow],
        half,
    };
    let (x, weight) = operands(conv, x)?;
    let xc = contiguous(x.primitive().clone());
    let wc = contiguous(weight.primitive().clone());
    let (kk, pix) = (d.taps(), d.pix());
    let (xs, ws) = (slice(&xc), slice(&wc));
    let len = n * c_out * pix;
    #[cfg(target_arch = "x86_64")]
    let grids = d.tap_grids();
    #[cfg(not(target_arch = "x86_64"))]
    let grids: Option<()> = None;
    #[cfg(target_arch = "x86_64")]
    let direct = d.direct();
    let y = match (grids, half) {
        // Stride 1 on a small map: a direct convolution on channel blocks.
        #[cfg(target_arch = "x86_64")]
        _ if direct.is_some() => match (direct, half) {
            (Some(direct), None) => super::direct::conv(&direct, xs, ws, false),
            (Some(direct), Some(_)) => super::direct::conv_bf16(&direct, xs, ws, false),
            (None, _) => unreachable!("matched on Some"),
        },
        // Stride 1 on a tap kernel: the images read at the taps' offsets, as inference runs
        // them, every output written once.
        #[cfg(target_arch = "x86_64")]
        (Some((products, fwd, _)), _) => tap_conv(products, ws, [c_out, c], xs, n, &fwd),
        (_, Some(kern)) => written(len, |y| {
            // The weight packed once per step; each image unfolded straight into its packed
            // form.
            let wa = PackedA::pack(ws, c_out, kk);
            y.par_chunks_mut(c_out * pix)
                .enumerate()
                .for_each(|(i, y)| {
                    let img = &xs[i * c * h * w..(i + 1) * c * h * w];
                    let b = PackedB::pack_rows(kk, pix, |r, row| d.unfold_tap(img, r, row));
                    bf16::gemm_into(kern, &wa, &b, y, Bias::None, Epilogue::None);
                });
        }),
        (_, None) => d.forward_f32(xs, ws),
    };
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
pub(crate) struct Dense {
    pub(crate) n: usize,
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) k: [usize; 2],
    pub(crate) s: [usize; 2],
    /// Top and left padding.
    pub(crate) pad: [usize; 2],
    /// Bottom and right padding.
    pub(crate) pad_end: [usize; 2],
    pub(crate) out: [usize; 2],
    /// The products' bf16 kernel (`None`: f32).
    pub(crate) half: Option<Bf16Kernel>,
}

impl Dense {
    /// Rows of the unfolded image: input channels times taps.
    pub(crate) fn taps(&self) -> usize {
        self.c_in * self.k[0] * self.k[1]
    }

    pub(crate) fn pix(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// A stride-1 layer's tap grids where its products run on a tap kernel (bf16 on AMX or
    /// AVX512-BF16, `Some`; f32 on AVX-512, `None`; `COMMITTEE_TRAIN_TAPS=0` unfolds):
    /// the forward's over the image, and the input gradient's over the output gradient, a
    /// stride-1 convolution too, with the kernel flipped and transposed
    /// ([`flipped_weights`]) and `k - 1 - pad` padding on each side (a padding of the
    /// kernel's size or more: `None`), on maps of [`TAPS_MIN_PIX`] outputs or more. Why:
    /// unfolded, each input value was copied (and converted) once per tap, and each input
    /// gradient summed from a 9x larger product (`fold`).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn tap_grids(&self) -> Option<(Option<Bf16Kernel>, Taps, Taps)> {
        let products = match self.half {
            Some(Bf16Kernel::Emulated) => return None,
            Some(k) => Some(k),
            None if crate::cpu::conv_taps::available() => None,
            None => return None,
        };
        let ([kh, kw], [pt, pl], [pb, pr]) = (self.k, self.pad, self.pad_end);
        // No channels: nothing for the kernels to write (the unfolded path zeroes).
        let small = self.pix() < TAPS_MIN_PIX || self.c_in == 0 || self.c_out == 0;
        if self.s != [1, 1] || small || !TRAIN_TAPS.on() || pt.max(pb) >= kh || pl.max(pr) >= kw {
            return None;
        }
        let fwd = Taps::new(self.c_in, [self.h, self.w], self.k, [pt, pb, pl, pr]);
        let back_pads = [kh - 1 - pt, kh - 1 - pb, kw - 1 - pl, kw - 1 - pr];
        let back = Taps::new(self.c_out, self.out, self.k, back_pads);
        let fits = [fwd.oh, fwd.ow] == self.out && [back.oh, back.ow] == [self.h, self.w];
        fits.then_some((products, fwd, back))
    }

    /// The layer's phase grid for its weight gradient as dot products ([`super::wgrad`]: f32
    /// on AVX-512 or bf16 on AVX512-BF16, maps of 28x28 outputs or more, any stride and
    /// padding; `COMMITTEE_WGRAD_DOTS`).
    #[cfg(target_arch = "x86_64")]
    fn dot_grid(&self) -> Option<super::wgrad::Grid> {
        if !super::wgrad::applies(self.half, self.pix()) {
            return None;
        }
        let ([pt, pl], [pb, pr]) = (self.pad, self.pad_end);
        let grid = super::wgrad::Grid::new(
            self.c_in,
            [self.h, self.w],
            self.k,
            self.s,
            [pt, pb, pl, pr],
        )?;
        (grid.out() == self.out).then_some(grid)
    }

    /// The layer as a direct convolution ([`super::direct`]: f32 on AVX-512 or bf16 on
    /// AVX512-BF16, stride 1, maps under [`DIRECT_MAX_PIX`] outputs, where its kernel takes
    /// them).
    #[cfg(target_arch = "x86_64")]
    fn direct(&self) -> Option<super::direct::Direct> {
        let precision = matches!(self.half, None | Some(Bf16Kernel::Avx512));
        if self.s != [1, 1] || !precision || self.pix() >= DIRECT_MAX_PIX {
            return None;
        }
        let ([pt, pl], [pb, pr]) = (self.pad, self.pad_end);
        let d = super::direct::Direct {
            n: self.n,
            c_in: self.c_in,
            c_out: self.c_out,
            h: self.h,
            w: self.w,
            k: self.k,
            pad: [pt, pb, pl, pr],
        };
        (d.tile().is_some() && d.out() == Some(self.out)).then_some(d)
    }

    /// The input gradient of a layer [`Dense::direct`] takes, as the direct convolution of
    /// the output gradient with the kernel turned by 180 degrees (its channels swapped; the
    /// direct kernel's weight blocking does both), padded `k - 1 - pad` on each side.
    #[cfg(target_arch = "x86_64")]
    fn direct_back(&self) -> Option<super::direct::Direct> {
        self.direct()?;
        let ([kh, kw], [pt, pl], [pb, pr]) = (self.k, self.pad, self.pad_end);
        let d = super::direct::Direct {
            n: self.n,
            c_in: self.c_out,
            c_out: self.c_in,
            h: self.out[0],
            w: self.out[1],
            k: self.k,
            pad: [kh - 1 - pt, kh - 1 - pb, kw - 1 - pl, kw - 1 - pr],
        };
        (d.tile().is_some() && d.out() == Some([self.h, self.w])).then_some(d)
    }

    /// The forward with f32 products: each image unfolded, then one `gemm` product per image.
    fn forward_f32(&self, xs: &[f32], ws: &[f32]) -> Vec<f32> {
        let (kk, pix, img) = (self.taps(), self.pix(), self.c_in * self.h * self.w);
        written(self.n * self.c_out * pix, |y| {
            y.par_chunks_mut(self.c_out * pix)
                .enumerate()
                .for_each_init(Vec::new, |col, (i, y)| {
                    // The unfold writes every element (padding included): no zeroing per image.
                    col.resize(kk * pix, 0.0);
                    self.unfold(&xs[i * img..(i + 1) * img], col, pix, 0);
                    gemm_into(
                        [self.c_out, pix, kk],
                        y,
                        Mat::rows(ws, kk),
                        Mat::rows(col, pix),
                        gemm::Parallelism::None,
                    );
                });
        })
    }

    /// Unfolds one image into `col`, whose rows are `stride` long; the image's columns start
    /// at `offset` in each row (0 for one image alone, `i * pix` in the whole batch's).
    pub(crate) fn unfold(&self, x: &[f32], col: &mut [f32], stride: usize, offset: usize) {
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

    /// Row `r` (input channel `r / taps`, tap `r % taps`) of one image's unfold.
    pub(crate) fn unfold_tap(&self, img: &[f32], r: usize, row: &mut [f32]) {
        let [kh, kw] = self.k;
        let (ci, tap) = (r / (kh * kw), r % (kh * kw));
        let plane = &img[ci * self.h * self.w..][..self.h * self.w];
        self.unfold_row(plane, row, [tap / kw, tap % kw]);
    }

    pub(crate) fn unfold_row(&self, plane: &[f32], row: &mut [f32], tap: [usize; 2]) {
        im2col_row(
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
    pub(crate) fn fold(&self, col: &[f32], x: &mut [f32]) {
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

/// The weight `[c_out, c_in, kh, kw]` as the input gradient's `[c_in, c_out, kh, kw]`, each
/// kernel turned by 180 degrees: `dX = conv(dY, flipped)` at stride 1 (see
/// [`Dense::tap_grids`]).
#[cfg(target_arch = "x86_64")]
fn flipped_weights(w: &[f32], [c_out, c_in, taps]: [usize; 3]) -> Vec<f32> {
    let mut f = vec![0f32; c_in * c_out * taps];
    for (co, kernels) in w.chunks_exact(c_in * taps).take(c_out).enumerate() {
        for (ci, k) in kernels.chunks_exact(taps).enumerate() {
            let dst = &mut f[(ci * c_out + co) * taps..][..taps];
            for (d, v) in dst.iter_mut().zip(k.iter().rev()) {
                *d = *v;
            }
        }
    }
    f
}

/// The fewest output pixels of a layer [`Dense::tap_grids`] reads at tap offsets. ResNet-50's
/// 3x3 layers at batch 8, forward and both gradients (`TAPS=1 [F32=1] ... --example
/// train_conv_rate`, AMD EPYC), bf16: 56x56 1.20-1.27x, 28x28 1.06-1.09x, 14x14 1.00-1.01x,
/// 7x7 0.82x (the grid's dropped columns are 29 % of a 7x7 map's work, and both packed
/// weights are made every step); f32: 56x56 1.14-1.34x, 28x28 1.01-1.09x, 14x14 0.93-0.97x.
#[cfg(target_arch = "x86_64")]
const TAPS_MIN_PIX: usize = 28 * 28;

/// The most output pixels (exclusive) of a layer [`Dense::direct`] takes, ahead of the
/// tap-offset and unfolded paths. ResNet's 3x3 layers at batch 8, forward alone and forward
/// with both gradients, against what ran before (`DIRECT=1 [FWD=1 | TAPS=1] [F32=1] ...
/// --example train_conv_rate`, AMD EPYC): f32 7x7 1.31-1.32x / 1.16-1.19x, 14x14
/// 1.22-1.23x / 1.13-1.19x (unfolded before), 28x28 1.14x / 1.09-1.11x; bf16 1.06-1.36x /
/// 1.14-1.21x, 1.10-1.25x / 1.10-1.20x, 1.14-1.16x / 1.00-1.09x; at 56x56 the tap offsets
/// stay ahead (direct: f32 0.97x, bf16 0.80-0.93x with both gradients).
#[cfg(target_arch = "x86_64")]
const DIRECT_MAX_PIX: usize = 56 * 56;

/// `[n, m, oh, ow]`: the stride-1 convolution over `taps` of the `n` images `[c, h, w]` in
/// `images` with the weight `w [m, c, kh, kw]`, its products in bf16 on `products` or in
/// f32 (`None`, `conv_taps`), every output written once.
#[cfg(target_arch = "x86_64")]
fn tap_conv(
    products: Option<Bf16Kernel>,
    w: &[f32],
    [m, c]: [usize; 2],
    images: &[f32],
    n: usize,
    taps: &Taps,
) -> Vec<f32> {
    let (plane, len) = (taps.oh * taps.ow, n * m * taps.oh * taps.ow);
    let mut y: Vec<f32> = Vec::with_capacity(len);
    let dst = &mut y.spare_capacity_mut()[..len];
    match products {
        Some(kern) => {
            let wa = bf16::taps::pack_weights(w, m, c, taps.offs.len());
            let images = images.chunks_exact(c * taps.h * taps.w);
            for (img, dst) in images.zip(dst.chunks_exact_mut(m * plane)) {
                let padded = bf16::taps::PaddedImage::pack(img, taps);
                bf16::taps::conv_into(kern, &wa, &padded, taps, dst, Bias::None, Epilogue::None);
            }
        }
        None => {
            let packed = crate::cpu::conv_taps::Packed::new(w, m, c, taps.offs.len());
            crate::cpu::conv_taps::conv(&packed, images, n, taps, dst, None, None, Epilogue::None);
        }
    }
    // SAFETY: every image's `m * plane` outputs were written by its convolution.
    unsafe { y.set_len(len) };
    y
}

static TRAIN_TAPS: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_TRAIN_TAPS"));

/// Turns the tap-offset convolutions of stride-1 training layers (both precisions) on or off
/// for the process, over `COMMITTEE_TRAIN_TAPS` (to time the two in one process:
/// `examples/ab_train.rs` in committee-train, switch `train-taps`).
pub fn set_train_taps(on: bool) {
    TRAIN_TAPS.set(on)
}

#[derive(Debug)]
pub(crate) struct DenseBackward;

impl Backward<Flex, 2> for DenseBackward {
    type State = (FlexTensor, FlexTensor, Dense);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host(
            crate::profile::conv_backward_kind(ops.state.2.k),
            move || {
                let [node_x, node_w] = ops.parents;
                let dy = contiguous(grads.consume::<Flex>(&ops.node));
                let (x, w, d) = ops.state;
                let (dys, xs, ws) = (slice(&dy), slice(&x), slice(&w));
                let (kk, pix) = (d.taps(), d.pix());
                let (img_in, img_out) = (d.c_in * d.h * d.w, d.c_out * pix);
                let [kh, kw] = d.k;
                #[cfg(target_arch = "x86_64")]
                let node_w = match (node_w, super::direct_wgrad::layer(&d)) {
                    (Some(node), Some(bf16)) => {
                        let dw = super::direct_wgrad::weight_grad(&d, xs, dys, bf16);
                        let dw =
                            FlexTensor::from_data(TensorData::new(dw, [d.c_out, d.c_in, kh, kw]));
                        grads.register::<Flex>(node.id, dw);
                        None
                    }
                    (node, _) => node,
                };
                #[cfg(target_arch = "x86_64")]
                let node_w = match (node_w, d.dot_grid()) {
                    (Some(node), Some(grid)) => {
                        // Dot products over the padded image's phases at the taps' offsets.
                        let (c_out, n) = (d.c_out, d.n);
                        let dw = match d.half {
                            None => super::wgrad::grid_weight_grad::<f32>(&grid, xs, dys, c_out, n),
                            Some(_) => {
                                super::wgrad::grid_weight_grad::<u16>(&grid, xs, dys, c_out, n)
                            }
                        };
                        let dw =
                            FlexTensor::from_data(TensorData::new(dw, [d.c_out, d.c_in, kh, kw]));
                        grads.register::<Flex>(node.id, dw);
                        None
                    }
                    (node, _) => node,
                };
                if let Some(node) = node_w {
                    // dW = sum_i dY[i] col(X[i])^T, image after image into one accumulator (a fixed
                    // order: the same bits for any thread count), each product split over the
                    // threads. One image's columns at a time: the whole batch's (a 3x3 layer of 64
                    // channels at 56x56, batch 8: 58 MB) came from a fresh mapping every step.
                    // Under bf16, the images of a small map several at a time, one product over
                    // their pixels (`half::images_per_product`).
                    let group = half::images_per_product(d.half, pix, d.n);
                    let mut col = vec![0f32; group * kk * pix];
                    let mut dw = vec![0f32; d.c_out * kk];
                    for i0 in (0..d.n).step_by(group) {
                        let g = (d.n - i0).min(group);
                        col.par_chunks_mut(pix)
                            .take(g * kk)
                            .enumerate()
                            .for_each(|(t, row)| {
                                let img = &xs[(i0 + t / kk) * img_in..][..img_in];
                                d.unfold_tap(img, t % kk, row)
                            });
                        if let Some(kern) = d.half {
                            let cols: Vec<&[f32]> = col.chunks(kk * pix).take(g).collect();
                            let dy: Vec<&[f32]> = (i0..i0 + g)
                                .map(|i| &dys[i * img_out..(i + 1) * img_out])
                                .collect();
                            half::weight_grad(
                                kern,
                                &cols,
                                &dy,
                                [kk, d.c_out, pix],
                                &mut dw,
                                i0 > 0,
                            );
                            continue;
                        }
                        gemm_strided(
                            [d.c_out, kk, pix],
                            &mut dw,
                            Mat::rows(&dys[i0 * img_out..(i0 + 1) * img_out], pix),
                            Mat::cols(&col, pix),
                            i0 > 0,
                            gemm::Parallelism::Rayon(0),
                        );
                    }
                    let dw = FlexTensor::from_data(TensorData::new(dw, [d.c_out, d.c_in, kh, kw]));
                    grads.register::<Flex>(node.id, dw);
                }
                #[cfg(target_arch = "x86_64")]
                if let (Some(node), Some(back)) = (&node_x, d.direct_back()) {
                    let dx = match d.half {
                        None => super::direct::conv(&back, dys, ws, true),
                        Some(_) => super::direct::conv_bf16(&back, dys, ws, true),
                    };
                    let dx = FlexTensor::from_data(TensorData::new(dx, [d.n, d.c_in, d.h, d.w]));
                    grads.register::<Flex>(node.id, dx);
                    return;
                }
                #[cfg(target_arch = "x86_64")]
                if let (Some(node), Some((products, _, back))) = (&node_x, d.tap_grids()) {
                    let flipped = flipped_weights(ws, [d.c_out, d.c_in, kh * kw]);
                    let dx = tap_conv(products, &flipped, [d.c_in, d.c_out], dys, d.n, &back);
                    let dx = FlexTensor::from_data(TensorData::new(dx, [d.n, d.c_in, d.h, d.w]));
                    grads.register::<Flex>(node.id, dx);
                    return;
                }
                if let Some(node) = node_x {
                    let mut dx = vec![0f32; d.n * img_in];
                    let wt = d.half.map(|_| PackedA::pack_transposed(ws, kk, d.c_out));
                    dx.par_chunks_mut(img_in).enumerate().for_each_init(
                        Vec::new,
                        |col, (i, dx)| {
                            // Overwritten whole by the product: zeroed once per thread, not per image.
                            col.resize(kk * pix, 0.0);
                            let dy = &dys[i * img_out..(i + 1) * img_out];
                            if let (Some(kern), Some(wt)) = (d.half, &wt) {
                                half::product(kern, wt, dy, [d.c_out, pix], col);
                                d.fold(col, dx);
                                return;
                            }
                            gemm_strided(
                                [kk, pix, d.c_out],
                                col,
                                Mat::cols(ws, kk),
                                Mat::rows(&dys[i * img_out..(i + 1) * img_out], pix),
                                false,
                                gemm::Parallelism::None,
                            );
                            d.fold(col, dx);
                        },
                    );
                    let dx = FlexTensor::from_data(TensorData::new(dx, [d.n, d.c_in, d.h, d.w]));
                    grads.register::<Flex>(node.id, dx);
                }
            },
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Pointwise {
    pub(crate) n: usize,
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    /// The products' bf16 kernel (`None`: f32).
    pub(crate) half: Option<Bf16Kernel>,
}

impl Pointwise {
    pub(crate) fn hw(&self) -> usize {
        self.h * self.w
    }

    /// The layer as a dense one's sizes, for [`super::direct_wgrad`].
    #[cfg(target_arch = "x86_64")]
    fn dense(&self) -> Dense {
        Dense {
            n: self.n,
            c_in: self.c_in,
            c_out: self.c_out,
            h: self.h,
            w: self.w,
            k: [1, 1],
            s: [1, 1],
            pad: [0, 0],
            pad_end: [0, 0],
            out: [self.h, self.w],
            half: self.half,
        }
    }
}

#[derive(Debug)]
pub(crate) struct PointwiseBackward;

impl Backward<Flex, 2> for PointwiseBackward {
    type State = (FlexTensor, FlexTensor, Pointwise);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("conv 1x1 backward", move || {
            let [node_x, node_w] = ops.parents;
            let dy = contiguous(grads.consume::<Flex>(&ops.node));
            let (x, w, d) = ops.state;
            let (dys, xs, ws) = (slice(&dy), slice(&x), slice(&w));
            let (img_in, img_out) = (d.c_in * d.hw(), d.c_out * d.hw());
            #[cfg(target_arch = "x86_64")]
            let dense = d.dense();
            #[cfg(target_arch = "x86_64")]
            let node_w = match (node_w, super::direct_wgrad::layer(&dense)) {
                (Some(node), Some(bf16)) => {
                    // Outer products over the whole batch's pixels (small maps).
                    let dw = super::direct_wgrad::weight_grad(&dense, xs, dys, bf16);
                    let dw = FlexTensor::from_data(TensorData::new(dw, [d.c_out, d.c_in, 1, 1]));
                    grads.register::<Flex>(node.id, dw);
                    None
                }
                (node, _) => node,
            };
            #[cfg(target_arch = "x86_64")]
            let node_w = match node_w {
                Some(node) if super::wgrad::applies(d.half, d.hw()) => {
                    // Dot products over both operands as they lie (in bf16: converted once).
                    let dims = [d.n, d.c_in, d.c_out, d.hw()];
                    let dw = super::wgrad::pointwise_weight_grad(xs, dys, dims, d.half.is_some());
                    let dw = FlexTensor::from_data(TensorData::new(dw, [d.c_out, d.c_in, 1, 1]));
                    grads.register::<Flex>(node.id, dw);
                    None
                }
                node => node,
            };
            if let Some(node) = node_w {
                // dW += dY[i] X[i]^T in image order (the same bits whatever the thread count);
                // under bf16, the images of a small map several at a time.
                let mut dw = vec![0f32; d.c_out * d.c_in];
                let group = half::images_per_product(d.half, d.hw(), d.n);
                for i0 in (0..d.n).step_by(group) {
                    if let Some(kern) = d.half {
                        let imgs = i0..(i0 + group).min(d.n);
                        let x: Vec<&[f32]> = imgs
                            .clone()
                            .map(|i| &xs[i * img_in..(i + 1) * img_in])
                            .collect();
                        let dy: Vec<&[f32]> =
                            imgs.map(|i| &dys[i * img_out..(i + 1) * img_out]).collect();
                        half::weight_grad(
                            kern,
                            &x,
                            &dy,
                            [d.c_in, d.c_out, d.hw()],
                            &mut dw,
                            i0 > 0,
                        );
                        continue;
                    }
                    gemm_strided(
                        [d.c_out, d.c_in, d.hw()],
                        &mut dw,
                        Mat::rows(&dys[i0 * img_out..(i0 + 1) * img_out], d.hw()),
                        Mat::cols(&xs[i0 * img_in..(i0 + 1) * img_in], d.hw()),
                        i0 > 0,
                        gemm::Parallelism::Rayon(0),
                    );
                }
                let dw = FlexTensor::from_data(TensorData::new(dw, [d.c_out, d.c_in, 1, 1]));
                grads.register::<Flex>(node.id, dw);
            }
            if let Some(node) = node_x {
                let wt = d
                    .half
                    .map(|_| PackedA::pack_transposed(ws, d.c_in, d.c_out));
                let dx = written(d.n * img_in, |dx| {
                    dx.par_chunks_mut(img_in).enumerate().for_each(|(i, dx)| {
                        let dy = &dys[i * img_out..(i + 1) * img_out];
                        if let (Some(kern), Some(wt)) = (d.half, &wt) {
                            half::product_into(kern, wt, dy, [d.c_out, d.hw()], dx);
                            return;
                        }
                        gemm_into(
                            [d.c_in, d.hw(), d.c_out],
                            dx,
                            Mat::cols(ws, d.c_in),
                            Mat::rows(dy, d.hw()),
                            gemm::Parallelism::None,
                        );
                    });
                });
                let dx = FlexTensor::from_data(TensorData::new(dx, [d.n, d.c_in, d.h, d.w]));
                grads.register::<Flex>(node.id, dx);
            }
        })
    }
}
