//! Dense convolution as matrix products (inference), bias and activation fused.

use super::*;

/// A dense convolution (groups 1, no dilation) as one matrix product per image, with bias and
/// `ep` applied to each finished output row; `Err(x)` when it does not apply.
///
/// Why: flex's own convolution ran ResNet-50's 3x3 layers at ~30-40 GMAC/s on 2 cores while
/// the same `gemm` crate reaches 70-90 GMAC/s on one large product (it splits the product over
/// rayon's threads; flex's convolution splits into tiles too small for that). A 1x1 stride-1
/// convolution is the product `W[Cout, Cin] x X[Cin, H*W]` as it lies in memory; other shapes
/// first unfold the image (`im2col`: one row per (input channel, tap), one column per output
/// pixel, zeros where the window leaves the padded image).
pub fn conv_gemm(conv: &Conv2d, x: Tensor<4>, ep: Epilogue) -> Result<Tensor<4>, Tensor<4>> {
    conv_gemm_add(conv, x, None, ep)
}

/// [`conv_gemm`] with `residual` (the output's shape) added before the activation:
/// `ep(conv(x) + residual)`, a ResNet block's last convolution, its shortcut and ReLU in one
/// pass; `Err(x)` also when `residual` is not an eligible tensor of the output's shape. Why:
/// apart, the addition and the ReLU were two more passes over the block's output (3 % of
/// ResNet-50's f32 forward).
pub fn conv_gemm_add(
    conv: &Conv2d,
    x: Tensor<4>,
    residual: Option<&Tensor<4>>,
    ep: Epilogue,
) -> Result<Tensor<4>, Tensor<4>> {
    let [c_out, cin_g, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    let [n, c, h, w] = x.dims();
    // A bf16 input (activations kept in bf16, `bf16::Elem`) gives a bf16 output.
    let bf16_in = bf16_activation(Kernel::ConvGemm, &x);
    if !(bf16_in || eligible(Kernel::ConvGemm, &x))
        || conv.groups != 1
        || cin_g != c
        || conv.dilation != [1, 1]
    {
        return Err(x);
    }
    let [sh, sw] = conv.stride;
    let Some(win) = window(conv, [h, w]) else {
        return Err(x);
    };
    let (oh, ow) = (win.oh, win.ow);
    let residual = match residual {
        Some(r)
            if r.dims() == [n, c_out, oh, ow]
                && r.dtype() == x.dtype()
                && (bf16_in || eligible(Kernel::ConvGemm, r)) =>
        {
            Some(eligible_input(r.clone()))
        }
        Some(_) => return Err(x),
        None => None,
    };
    let Some((weight, bias)) = params(&conv.weight, conv.bias.as_ref()) else {
        return Err(x);
    };
    let input = eligible_input(x);
    let wts = weight.storage::<f32>();
    let bias = bias.as_ref().map(|b| b.storage::<f32>());
    let shape = Shape {
        n,
        c,
        h,
        w,
        c_out,
        kh,
        kw,
        sh,
        sw,
        win,
    };
    // bf16 products (`--dtype bf16`) where they pay, and always on a bf16 input.
    let pix = oh * ow;
    let bf16 = crate::precision::bf16_kernel()
        .filter(|_| bf16_in || bf16_pays([c, c_out], [kh, kw], [sh, sw], pix));
    if let Some(kern) = bf16 {
        return Ok(match bf16_in {
            true => {
                let res = residual.as_ref().map(elems::<u16>);
                bf16_conv(kern, conv, &shape, wts, bias, elems::<u16>(&input), res, ep)
            }
            false => {
                let res = residual.as_ref().map(elems::<f32>);
                bf16_conv(kern, conv, &shape, wts, bias, elems::<f32>(&input), res, ep)
            }
        });
    }
    let inp = input.storage::<f32>();
    let res = residual.as_ref().map(|r| r.storage::<f32>());
    let Window { pt, pb, pl, pr, .. } = shape.win;
    let k = c * kh * kw;
    let direct = shape.direct();
    let isa = Isa::get();
    let unfold = |src: &[f32], row: usize, r: &mut [f32]| shape.unfold(src, row, r);
    let len = n * c_out * pix;
    // Stride 1, more than one tap, a small map, channels in blocks of 16 and 32, on
    // AVX-512: the direct convolution of training (`F32_DIRECT_MAX_PIXELS`).
    #[cfg(target_arch = "x86_64")]
    if sh == 1 && sw == 1 && kh * kw > 1 && pix < F32_DIRECT_MAX_PIXELS && F32_DIRECT.on() {
        use crate::cpu::train::direct::{self, Direct};
        let d = Direct {
            n,
            c_in: c,
            c_out,
            h,
            w,
            k: [kh, kw],
            pad: [pt, pb, pl, pr],
        };
        if d.fits().is_some() && d.out() == Some([oh, ow]) {
            let wb = bf16::cache::f32_direct(&conv.weight, &wts[..c_out * k], &d);
            let y = direct::conv_finished(&d, &inp[..n * c * h * w], &wb, bias, res, ep);
            return Ok(from_vec(y, [n, c_out, oh, ow]));
        }
    }
    // Stride 1, more than one tap, a large map, on AVX-512: the image read at each tap's
    // offset, nothing unfolded (see `F32_TAPS_MIN_PIXELS` for where that pays).
    #[cfg(target_arch = "x86_64")]
    if sh == 1
        && sw == 1
        && kh * kw > 1
        && pix >= F32_TAPS_MIN_PIXELS
        && f32_taps_on()
        && conv_taps::available()
    {
        let mut out = Vec::with_capacity(len);
        let t = bf16::taps::Taps::new(c, [h, w], [kh, kw], [pt, pb, pl, pr]);
        let packed = bf16::cache::f32_taps(&conv.weight, &wts[..c_out * k], c_out, c, kh * kw);
        let dst = &mut out.spare_capacity_mut()[..len];
        conv_taps::conv(&packed, inp, n, &t, dst, bias, res, ep);
        // SAFETY: `conv_taps::conv` wrote all `len` outputs.
        unsafe { out.set_len(len) };
        return Ok(from_vec(out, [n, c_out, oh, ow]));
    }
    // The products straight into `out` (nothing to read first), then each output row's
    // bias, residual and activation in one pass (none where there is nothing to apply).
    // Why: a bias and residual preloaded for the product to add to cost a pass writing `out`
    // and the product's reading it back (the preload alone 2.5 % of ResNet-50's f32 forward,
    // in baseline SSE code).
    let finish = ep != Epilogue::None || bias.is_some() || res.is_some();
    let plane = c_out * pix;
    // Rows `o0..` of image `img`'s output, finished.
    let finish_rows = |img: usize, o0: usize, rows: &mut [f32]| {
        for (i, row) in rows.chunks_exact_mut(pix).enumerate() {
            let o = o0 + i;
            let b = bias.map_or(0.0, |b| b[o]);
            let r = res.map(|r| &r[img * plane + o * pix..][..pix]);
            isa.bias_epilogue(row, b, r, ep);
        }
    };
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst_all = &mut out.spare_capacity_mut()[..len];
    if direct && images_apart(n, rayon::current_num_threads()) {
        dst_all
            .par_chunks_exact_mut(plane)
            .zip(inp[..n * c * h * w].par_chunks_exact(c * h * w))
            .enumerate()
            .for_each(|(img, (dst, src))| {
                let (lhs, rhs) = (Mat::rows(wts, k), Mat::rows(src, pix));
                gemm_into([c_out, pix, k], dst, lhs, rhs, gemm::Parallelism::None);
                if finish {
                    // SAFETY: `gemm_into` wrote the whole plane.
                    finish_rows(img, 0, unsafe { assume_written(dst) });
                }
            });
    } else {
        with_scratch(if direct { 0 } else { k * pix }, |cols| {
            for (img, dst) in dst_all.chunks_exact_mut(plane).enumerate() {
                let src = &inp[img * c * h * w..][..c * h * w];
                let rhs: &[f32] = if direct {
                    src
                } else {
                    cols.par_chunks_mut(pix)
                        .enumerate()
                        .for_each(|(row, r)| unfold(src, row, r));
                    cols
                };
                let (lhs, rhs) = (Mat::rows(wts, k), Mat::rows(rhs, pix));
                gemm_into([c_out, pix, k], dst, lhs, rhs, gemm::Parallelism::Rayon(0));
                if finish {
                    let per = CHUNK.div_ceil(pix);
                    // SAFETY: `gemm_into` wrote the whole plane.
                    unsafe { assume_written(dst) }
                        .par_chunks_mut(per * pix)
                        .enumerate()
                        .for_each(|(t, rows)| finish_rows(img, t * per, rows));
                }
            }
        });
    }
    // SAFETY: each image's product wrote its whole plane (`gemm_into`), and the planes
    // cover `len`.
    unsafe { out.set_len(len) };
    Ok(from_vec(out, [n, c_out, oh, ow]))
}

/// A dense convolution's sizes: batch, input channels and size, outputs, kernel, stride,
/// and padding with the output size.
struct Shape {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    win: Window,
}

impl Shape {
    /// A 1x1 stride-1 convolution without padding: the product reads the image as it lies.
    fn direct(&self) -> bool {
        let Window { pt, pb, pl, pr, .. } = self.win;
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && pt + pb + pl + pr == 0
    }

    /// Row `row` (input channel, tap) of image `src`'s unfolding.
    fn unfold<T: Copy + Default>(&self, src: &[T], row: usize, r: &mut [T]) {
        let (kh, kw, h, w) = (self.kh, self.kw, self.h, self.w);
        let (ci, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
        let plane = &src[ci * h * w..][..h * w];
        let (ow, pt, pl) = (self.win.ow, self.win.pt, self.win.pl);
        im2col_row(plane, r, [h, w], [ow, self.sh, self.sw], [ky, kx], [pt, pl]);
    }
}

/// The convolution with bf16 products: the weight packed once, each image packed per call
/// (from f32 or bf16), bias and activation applied as each output block is written, in the
/// input's element type, with the residual (if any) added in that write-back for bf16 and in
/// a pass after it for f32.
#[allow(clippy::too_many_arguments)]
fn bf16_conv<T: bf16::Elem>(
    kern: bf16::Bf16Kernel,
    conv: &Conv2d,
    s: &Shape,
    wts: &[f32],
    bias: Option<&[f32]>,
    inp: &[T],
    res: Option<&[T]>,
    ep: Epilogue,
) -> Tensor<4> {
    let Shape {
        n,
        c,
        h,
        w,
        c_out,
        kh,
        kw,
        sh,
        sw,
        ..
    } = *s;
    let Window {
        pt,
        pb,
        pl,
        pr,
        oh,
        ow,
    } = s.win;
    let (k, pix, len) = (c * kh * kw, oh * ow, n * c_out * oh * ow);
    // A residual and the activation after it are applied in one streaming pass once the
    // products are written, not in their write-back: read there 32 rows at a time, the
    // residual cost more (ResNet-50 bf16 at batch 8 1.05-1.06x this way, two runs in one
    // process; batch 1 1.00x).
    // In bf16 the residual is added as each block is written, the sum rounded once (no
    // slower than a pass after it: ResNet-50 b8 1.00x, 0.97-1.27x, in one process).
    let (after, res16, ep) = match res.map(T::view) {
        Some(bf16::View::F32(r)) => (Some((r, ep)), None, Epilogue::None),
        Some(bf16::View::Bf16(r)) => (None, Some(r), ep),
        None => (None, None, ep),
    };
    let zeros = (res.is_some() && bias.is_none()).then(|| vec![0f32; c_out]);
    let bias = bias.or(zeros.as_deref()).map(|b| &b[..c_out]);
    // Image `img`'s addends.
    let bias_of = |img: usize| match (bias, res16) {
        (Some(b), Some(r)) => bf16::Bias::RowsPlusBf16(b, &r[img * c_out * pix..][..c_out * pix]),
        (Some(b), None) => bf16::Bias::Rows(b),
        (None, _) => bf16::Bias::None,
    };
    let mut out: Vec<T> = Vec::with_capacity(len);
    let images = out.spare_capacity_mut()[..len].chunks_exact_mut(c_out * pix);
    let image = |img: usize| &inp[img * c * h * w..][..c * h * w];
    #[cfg(target_arch = "x86_64")]
    let stride_1 = sh == 1 && sw == 1 && h * w > 0;
    // A stem (stride 2 over a few channels): as stride 1 over the image's four phases,
    // whose channels fit one 32-channel tap.
    #[cfg(target_arch = "x86_64")]
    let stem = sh == 2 && sw == 2 && 4 * c <= 32 && kh * kw > 1 && pix > 0;
    #[cfg(target_arch = "x86_64")]
    // The tap kernels: AMX tiles and AVX512-BF16 (the emulated kernel unfolds).
    let tap_kernel = kern != bf16::Bf16Kernel::Emulated && taps_on();
    #[cfg(target_arch = "x86_64")]
    let taps = if tap_kernel && stride_1 && !s.direct() {
        Some((
            bf16::taps::Taps::new(c, [h, w], [kh, kw], [pt, pb, pl, pr]),
            false,
        ))
    } else if tap_kernel && stem && kern == bf16::Bf16Kernel::Amx {
        // Through its phases a stem's 4 c channels are padded to 32 taps' worth: the
        // conversions saved pay for that on AMX, not on AVX512-BF16 (ResNet-50's 7x7 stem at
        // 0.61-0.67x of unfolded, `examples/conv_dtype.rs` with `TAPS=1`, AMD EPYC).
        let (th, tw) = (kh.div_ceil(2), kw.div_ceil(2));
        let grid = [oh + th - 1, ow + tw - 1];
        Some((bf16::taps::Taps::new(4 * c, grid, [th, tw], [0; 4]), true))
    } else {
        None
    };
    #[cfg(not(target_arch = "x86_64"))]
    let taps: Option<()> = None;
    match taps {
        // Stride 1 on AMX or AVX512-BF16: each image packed once, padded, the taps read at offsets; a
        // stem the same way over its phases.
        #[cfg(target_arch = "x86_64")]
        Some((t, phased)) => {
            let wts = &wts[..c_out * k];
            let wts = match phased {
                true => bf16::cache::left_phases(&conv.weight, wts, c_out, c, [kh, kw]),
                false => bf16::cache::left_taps(&conv.weight, wts, c_out, c, kh * kw),
            };
            for (img, dst) in images.enumerate() {
                let padded = match phased {
                    true => {
                        let grid = [t.h, t.w];
                        let ph = bf16::taps::phases(image(img), c, [h, w], [pt, pl], grid);
                        bf16::taps::PaddedImage::pack(&ph, &t)
                    }
                    false => bf16::taps::PaddedImage::pack(image(img), &t),
                };
                bf16::taps::conv_into(kern, &wts, &padded, &t, dst, bias_of(img), ep);
            }
        }
        // Else each image's columns packed straight from the image (unfolded row pair
        // by row pair when not 1x1), its product split over the threads.
        _ => {
            let wts = bf16::cache::left(&conv.weight, &wts[..c_out * k], c_out, k);
            for (img, dst) in images.enumerate() {
                let src = image(img);
                if s.direct() && rows_on() {
                    bf16::gemm_rows_into(kern, &wts, src, pix, dst, bias_of(img), ep);
                    continue;
                }
                let cols = if s.direct() {
                    bf16::PackedB::pack(src, k, pix)
                } else {
                    bf16::PackedB::pack_rows(k, pix, |row, r| s.unfold(src, row, r))
                };
                bf16::gemm_into(kern, &wts, &cols, dst, bias_of(img), ep);
            }
        }
    }
    // SAFETY: every image's `c_out * pix` outputs were written by the product.
    unsafe { out.set_len(len) };
    // An f32 residual (f32 input, f32 output) in one pass after the products.
    if let (Some((r, ep)), bf16::ViewMut::F32(o)) = (after, T::view_mut(&mut out)) {
        let isa = Isa::get();
        o.par_chunks_mut(CHUNK)
            .zip(r[..len].par_chunks(CHUNK))
            .for_each(|(o, r)| isa.add_epilogue(o, r, ep));
    }
    from_elems(out, [n, c_out, oh, ow])
}

/// `f` on `len` floats of the calling thread's scratch buffer, kept from call to call (its
/// contents are whatever the last call left). Why: a fresh zeroed buffer for each unfolded
/// image (7 MB for ResNet-50's first 3x3 layers) cost a memset and page faults in every call,
/// ~4 % of ResNet-50's f32 forward. The buffer lives as long as its thread, at the size of the
/// largest unfolding the thread has done.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local!(static SCRATCH: std::cell::RefCell<Vec<f32>> = const {
        std::cell::RefCell::new(Vec::new())
    });
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        // In use further up this thread's stack (a nested call): a buffer of its own.
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// Whether a convolution with bf16 products (`--dtype bf16`) beats the f32 path: measured on
/// EfficientNet-B0's, MobileNetV2's and ResNet-50's layers as one thread's part of a split
/// batch (`examples/conv_dtype.rs`, Xeon with AMX, alternated call by call, two runs in
/// different minutes; raw output in docs/runs/cpu-bf16-routing-2026-12-06). The bf16 path
/// converts and packs each input value and writes each output through a block buffer, which
/// costs as much as the product where each input meets few output channels or each output
/// few inputs: 1x1 layers with fewer than 80 outputs ran at 0.34-0.87x of f32 (EfficientNet-
/// B0's projection 96 -> 24 at 56x56: 0.34-0.45x; ResNet-50's 256 -> 64 and 64 -> 64:
/// 0.70-0.87x), with fewer than 48 inputs at 0.68-1.19x (24 -> 144: 0.76-1.07x, 40 -> 240:
/// 0.81-1.19x), the others at 0.90-3.3x (240 -> 80 at 14x14: 0.90-1.02x; from 480 -> 112 on:
/// 1.2-3.3x); the squeeze-and-excitation layers on one pixel at 0.14-0.45x; the 3x3 stem
/// over 3 channels (through its phases) at 0.66-0.69x, the 7x7 one at 1.05-1.27x; dense 3x3
/// layers at 1.5-4.5x. [`set_bf16_everywhere`] overrides it.
fn bf16_pays(
    [c, c_out]: [usize; 2],
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    pix: usize,
) -> bool {
    if BF16_EVERYWHERE.on() {
        return true;
    }
    let one = kh == 1 && kw == 1;
    let stem = (sh, sw) != (1, 1) && 4 * c <= 32 && !one;
    if pix < 2 || (one && (c_out < 80 || c < 48)) {
        return false;
    }
    !stem || kh * kw >= 25
}

/// Sends every convolution to the bf16 path under `--dtype bf16`, where [`bf16_pays`] would
/// keep some in f32: for the tests that compare the bf16 kernels on every path, and to time
/// the choice (`examples/conv_dtype.rs`).
pub fn set_bf16_everywhere(on: bool) {
    BF16_EVERYWHERE.set(on);
}

static BF16_EVERYWHERE: crate::kernel::Switch = crate::kernel::Switch::new(false, None);

/// Whether stride-1 bf16 convolutions (and stems through their phases) read the padded image
/// at each tap's offset (`bf16::taps`) rather than unfold it; `COMMITTEE_BF16_TAPS=0` unfolds,
/// to time one against the other.
#[cfg(target_arch = "x86_64")]
fn taps_on() -> bool {
    BF16_TAPS.on()
}

#[cfg(target_arch = "x86_64")]
static BF16_TAPS: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_BF16_TAPS"));

/// Turns the bf16 tap-offset convolution on or off for the process, over
/// `COMMITTEE_BF16_TAPS` (to alternate the two paths in one process: `examples/ab_f32_taps.rs`
/// in committee-zoo).
pub fn set_bf16_taps(on: bool) {
    #[cfg(target_arch = "x86_64")]
    BF16_TAPS.set(on);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = on;
}

/// Whether a 1x1 stride-1 bf16 convolution reads its image (bf16 or f32) in place
/// ([`bf16::gemm_rows_into`]) rather than packing it first; `COMMITTEE_BF16_ROWS=0` packs,
/// to time one against the other.
fn rows_on() -> bool {
    BF16_ROWS.on()
}

static BF16_ROWS: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_BF16_ROWS"));

/// Turns [`rows_on`] on or off for the process, over `COMMITTEE_BF16_ROWS` (to alternate the
/// two in one process: `examples/ab_f32_taps.rs` in committee-zoo, switch `bf16-rows`).
pub fn set_bf16_rows(on: bool) {
    BF16_ROWS.set(on);
}

/// Output pixels per image from which a stride-1 f32 convolution reads the image at tap
/// offsets ([`conv_taps`]) rather than unfolds it for the `gemm` crate. Measured on
/// ResNet-50's 3x3 shapes (bias and ReLU fused), alternated call by call, 1 and 2 threads,
/// 1 to 8 images (docs/benchmarks.md, "f32 tap-offset convolution"): 56x56 ran 1.01-2.08x,
/// 28x28 0.93-1.29x, 14x14 0.94-1.37x, 7x7 0.75-1.14x. On a 7x7 map the grid's dropped
/// columns and a part-filled 64-column tile cost a fifth of the work (the `gemm` crate
/// tiles pixels by 6), more than the small unfolding it saves. 1x1 convolutions stay with
/// the crate, which reads them in place (0.73-1.08x here, packed); so do stems (7x7 over
/// four phases, 0.79-0.87x: a quarter of the taps are zeros).
#[cfg(target_arch = "x86_64")]
const F32_TAPS_MIN_PIXELS: usize = 14 * 14;

/// Output pixels per image below which a stride-1 f32 convolution runs directly
/// (`train::direct`: 16-channel blocks, padding skipped) where its channels allow. Measured
/// on ResNet-50's 3x3 layers, one to eight images on one and two Zen 4 threads, against what
/// ran before (docs/benchmarks.md, "direct convolutions in inference"): 28x28 1.09-1.14x and
/// 14x14 1.17-1.27x of tap offsets, 7x7 1.49-2.53x of unfolded; at 56x56 the two kernels
/// ran alike (0.99-1.00x).
#[cfg(target_arch = "x86_64")]
const F32_DIRECT_MAX_PIXELS: usize = 56 * 56;

#[cfg(target_arch = "x86_64")]
static F32_DIRECT: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_F32_DIRECT"));

/// Turns the direct f32 convolution of small maps in inference on or off for the process,
/// over `COMMITTEE_F32_DIRECT` (to alternate it with what runs otherwise in one process:
/// `examples/ab_f32_taps.rs` in committee-zoo, switch `f32-direct`).
pub fn set_f32_direct(on: bool) {
    #[cfg(target_arch = "x86_64")]
    F32_DIRECT.set(on);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = on;
}

/// Whether f32 stride-1 convolutions on AVX-512 read the image at each tap's offset
/// ([`conv_taps`]) rather than unfold it for the `gemm` crate; `COMMITTEE_F32_TAPS=0`
/// unfolds, to time one against the other.
#[cfg(target_arch = "x86_64")]
fn f32_taps_on() -> bool {
    F32_TAPS.on()
}

static F32_TAPS: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_F32_TAPS"));

/// Turns the f32 tap-offset convolution on or off for the process, over `COMMITTEE_F32_TAPS`
/// (to alternate the two paths in one process: `examples/ab_f32_taps.rs` in committee-zoo).
pub fn set_f32_taps(on: bool) {
    F32_TAPS.set(on);
}

/// Whether a batch of `n` 1x1 convolutions runs one image per thread (each a single-threaded
/// gemm with its activation applied while the output is in cache) rather than image after
/// image, each product split over all threads. Why: the 1x1 convolutions of MobileNet-style
/// blocks have short products (`k` = 16-960 over a few thousand pixels), where splitting one
/// product costs more than it gains; per image, MobileNetV2 at batch 8 ran 1.11x and
/// EfficientNet-B0 1.06x faster (three alternating runs). Only when the images divide evenly
/// over the threads, or are many: with 3 images on 2 threads one thread would do two.
pub(crate) fn images_apart(n: usize, threads: usize) -> bool {
    n > 1 && (n.is_multiple_of(threads) || n >= 4 * threads)
}

/// One row of the unfolded image: tap (`ky`, `kx`) of one input plane, for every output pixel.
pub(crate) fn im2col_row<T: Copy + Default>(
    plane: &[T],
    row: &mut [T],
    [h, w]: [usize; 2],
    [ow, sh, sw]: [usize; 3],
    [ky, kx]: [usize; 2],
    [pt, pl]: [usize; 2],
) {
    // Output columns whose input column ix = ox*sw + kx - pl lies inside the image.
    let lo = pl.saturating_sub(kx).div_ceil(sw).min(ow);
    let hi = if w + pl > kx {
        ((w + pl - kx - 1) / sw + 1).min(ow)
    } else {
        0
    }
    .max(lo);
    for (oy, out) in row.chunks_exact_mut(ow).enumerate() {
        let iy = (oy * sh + ky) as isize - pt as isize;
        if iy < 0 || iy >= h as isize {
            out.fill(T::default());
            continue;
        }
        let src = &plane[iy as usize * w..][..w];
        out[..lo].fill(T::default());
        out[hi..].fill(T::default());
        let first = lo * sw + kx - pl;
        if sw == 1 {
            out[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
        } else if sw == 2 && hi > lo {
            // Pairwise, so the loop vectorises (a stem's 7x7 taps: one element at a time
            // through `step_by`); the last element apart, its pair may end past the row.
            let (body, last) = out[lo..hi].split_at_mut(hi - lo - 1);
            for (o, p) in body.iter_mut().zip(src[first..].chunks_exact(2)) {
                *o = p[0];
            }
            last[0] = src[first + 2 * (hi - lo - 1)];
        } else {
            for (o, v) in out[lo..hi].iter_mut().zip(src[first..].iter().step_by(sw)) {
                *o = *v;
            }
        }
    }
}
