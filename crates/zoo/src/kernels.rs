//! Inference kernels for the flex (CPU) backend where Burn's are slow: SiLU, ReLU/ReLU6, GELU,
//! depthwise and dense convolution and linear layers (with the activation fused in).
//!
//! Why: a profile of EfficientNet-B0 on flex (`committee bench --profile`, docs/benchmarks.md)
//! spent 60% of the forward in SiLU, which Burn composes as `x * sigmoid(x)` from two
//! single-threaded scalar passes, and ran depthwise convolutions at ~2 GMAC/s. These kernels
//! work on the flex tensor's storage directly (Burn's documented backend-extension route,
//! `Tensor::try_into_primitive`), in place when the tensor is not shared, split over rayon's
//! pool, and are compiled three times (baseline, AVX2+FMA, AVX-512) with the widest one the
//! CPU has chosen at run time.
//!
//! The entry points return `Err(input)` untouched when they do not apply, so the caller falls
//! back to Burn without a copy (hence `clippy::result_large_err` is allowed: a `Tensor` is
//! large, but it is moved, not built).
//!
//! They apply only to f32 tensors on the flex device without autodiff; everything else
//! (wgpu, ndarray, other dtypes) takes Burn's own ops. Training on flex has its own ops with
//! their backward passes in `train_kernels` (switched with [`Kernel::Train`]).

#![allow(clippy::result_large_err)]

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

/// An activation applied in place by a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    None,
    Relu,
    Relu6,
    Silu,
    /// The exact (erf) GELU, as `nn.GELU()` in timm's ViT.
    Gelu,
    /// `exp`, the inner step of the attention kernel's softmax.
    Exp,
}

/// The kernels, each of which can be switched off to measure what it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// In-place SiLU / ReLU / ReLU6 / GELU.
    Activations,
    /// Depthwise convolution with the activation fused.
    Depthwise,
    /// Dense convolution as one matrix product per image, activation fused.
    ConvGemm,
    /// Linear layer as one matrix product over all rows, bias and activation fused.
    Linear,
    /// ViT's multi-head attention read straight from the qkv projection.
    Attention,
    /// Max pooling (ResNet's stem).
    MaxPool,
    /// Training ops with their own backward (`train_kernels`): depthwise, 1x1 and other
    /// dense convolutions, BatchNorm.
    Train,
    /// A CNN's batch split over the threads, each part through the whole network on one
    /// thread ([`split_batch`]).
    Batch,
}

impl Kernel {
    pub const ALL: [Kernel; 8] = [
        Kernel::Activations,
        Kernel::Depthwise,
        Kernel::ConvGemm,
        Kernel::Linear,
        Kernel::Attention,
        Kernel::MaxPool,
        Kernel::Train,
        Kernel::Batch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Activations => "act",
            Kernel::Depthwise => "depthwise",
            Kernel::ConvGemm => "gemm",
            Kernel::Linear => "linear",
            Kernel::Attention => "attention",
            Kernel::MaxPool => "maxpool",
            Kernel::Train => "train",
            Kernel::Batch => "batch",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

static ON: AtomicU8 = AtomicU8::new(0b1111_1111);

/// Chooses which kernels run (all by default), process-wide.
pub fn set_enabled(kernels: &[Kernel]) {
    ON.store(
        kernels.iter().map(|k| k.bit()).fold(0, |a, b| a | b),
        Ordering::Relaxed,
    );
}

pub(crate) fn on(kernel: Kernel) -> bool {
    ON.load(Ordering::Relaxed) & kernel.bit() != 0
}

/// True when `x` can take `kernel`: it is on, and `x` is f32 on flex outside autodiff.
fn eligible<const D: usize>(kernel: Kernel, x: &Tensor<D>) -> bool {
    let device = x.device();
    on(kernel) && x.dtype() == DType::F32 && !device.is_autodiff() && device == Device::flex()
}

fn into_flex<const D: usize>(x: Tensor<D>) -> Option<FlexTensor> {
    x.try_into_primitive::<Flex>().ok()
}

/// An eligible input (see [`eligible`]) as a contiguous flex tensor.
fn eligible_input<const D: usize>(x: Tensor<D>) -> FlexTensor {
    match into_flex(x) {
        Some(t) => contiguous(t),
        None => unreachable!("eligible() checked the backend"),
    }
}

fn from_flex<const D: usize>(t: FlexTensor) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(t)
}

/// A contiguous, unshared flex tensor, to write in place (copies only when it has to).
fn owned(t: FlexTensor) -> FlexTensor {
    if t.is_unique() {
        contiguous(t)
    } else {
        t.to_contiguous()
    }
}

/// A flex tensor whose storage starts with its elements in order (copies only when needed).
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    let l = t.layout();
    if l.is_contiguous() && l.start_offset() == 0 {
        t
    } else {
        t.to_contiguous()
    }
}

/// Elements per rayon task: big enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 14;

/// Applies `ep` to every element of `x` in place (SiLU, ReLU, ReLU6); `None` when `x` is not
/// eligible, so the caller falls back to Burn.
pub fn activation<const D: usize>(x: Tensor<D>, ep: Epilogue) -> Result<Tensor<D>, Tensor<D>> {
    if !eligible(Kernel::Activations, &x) {
        return Err(x);
    }
    let mut t = match into_flex(x) {
        Some(t) => owned(t),
        None => unreachable!("eligible() checked the backend"),
    };
    let n = t.layout().num_elements();
    let data: &mut [f32] = &mut t.storage_mut::<f32>()[..n];
    let isa = Isa::get();
    data.par_chunks_mut(CHUNK).for_each(|c| isa.epilogue(c, ep));
    Ok(from_flex(t))
}

/// ReLU6's training parts for `x` (outside autodiff): `inside = (0 < x < 6)` as 0/1 and
/// `six = 6 * (x >= 6)`, so that `x * inside + six` is the clamp with PyTorch's gradient. One
/// parallel pass; Burn's comparisons, `bool_and` and casts are five single-threaded ones.
pub fn relu6_parts<const D: usize>(x: Tensor<D>) -> Result<(Tensor<D>, Tensor<D>), Tensor<D>> {
    parts(x, |x| {
        let inside = if x > 0.0 && x < 6.0 { 1.0 } else { 0.0 };
        (inside, if x >= 6.0 { 6.0 } else { 0.0 })
    })
}

/// SiLU's training parts for `x` (outside autodiff): the derivative `g = s (1 + x (1 - s))`
/// (`s = sigmoid(x)`) and `c = silu(x) - x g`, so that `x * g + c` is SiLU (to an ulp of
/// `x g`) with its exact gradient. One parallel pass; Burn's `x * sigmoid(x)` on an autodiff
/// tensor is two single-threaded passes forward and four backward.
pub fn silu_parts<const D: usize>(x: Tensor<D>) -> Result<(Tensor<D>, Tensor<D>), Tensor<D>> {
    parts(x, |x| {
        let s = 1.0 / (1.0 + exp::<false>(-x));
        let g = s * (1.0 + x * (1.0 - s));
        (g, x * s - x * g)
    })
}

/// Two tensors shaped like `x`, element `i` of each from `f(x[i])`, in one parallel pass; the
/// training parts of an activation (`x * a + b` in the graph). `Err(x)` when not eligible.
fn parts<const D: usize>(
    x: Tensor<D>,
    f: impl Fn(f32) -> (f32, f32) + Sync,
) -> Result<(Tensor<D>, Tensor<D>), Tensor<D>> {
    if !eligible(Kernel::Activations, &x) {
        return Err(x);
    }
    let shape = x.shape();
    let t = eligible_input(x);
    let n = t.layout().num_elements();
    let src: &[f32] = &t.storage::<f32>()[..n];
    let mut a = vec![0f32; n];
    let mut b = vec![0f32; n];
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks_mut(CHUNK))
        .zip(src.par_chunks(CHUNK))
        .for_each(|((a, b), x)| {
            for ((a, b), &x) in a.iter_mut().zip(b.iter_mut()).zip(x) {
                (*a, *b) = f(x);
            }
        });
    let make = |v: Vec<f32>| from_flex(FlexTensor::from_data(TensorData::new(v, shape.clone())));
    Ok((make(a), make(b)))
}

/// A depthwise convolution (one input channel per group, channel multiplier 1) with `ep`
/// applied to its output; `Err(x)` when the layer or input is not one this kernel handles.
pub fn depthwise(conv: &Conv2d, x: Tensor<4>, ep: Epilogue) -> Result<Tensor<4>, Tensor<4>> {
    let [_, _, kh, _] = conv.weight.lazy_shape().dims::<4>();
    let [n, c, h, w] = x.dims();
    if !(eligible(Kernel::Depthwise, &x) && is_depthwise(conv, c)) {
        return Err(x);
    }
    let (k, s) = (kh, conv.stride[0]);
    let Some(Window { pt, pl, oh, ow, .. }) = window(conv, [h, w]) else {
        return Err(x);
    };
    if ow >= WIDE {
        return Err(x);
    }
    let ops = operands(&conv.weight, conv.bias.as_ref(), x)?;
    let (wts, bias, inp) = ops.slices();
    let geo = Geometry {
        h,
        w,
        ow,
        k,
        s,
        pt,
        pl,
    };
    let mut out = vec![0f32; n * c * oh * ow];
    let isa = Isa::get();
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each_init(Vec::new, |scratch, (p, o)| {
            let ch = p % c;
            let plane = &inp[p * h * w..(p + 1) * h * w];
            let taps = &wts[ch * k * k..(ch + 1) * k * k];
            let b = bias.map_or(0.0, |b| b[ch]);
            isa.depthwise_plane(plane, o, taps, b, &geo, ep, scratch);
        });
    let t = FlexTensor::from_data(TensorData::new(out, [n, c, oh, ow]));
    Ok(from_flex(t))
}

/// True when `conv` is the depthwise layer the kernels handle on `c` input channels: one input
/// channel per group, channel multiplier 1, square kernel, equal strides, no dilation.
pub(crate) fn is_depthwise(conv: &Conv2d, c: usize) -> bool {
    let [c_out, cin_g, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    cin_g == 1
        && conv.groups == c
        && c_out == c
        && kh == kw
        && conv.stride[0] == conv.stride[1]
        && conv.dilation == [1, 1]
}

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
    let [c_out, cin_g, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    let [n, c, h, w] = x.dims();
    if !eligible(Kernel::ConvGemm, &x) || conv.groups != 1 || cin_g != c || conv.dilation != [1, 1]
    {
        return Err(x);
    }
    let [sh, sw] = conv.stride;
    let Some(Window {
        pt,
        pb,
        pl,
        pr,
        oh,
        ow,
    }) = window(conv, [h, w])
    else {
        return Err(x);
    };
    let ops = operands(&conv.weight, conv.bias.as_ref(), x)?;
    let (wts, bias, inp) = ops.slices();
    let (k, pix) = (c * kh * kw, oh * ow);
    let direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt + pb + pl + pr == 0;
    let mut out = match bias {
        Some(b) => preloaded(n * c_out * pix, pix, |i, row| {
            row.fill(MaybeUninit::new(b[i % c_out]))
        }),
        None => vec![0f32; n * c_out * pix],
    };
    let isa = Isa::get();
    if direct && images_apart(n, rayon::current_num_threads()) {
        out.par_chunks_exact_mut(c_out * pix)
            .zip(inp[..n * c * h * w].par_chunks_exact(c * h * w))
            .for_each(|(dst, src)| {
                let (lhs, rhs) = (Mat::rows(wts, k), Mat::rows(src, pix));
                let one_thread = gemm::Parallelism::None;
                gemm_strided([c_out, pix, k], dst, lhs, rhs, bias.is_some(), one_thread);
                if ep != Epilogue::None {
                    isa.epilogue(dst, ep);
                }
            });
    } else {
        let mut cols = if direct {
            Vec::new()
        } else {
            vec![0f32; k * pix]
        };
        for (img, dst) in out.chunks_exact_mut(c_out * pix).enumerate() {
            let src = &inp[img * c * h * w..][..c * h * w];
            let rhs: &[f32] = if direct {
                src
            } else {
                cols.par_chunks_mut(pix).enumerate().for_each(|(row, r)| {
                    let (ci, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
                    let plane = &src[ci * h * w..][..h * w];
                    im2col_row(plane, r, [h, w], [ow, sh, sw], [ky, kx], [pt, pl]);
                });
                &cols
            };
            gemm_rows([c_out, pix, k], dst, wts, rhs, bias.is_some());
            if ep != Epilogue::None {
                dst.par_chunks_mut(CHUNK).for_each(|r| isa.epilogue(r, ep));
            }
        }
    }
    Ok(from_flex(FlexTensor::from_data(TensorData::new(
        out,
        [n, c_out, oh, ow],
    ))))
}

/// `f` over `x`'s batch split into one part per thread, each part through `f` on a thread of
/// its own (a one-thread rayon pool, so every kernel inside runs single-threaded), the
/// results concatenated; `Err(x)` when it does not apply (see [`images_apart`]).
///
/// Why: at batch 8 a MobileNet-style network moves each activation through DRAM between
/// layers (MobileNetV2's first expansion alone is 38 MB, more than the L3), and its short
/// products gain little from a second thread. One part per thread keeps each part's
/// activations in cache from layer to layer; two processes of one thread each had shown
/// 10-13 % more images/s than one process of two threads.
pub fn split_batch(
    x: Tensor<4>,
    f: impl Fn(Tensor<4>) -> Tensor<2> + Sync,
) -> Result<Tensor<2>, Tensor<4>> {
    let threads = rayon::current_num_threads();
    let n = x.dims()[0];
    if !eligible(Kernel::Batch, &x) || threads < 2 || !images_apart(n, threads) {
        return Err(x);
    }
    // One one-thread pool per part, made once. Each part is handed to its pool from a
    // scoped OS thread, which blocks while it waits; handing it over from a rayon worker
    // instead keeps that worker spinning on a core the pools need (measured: half the speed).
    static POOLS: std::sync::OnceLock<Vec<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        (0..threads)
            .map_while(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok())
            .collect()
    });
    if pools.len() < threads {
        return Err(x);
    }
    let parts: Vec<Tensor<4>> = x.chunk(threads, 0);
    let f = &f;
    let outs: Vec<Tensor<2>> = std::thread::scope(|scope| {
        let running: Vec<_> = parts
            .into_iter()
            .zip(pools)
            .map(|(part, pool)| scope.spawn(move || pool.install(|| in_pieces(part, f))))
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    Ok(Tensor::cat(outs, 0))
}

/// Images a thread takes through the network at once in [`split_batch`]: the batch size
/// whose activations stayed in cache (batch 8 on 2 threads). A larger part runs as pieces of
/// at most this many, one after the other; whole, MobileNetV2 at batch 32 ran at half its
/// batch-8 speed.
const PIECE: usize = 4;

/// `f` over `part` in pieces of at most [`PIECE`] images, the results concatenated.
fn in_pieces(part: Tensor<4>, f: &(impl Fn(Tensor<4>) -> Tensor<2> + Sync)) -> Tensor<2> {
    let n = part.dims()[0];
    if n <= PIECE {
        return f(part);
    }
    Tensor::cat(
        part.chunk(n.div_ceil(PIECE), 0)
            .into_iter()
            .map(f)
            .collect(),
        0,
    )
}

/// Whether a batch of `n` 1x1 convolutions runs one image per thread (each a single-threaded
/// gemm with its activation applied while the output is in cache) rather than image after
/// image, each product split over all threads. Why: the 1x1 convolutions of MobileNet-style
/// blocks have short products (`k` = 16-960 over a few thousand pixels), where splitting one
/// product costs more than it gains; per image, MobileNetV2 at batch 8 ran 1.11x and
/// EfficientNet-B0 1.06x faster (three alternating runs). Only when the images divide evenly
/// over the threads, or are many: with 3 images on 2 threads one thread would do two.
fn images_apart(n: usize, threads: usize) -> bool {
    n > 1 && (n.is_multiple_of(threads) || n >= 4 * threads)
}

/// `len` floats in rows of `row_len`, row `i` set by `fill(i, row)` in parallel straight into
/// fresh memory: a gemm output preloaded with its bias. Zero-filling first (`vec![0; len]`)
/// would be one more pass over memory the product then overwrites (an fc1 of ViT-B/16 at
/// batch 8: 19 MB). `fill` must write every element of its row.
fn preloaded(
    len: usize,
    row_len: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    assert!(row_len > 0 && len.is_multiple_of(row_len));
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(i, row)| fill(i, row));
    // SAFETY: every row was written by `fill` (its contract; both callers below write whole
    // rows), and the rows cover `len`, a multiple of `row_len`.
    unsafe { v.set_len(len) };
    v
}

/// `dst [m, n] = lhs [m, k] x rhs [k, n]` (plus what `dst` holds when `accumulate`, a
/// preloaded bias), all row-major and contiguous, split over rayon's threads by `gemm`.
fn gemm_rows([m, n, k]: [usize; 3], dst: &mut [f32], lhs: &[f32], rhs: &[f32], accumulate: bool) {
    gemm_strided(
        [m, n, k],
        dst,
        Mat::rows(lhs, k),
        Mat::rows(rhs, n),
        accumulate,
        gemm::Parallelism::Rayon(0),
    );
}

/// A read-only matrix in a slice: element `(i, j)` at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with rows of `row_len` elements.
    pub(crate) fn rows(data: &'a [f32], row_len: usize) -> Self {
        Mat {
            data,
            rs: row_len,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with rows of `row_len` elements.
    pub(crate) fn cols(data: &'a [f32], row_len: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: row_len,
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst [m, n] (row-major) = lhs [m, k] x rhs [k, n]` (plus what `dst` holds when
/// `accumulate`), operands in any layout [`Mat`] describes.
pub(crate) fn gemm_strided(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert!(dst.len() >= m * n && lhs.fits(m, k) && rhs.fits(k, n));
    // SAFETY: every index the product touches lies inside its slice (asserted above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A linear layer `x W + b` (then `ep`) over all leading dimensions at once: one gemm of
/// `[rows, d_in] x [d_in, d_out]` into an output preloaded with the bias, split over rayon's
/// threads by the `gemm` crate. Burn's linear multiplies each leading index apart (for ViT:
/// one 197-row product per image, batch-parallel) and adds the bias in a second pass.
pub fn linear<const D: usize>(
    lin: &Linear,
    x: Tensor<D>,
    ep: Epilogue,
) -> Result<Tensor<D>, Tensor<D>> {
    let [d_in, d_out] = lin.weight.lazy_shape().dims::<2>();
    let dims = x.dims();
    if !eligible(Kernel::Linear, &x) || dims[D - 1] != d_in {
        return Err(x);
    }
    let ops = operands(&lin.weight, lin.bias.as_ref(), x)?;
    let (wts, bias, inp) = ops.slices();
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut out = match bias {
        Some(b) => preloaded(rows * d_out, d_out, |_, row| {
            row.write_copy_of_slice(&b[..d_out]);
        }),
        None => vec![0f32; rows * d_out],
    };
    // `inp`: its first rows * d_in elements, contiguous from offset 0.
    gemm_rows([rows, d_out, d_in], &mut out, inp, wts, bias.is_some());
    if ep != Epilogue::None {
        let isa = Isa::get();
        out.par_chunks_mut(CHUNK).for_each(|r| isa.epilogue(r, ep));
    }
    let mut shape = dims;
    shape[D - 1] = d_out;
    Ok(from_flex(FlexTensor::from_data(TensorData::new(
        out, shape,
    ))))
}

/// Multi-head scaled dot-product attention, `softmax(Q K^T / sqrt(d_head)) V` per image and
/// head, read straight from the qkv projection `[b, n, 3 * d]` (timm's layout: q, k, v, each
/// head's columns together) and written as `[b, n, d]` with the heads side by side: the
/// strided products need none of the reshapes, permutes and copies around Burn's attention.
/// One rayon task per (image, head), each with its `n x n` scores in cache.
pub fn attention(qkv: Tensor<3>, heads: usize) -> Result<Tensor<3>, Tensor<3>> {
    let [b, n, d3] = qkv.dims();
    if !eligible(Kernel::Attention, &qkv) || heads == 0 || d3 % (3 * heads) != 0 {
        return Err(qkv);
    }
    let (d, dh) = (d3 / 3, d3 / 3 / heads);
    let t = eligible_input(qkv);
    let src = t.storage::<f32>();
    let scale = 1.0 / (dh as f32).sqrt();
    let isa = Isa::get();
    let per_head: Vec<Vec<f32>> = (0..b * heads)
        .into_par_iter()
        .map(|task| {
            let (img, h) = (task / heads, task % heads);
            let base = &src[img * n * d3..][..n * d3];
            let (q, k, v) = (
                &base[h * dh..],
                &base[d + h * dh..],
                &base[2 * d + h * dh..],
            );
            let mut scores = vec![0f32; n * n];
            let mut o = vec![0f32; n * dh];
            // SAFETY: `scores` is row-major [n, n]; Q (i, c) is q[i * d3 + c] and K^T (c, j)
            // is k[j * d3 + c], c < dh, j < n: inside `base` (the three column blocks end
            // at 3d = d3 on every row).
            unsafe {
                gemm::gemm(
                    n,
                    n,
                    dh,
                    scores.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q.as_ptr(),
                    1,
                    d3 as isize,
                    k.as_ptr(),
                    d3 as isize,
                    1,
                    0.0f32,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for row in scores.chunks_exact_mut(n) {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                row.iter_mut().for_each(|x| *x -= max);
                isa.epilogue(row, Epilogue::Exp);
                let inv = 1.0 / row.iter().sum::<f32>();
                row.iter_mut().for_each(|x| *x *= inv);
            }
            // SAFETY: `o` is row-major [n, dh], P = scores [n, n], V (j, c) is v[j * d3 + c].
            unsafe {
                gemm::gemm(
                    n,
                    dh,
                    n,
                    o.as_mut_ptr(),
                    1,
                    dh as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    n as isize,
                    v.as_ptr(),
                    1,
                    d3 as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            o
        })
        .collect();
    let mut out = vec![0f32; b * n * d];
    out.par_chunks_mut(n * d)
        .enumerate()
        .for_each(|(img, dst)| {
            for (h, o) in per_head[img * heads..][..heads].iter().enumerate() {
                for (row, src) in dst.chunks_exact_mut(d).zip(o.chunks_exact(dh)) {
                    row[h * dh..][..dh].copy_from_slice(src);
                }
            }
        });
    Ok(from_flex(FlexTensor::from_data(TensorData::new(
        out,
        [b, n, d],
    ))))
}

/// Max pooling with explicit padding (no dilation, floor mode), as ResNet's 3x3 stride-2
/// stem pool: per output row, the element-wise max of its `k` input rows (contiguous,
/// vectorised), then the max over each `k`-wide window of that row. Padding never wins (as
/// PyTorch's `-inf` padding). One rayon task per plane.
pub fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [n, c, h, w] = x.dims();
    let ([kh, kw], [sh, sw]) = (pool.kernel_size, pool.stride);
    let PaddingConfig2d::Explicit(pt, pl, pb, pr) = pool.padding else {
        return Err(x);
    };
    if !eligible(Kernel::MaxPool, &x)
        || pool.dilation != [1, 1]
        || pool.ceil_mode
        || sh == 0
        || sw == 0
        || h + pt + pb < kh
        || w + pl + pr < kw
        // A window entirely in the padding would have no input to take its max from.
        || pt >= kh
        || pb >= kh
        || pl >= kw
        || pr >= kw
    {
        return Err(x);
    }
    let (oh, ow) = ((h + pt + pb - kh) / sh + 1, (w + pl + pr - kw) / sw + 1);
    let t = eligible_input(x);
    let src = t.storage::<f32>();
    let mut out = vec![0f32; n * c * oh * ow];
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(p, dst)| {
            let plane = &src[p * h * w..][..h * w];
            // The row maximum, padded left and right with -inf.
            let mut rowmax = vec![f32::NEG_INFINITY; pl + w + pr];
            for (oy, orow) in dst.chunks_exact_mut(ow).enumerate() {
                let lo = (oy * sh).saturating_sub(pt);
                let hi = (oy * sh + kh - pt).min(h);
                let m = &mut rowmax[pl..pl + w];
                m.copy_from_slice(&plane[lo * w..][..w]);
                for iy in lo + 1..hi {
                    for (a, &b) in m.iter_mut().zip(&plane[iy * w..][..w]) {
                        *a = if b > *a || b.is_nan() { b } else { *a };
                    }
                }
                for (ox, o) in orow.iter_mut().enumerate() {
                    let win = &rowmax[ox * sw..][..kw];
                    *o = win[1..]
                        .iter()
                        .fold(win[0], |a, &b| if b > a || b.is_nan() { b } else { a });
                }
            }
        });
    Ok(from_flex(FlexTensor::from_data(TensorData::new(
        out,
        [n, c, oh, ow],
    ))))
}

/// One row of the unfolded image: tap (`ky`, `kx`) of one input plane, for every output pixel.
pub(crate) fn im2col_row(
    plane: &[f32],
    row: &mut [f32],
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
            out.fill(0.0);
            continue;
        }
        let src = &plane[iy as usize * w..][..w];
        out[..lo].fill(0.0);
        out[hi..].fill(0.0);
        let first = lo * sw + kx - pl;
        if sw == 1 {
            out[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
        } else {
            for (o, v) in out[lo..hi].iter_mut().zip(src[first..].iter().step_by(sw)) {
                *o = *v;
            }
        }
    }
}

/// The flat f32 storages a convolution kernel reads, each contiguous.
struct Operands {
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    input: FlexTensor,
}

impl Operands {
    fn slices(&self) -> (&[f32], Option<&[f32]>, &[f32]) {
        (
            self.weight.storage::<f32>(),
            self.bias.as_ref().map(|b| b.storage::<f32>()),
            self.input.storage::<f32>(),
        )
    }
}

/// A layer's weight and bias and the input `x` as contiguous flex storages; `Err(x)` when
/// the weight is not on flex. The caller has checked that `x` is eligible.
fn operands<const W: usize, const D: usize>(
    weight: &Param<Tensor<W>>,
    bias: Option<&Param<Tensor<1>>>,
    x: Tensor<D>,
) -> Result<Operands, Tensor<D>> {
    let Some(weight) = into_flex(weight.val()).map(contiguous) else {
        return Err(x);
    };
    let bias = bias.and_then(|b| into_flex(b.val())).map(contiguous);
    let input = eligible_input(x);
    Ok(Operands {
        weight,
        bias,
        input,
    })
}

/// Padding (top, bottom, left, right) and output size of a convolution, as Burn's `Conv2d`
/// computes them.
pub(crate) struct Window {
    pub pt: usize,
    pub pb: usize,
    pub pl: usize,
    pub pr: usize,
    pub oh: usize,
    pub ow: usize,
}

/// `conv`'s [`Window`] on an `h` x `w` input; `None` when the padded input is smaller than the
/// kernel.
pub(crate) fn window(conv: &Conv2d, [h, w]: [usize; 2]) -> Option<Window> {
    let [kh, kw] = conv.kernel_size;
    let [sh, sw] = conv.stride;
    // TensorFlow's SAME: the output is ceil(len / s), the extra pixel goes after.
    let same = |len: usize, k: usize, s: usize| {
        let out = len.div_ceil(s);
        let total = if out > 0 {
            ((out - 1) * s + k).saturating_sub(len)
        } else {
            0
        };
        (total / 2, total - total / 2)
    };
    let ((pt, pb), (pl, pr)) = match conv.padding {
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        PaddingConfig2d::Same => (same(h, kh, sh), same(w, kw, sw)),
        PaddingConfig2d::Explicit(t, l, b, r) => ((t, b), (l, r)),
    };
    if h + pt + pb < kh || w + pl + pr < kw {
        return None;
    }
    Some(Window {
        pt,
        pb,
        pl,
        pr,
        oh: (h + pt + pb - kh) / sh + 1,
        ow: (w + pl + pr - kw) / sw + 1,
    })
}

#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub h: usize,
    pub w: usize,
    pub ow: usize,
    pub k: usize,
    pub s: usize,
    pub pt: usize,
    pub pl: usize,
}

/// The widest instruction set this CPU has, chosen once.
#[derive(Clone, Copy)]
pub(crate) enum Isa {
    Base,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    pub(crate) fn get() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return Isa::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return Isa::Avx2;
                }
            }
            Isa::Base
        })
    }

    /// `o += a * b`, element-wise.
    pub(crate) fn fma(self, o: &mut [f32], a: &[f32], b: &[f32]) {
        match self {
            Isa::Base => fma::<false>(o, a, b),
            // SAFETY: `get` chose these only after detecting the features they enable.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { fma_avx2(o, a, b) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { fma_avx512(o, a, b) },
        }
    }

    fn epilogue(self, x: &mut [f32], ep: Epilogue) {
        match self {
            Isa::Base => epilogue::<false>(x, ep),
            // SAFETY: `get` chose these only after detecting the features they enable.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { epilogue_avx2(x, ep) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { epilogue_avx512(x, ep) },
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn depthwise_plane(
        self,
        inp: &[f32],
        out: &mut [f32],
        taps: &[f32],
        bias: f32,
        g: &Geometry,
        ep: Epilogue,
        scratch: &mut Vec<f32>,
    ) {
        match self {
            Isa::Base => depthwise_plane::<false>(inp, out, taps, bias, g, ep, scratch),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { depthwise_plane_avx2(inp, out, taps, bias, g, ep, scratch) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { depthwise_plane_avx512(inp, out, taps, bias, g, ep, scratch) },
        }
    }
}

/// `o += a * b`; fused (`mul_add`) only where the CPU has FMA, else libm's slow `fmaf`.
#[inline(always)]
fn fma<const FMA: bool>(o: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
        *o = if FMA { a.mul_add(b, *o) } else { *o + a * b };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(o: &mut [f32], a: &[f32], b: &[f32]) {
    fma::<true>(o, a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn fma_avx512(o: &mut [f32], a: &[f32], b: &[f32]) {
    fma::<true>(o, a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn epilogue_avx2(x: &mut [f32], ep: Epilogue) {
    epilogue::<true>(x, ep)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn epilogue_avx512(x: &mut [f32], ep: Epilogue) {
    epilogue::<true>(x, ep)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn depthwise_plane_avx2(
    inp: &[f32],
    out: &mut [f32],
    taps: &[f32],
    bias: f32,
    g: &Geometry,
    ep: Epilogue,
    scratch: &mut Vec<f32>,
) {
    depthwise_plane::<true>(inp, out, taps, bias, g, ep, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn depthwise_plane_avx512(
    inp: &[f32],
    out: &mut [f32],
    taps: &[f32],
    bias: f32,
    g: &Geometry,
    ep: Epilogue,
    scratch: &mut Vec<f32>,
) {
    depthwise_plane::<true>(inp, out, taps, bias, g, ep, scratch)
}

/// `a * b + c`, fused where the CPU has FMA (one instruction, one rounding); without it
/// `mul_add` would call libm's slow software `fmaf`.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `e^x` for f32, branch-free so loops over it vectorise: Cephes' `expf` (range reduction by
/// ln 2 split in two parts, degree-6 polynomial), within 2 ulp of the exact value on
/// [-87, 87]; the input is clamped to that range, which SiLU's use below tolerates.
///
/// Why the integer `n` comes from the float's bits: `n as i32` is a saturating cast, which
/// LLVM emits as eight scalar conversions with NaN checks per vector; that alone made GELU
/// 2.9x slower (4.1 vs 1.45 ns per element).
#[inline(always)]
fn exp<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer without a branch, and leaves that
    // integer in the low mantissa bits: `t`'s bits minus ROUND's bits are `n`.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 87.0);
    let t = madd::<FMA>(x, LOG2E, ROUND);
    let n = t - ROUND;
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits());
    let r = madd::<FMA>(n, -LN2_LO, madd::<FMA>(n, -LN2_HI, x));
    let p = 1.987_569_1e-4_f32;
    let p = madd::<FMA>(p, r, 1.398_199_9e-3);
    let p = madd::<FMA>(p, r, 8.333_452e-3);
    let p = madd::<FMA>(p, r, 4.166_579_6e-2);
    let p = madd::<FMA>(p, r, 1.666_666_5e-1);
    let p = madd::<FMA>(p, r, 0.5);
    let e = madd::<FMA>(p * r, r, r + 1.0);
    e * f32::from_bits(ni.wrapping_add(127) << 23)
}

#[inline(always)]
fn silu<const FMA: bool>(x: f32) -> f32 {
    x / (1.0 + exp::<FMA>(-x))
}

/// `erfc(z)` for `z >= 0`: Numerical Recipes' Chebyshev fit (`erfcc`), relative error below
/// 1.2e-7 everywhere, branch-free.
#[inline(always)]
fn erfc_pos<const FMA: bool>(z: f32) -> f32 {
    let t = 1.0 / madd::<FMA>(0.5, z, 1.0);
    let p = 0.170_872_77_f32;
    let p = madd::<FMA>(p, t, -0.822_152_23);
    let p = madd::<FMA>(p, t, 1.488_515_9);
    let p = madd::<FMA>(p, t, -1.135_204);
    let p = madd::<FMA>(p, t, 0.278_868_07);
    let p = madd::<FMA>(p, t, -0.186_288_06);
    let p = madd::<FMA>(p, t, 0.096_784_18);
    let p = madd::<FMA>(p, t, 0.374_091_96);
    let p = madd::<FMA>(p, t, 1.000_023_7);
    let p = madd::<FMA>(p, t, -1.265_512_2);
    t * exp::<FMA>(madd::<FMA>(-z, z, p))
}

/// `x * Phi(x) = x/2 * erfc(-x / sqrt 2)`; for `x > 0` through `erfc(-y) = 2 - erfc(y)`.
#[inline(always)]
fn gelu<const FMA: bool>(x: f32) -> f32 {
    let e = erfc_pos::<FMA>(x.abs() * std::f32::consts::FRAC_1_SQRT_2);
    0.5 * x * if x > 0.0 { 2.0 - e } else { e }
}

/// `ep` on every element. Plain `for` loops, not `for_each` closures: a closure that is not
/// inlined is compiled without the caller's `target_feature`s, and `mul_add` there becomes a
/// call to libm's `fmaf` per element (seen in a profile: EfficientNet-B0 1.3x slower).
#[inline(always)]
fn epilogue<const FMA: bool>(x: &mut [f32], ep: Epilogue) {
    match ep {
        Epilogue::None => {}
        // `max`/`min` would turn NaN into the bound; PyTorch propagates NaN.
        Epilogue::Relu => {
            for v in x.iter_mut() {
                *v = if *v < 0.0 { 0.0 } else { *v };
            }
        }
        // `clamp` keeps NaN.
        Epilogue::Relu6 => {
            for v in x.iter_mut() {
                *v = v.clamp(0.0, 6.0);
            }
        }
        Epilogue::Silu => {
            for v in x.iter_mut() {
                *v = silu::<FMA>(*v);
            }
        }
        Epilogue::Gelu => {
            for v in x.iter_mut() {
                *v = gelu::<FMA>(*v);
            }
        }
        Epilogue::Exp => {
            for v in x.iter_mut() {
                *v = exp::<FMA>(*v);
            }
        }
    }
}

/// From this output width on, Burn's depthwise kernel is faster (memory-bound maps, where
/// the padded copy costs more than it saves; `cargo bench --bench layers -- depthwise`).
const WIDE: usize = 32;

/// Output columns computed together, in registers (one AVX-512 vector, two AVX2 ones).
const V: usize = 16;

/// One output plane of a depthwise convolution.
///
/// The input plane is first copied into `scratch` with its zero padding made explicit and,
/// for stride `s > 1`, each row split into `s` phases (`x[j*s + p]` -> phase `p`, index `j`),
/// so that every tap reads `V` consecutive floats without bounds or stride. Each block of `V`
/// output columns then accumulates all `k * k` taps in registers, and the activation is
/// applied to each finished output row while it is in cache.
#[inline(always)]
fn depthwise_plane<const FMA: bool>(
    inp: &[f32],
    out: &mut [f32],
    taps: &[f32],
    bias: f32,
    g: &Geometry,
    ep: Epilogue,
    scratch: &mut Vec<f32>,
) {
    let (s, k, h, w) = (g.s, g.k, g.h, g.w);
    let oh = out.len() / g.ow;
    // Padded rows and columns the taps can reach.
    let (rows, cols) = ((oh - 1) * s + k, (g.ow - 1) * s + k);
    // Phase row length, with slack so the last block's vector read stays inside.
    let lp = cols.div_ceil(s) + V;
    scratch.clear();
    scratch.resize(rows * s * lp, 0.0);
    for r in 0..rows {
        let ih = r as isize - g.pt as isize;
        if ih < 0 || ih >= h as isize {
            continue;
        }
        let src = &inp[ih as usize * w..][..w];
        // Input columns that land inside the padded window.
        let first = g.pl;
        let n = w.min(cols.saturating_sub(first));
        if s == 1 {
            scratch[r * lp + first..][..n].copy_from_slice(&src[..n]);
        } else {
            for p in 0..s {
                // The first input column of phase p, and its index within the phase.
                let iw0 = (p + s - first % s) % s;
                if iw0 >= n {
                    continue;
                }
                let dst = &mut scratch[(r * s + p) * lp + (iw0 + first) / s..];
                for (d, v) in dst.iter_mut().zip(src[iw0..n].iter().step_by(s)) {
                    *d = *v;
                }
            }
        }
    }
    for (o, orow) in out.chunks_exact_mut(g.ow).enumerate() {
        let mut ow0 = 0;
        while ow0 < g.ow {
            let mut acc = [bias; V];
            for kh in 0..k {
                let r = o * s + kh;
                for kw in 0..k {
                    let at = (r * s + kw % s) * lp + ow0 + kw / s;
                    let Some(src) = scratch[at..].first_chunk::<V>() else {
                        continue;
                    };
                    let wv = taps[kh * k + kw];
                    for l in 0..V {
                        acc[l] = if FMA {
                            wv.mul_add(src[l], acc[l])
                        } else {
                            acc[l] + wv * src[l]
                        };
                    }
                }
            }
            let n = V.min(g.ow - ow0);
            orow[ow0..ow0 + n].copy_from_slice(&acc[..n]);
            ow0 += V;
        }
        // The row is still in L1; over the whole row the activation vectorises.
        epilogue::<FMA>(orow, ep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn exp_within_two_ulp_of_f64() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 87.0 {
            let want = (x as f64).exp();
            // Both variants: plain mul + add, and fused (software `fmaf` where no FMA).
            for got in [exp::<false>(x), exp::<true>(x)] {
                worst = worst.max(((got as f64 - want) / want).abs());
            }
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
    }

    #[test]
    fn gelu_matches_f64_erf() {
        // 1 + erf(y) in f64: the Taylor series for |y| <= 3, the continued fraction of erfc
        // beyond (directly for y < -3, where 1 + erf would cancel).
        fn one_plus_erf(y: f64) -> f64 {
            let erfc = |z: f64| {
                let mut cf = 0.0;
                for k in (1..80).rev() {
                    cf = (k as f64 / 2.0) / (z + cf);
                }
                (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + cf)
            };
            if y < -3.0 {
                return erfc(-y);
            }
            if y > 3.0 {
                return 2.0 - erfc(y);
            }
            let (mut term, mut sum) = (y, y);
            for n in 1..200 {
                term *= -y * y / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            1.0 + sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        // In the far negative tail f32 rounding of z = |x|/sqrt 2 shifts exp(-z^2) by up to
        // ~1e-5 relative (z^2 reaches 72), on values below 1e-30; absolute error stays < 1e-6.
        let (mut worst_rel, mut worst_abs) = (0f64, 0f64);
        let mut x = -12.0f32;
        while x <= 12.0 {
            let want = 0.5 * x as f64 * one_plus_erf(x as f64 / 2f64.sqrt());
            for got in [gelu::<false>(x) as f64, gelu::<true>(x) as f64] {
                worst_abs = worst_abs.max((got - want).abs());
                if want.abs() > 1e-30 {
                    worst_rel = worst_rel.max(((got - want) / want).abs());
                }
            }
            x += 0.0173;
        }
        assert!(
            worst_rel < 2e-5 && worst_abs < 1e-6,
            "rel {worst_rel} abs {worst_abs}"
        );
    }

    #[test]
    fn activations_match_burn() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 17, 19], Distribution::Normal(0.0, 4.0), &device);
        // Extremes, where a careless exp overflows.
        let x = Tensor::cat(vec![x, Tensor::full([2, 3, 1, 19], -100.0, &device)], 2);
        let x = Tensor::cat(vec![x, Tensor::full([2, 3, 1, 19], 100.0, &device)], 2);
        let want = burn::tensor::activation::silu(x.clone());
        let got = activation(x.clone(), Epilogue::Silu).unwrap_or_else(|_| panic!("fallback"));
        assert!(max_abs_diff(got, want) < 1e-5);
        let want = burn::tensor::activation::gelu(x.clone());
        let got = activation(x.clone(), Epilogue::Gelu).unwrap_or_else(|_| panic!("fallback"));
        assert!(max_abs_diff(got, want) < 1e-5);
        let want = burn::tensor::activation::relu6(x.clone());
        let got = activation(x.clone(), Epilogue::Relu6).unwrap_or_else(|_| panic!("fallback"));
        assert_eq!(max_abs_diff(got, want), 0.0);
        // A shared tensor is copied, not changed under its other owner.
        let keep = x.clone();
        let before = keep.clone().into_data();
        let _ = activation(x, Epilogue::Relu);
        assert_eq!(keep.into_data(), before);
    }

    #[test]
    fn linear_matches_burn_linear() {
        use burn::nn::LinearConfig;
        let device = Device::flex();
        for (d_in, d_out, bias) in [(24, 40, true), (7, 3, false), (64, 96, true)] {
            let lin = LinearConfig::new(d_in, d_out).with_bias(bias).init(&device);
            // A sliced (non-contiguous) 3-D input: the kernel must read it as Burn does.
            let x = Tensor::<3>::random([3, 9, d_in + 2], Distribution::Normal(0.0, 1.0), &device)
                .narrow(2, 1, d_in);
            let want = lin.forward(x.clone());
            let got =
                linear(&lin, x.clone(), Epilogue::None).unwrap_or_else(|_| panic!("fallback"));
            assert_eq!(got.dims(), [3, 9, d_out]);
            let d: f32 = (got - want.clone()).abs().max().into_scalar();
            assert!(d < 1e-5, "{d_in}x{d_out}: {d}");
            let want = burn::tensor::activation::gelu(want);
            let got = linear(&lin, x, Epilogue::Gelu).unwrap_or_else(|_| panic!("fallback"));
            let d: f32 = (got - want).abs().max().into_scalar();
            assert!(d < 1e-5, "{d_in}x{d_out} gelu: {d}");
            // 2-D input (a classifier on pooled features).
            let x = Tensor::<2>::random([5, d_in], Distribution::Normal(0.0, 1.0), &device);
            let want = lin.forward(x.clone());
            let got = linear(&lin, x, Epilogue::None).unwrap_or_else(|_| panic!("fallback"));
            let d: f32 = (got - want).abs().max().into_scalar();
            assert!(d < 1e-5, "{d_in}x{d_out} 2-D: {d}");
        }
        // A wrong width is left to Burn.
        let lin = LinearConfig::new(8, 4).init(&device);
        assert!(linear(&lin, Tensor::<2>::zeros([2, 5], &device), Epilogue::None).is_err());
    }

    #[test]
    fn attention_matches_burn_attention() {
        use burn::tensor::module::attention as burn_attention;
        use burn::tensor::ops::AttentionModuleOptions;
        let device = Device::flex();
        for (b, n, heads, dh) in [(2, 197, 3, 64), (1, 5, 2, 8), (3, 50, 4, 16)] {
            let d = heads * dh;
            let qkv = Tensor::<3>::random([b, n, 3 * d], Distribution::Normal(0.0, 2.0), &device);
            let parts = qkv
                .clone()
                .reshape([b, n, 3, heads, dh])
                .permute([2, 0, 3, 1, 4]);
            let part = |i| parts.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
            let opts = AttentionModuleOptions::default();
            let want = burn_attention(part(0), part(1), part(2), None, None, opts)
                .swap_dims(1, 2)
                .reshape([b, n, d]);
            let got = attention(qkv, heads).unwrap_or_else(|_| panic!("fallback"));
            assert_eq!(got.dims(), [b, n, d]);
            let diff: f32 = (got - want).abs().max().into_scalar();
            assert!(diff < 2e-5, "b {b} n {n} heads {heads}: {diff}");
        }
        // Widths that do not split into q, k, v of `heads` heads are left to Burn.
        assert!(attention(Tensor::<3>::zeros([1, 4, 10], &device), 3).is_err());
    }

    #[test]
    fn max_pool_matches_burn() {
        use burn::nn::pool::MaxPool2dConfig;
        let device = Device::flex();
        let cases = [
            ([3, 3], [2, 2], (1, 1, 1, 1), [2, 3, 112, 112]),
            ([3, 3], [2, 2], (1, 1, 1, 1), [1, 2, 7, 9]),
            ([2, 2], [2, 2], (0, 0, 0, 0), [1, 2, 8, 6]),
            ([3, 2], [1, 2], (2, 0, 1, 1), [2, 1, 5, 8]),
        ];
        for (k, s, (t, l, b, r), shape) in cases {
            let pool = MaxPool2dConfig::new(k)
                .with_strides(s)
                .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
                .init();
            // Negative inputs: a pool that let padding (0) win would be caught.
            let x = Tensor::<4>::random(shape, Distribution::Normal(-3.0, 1.0), &device);
            let want = pool.forward(x.clone());
            let got = max_pool(&pool, x).unwrap_or_else(|_| panic!("fallback"));
            assert_eq!(got.dims(), want.dims(), "{k:?} {s:?}");
            assert_eq!(max_abs_diff(got, want), 0.0, "{k:?} {s:?} {shape:?}");
        }
    }

    type ConvKernel = fn(&Conv2d, Tensor<4>, Epilogue) -> Result<Tensor<4>, Tensor<4>>;

    /// `kernel` equals Burn's `conv.forward` (then `act`), with and without bias.
    fn check_conv(
        kernel: ConvKernel,
        [cin, cout, groups]: [usize; 3],
        (k, s, pad): (usize, usize, PaddingConfig2d),
        [n, h, w]: [usize; 3],
        (ep, act): (Epilogue, fn(Tensor<4>) -> Tensor<4>),
        tol: f32,
    ) {
        let device = Device::flex();
        for bias in [true, false] {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([s, s])
                .with_groups(groups)
                .with_padding(pad.clone())
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
            let want = conv.forward(x.clone());
            let got =
                kernel(&conv, x.clone(), Epilogue::None).unwrap_or_else(|_| panic!("fallback"));
            assert_eq!(got.dims(), want.dims(), "k{k} s{s} {pad:?}");
            assert!(max_abs_diff(got, want.clone()) < tol, "k{k} s{s} {pad:?}");
            let got = kernel(&conv, x, ep).unwrap_or_else(|_| panic!("fallback"));
            assert!(
                max_abs_diff(got, act(want)) < tol,
                "k{k} s{s} {pad:?} {ep:?}"
            );
        }
    }

    #[test]
    fn conv_gemm_matches_burn_conv() {
        let device = Device::flex();
        for (cin, cout, k, s, pad, h, w) in [
            (5, 7, 1, 1, PaddingConfig2d::Explicit(0, 0, 0, 0), 6, 9),
            (5, 7, 1, 2, PaddingConfig2d::Explicit(0, 0, 0, 0), 7, 9),
            (4, 6, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 11),
            (4, 6, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 10),
            (3, 8, 7, 2, PaddingConfig2d::Explicit(3, 3, 3, 3), 17, 15),
            (3, 5, 3, 2, PaddingConfig2d::Same, 11, 8),
            (4, 4, 3, 1, PaddingConfig2d::Valid, 6, 7),
            (4, 4, 3, 3, PaddingConfig2d::Explicit(0, 2, 1, 0), 10, 10),
            (2, 3, 4, 4, PaddingConfig2d::Valid, 16, 12),
        ] {
            let relu = (
                Epilogue::Relu,
                burn::tensor::activation::relu::<4> as fn(_) -> _,
            );
            // Batches of one, of three, and a multiple of the threads (1x1 stride-1
            // convolutions: one image per thread, see `images_apart`).
            let threads = rayon::current_num_threads();
            for n in [1, 3, 2 * threads] {
                check_conv(
                    conv_gemm,
                    [cin, cout, 1],
                    (k, s, pad.clone()),
                    [n, h, w],
                    relu,
                    1e-4,
                );
            }
        }
        assert!(images_apart(8, 2) && images_apart(2, 2) && images_apart(9, 2));
        assert!(!images_apart(1, 2) && !images_apart(3, 2) && !images_apart(6, 4));
        // Grouped convolutions are not this kernel's.
        let grouped = Conv2dConfig::new([4, 4], [3, 3])
            .with_groups(2)
            .init(&device);
        let x = Tensor::<4>::zeros([1, 4, 5, 5], &device);
        assert!(conv_gemm(&grouped, x, Epilogue::None).is_err());
    }

    #[test]
    fn depthwise_matches_burn_conv() {
        let device = Device::flex();
        for (k, s, pad, h, w) in [
            (3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 11),
            (3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 11),
            (5, 2, PaddingConfig2d::Explicit(2, 2, 2, 2), 14, 13),
            (5, 1, PaddingConfig2d::Same, 7, 8),
            (3, 2, PaddingConfig2d::Same, 10, 7),
            (5, 2, PaddingConfig2d::Same, 15, 16),
            (3, 1, PaddingConfig2d::Valid, 6, 5),
            (3, 3, PaddingConfig2d::Explicit(0, 2, 1, 0), 10, 10),
        ] {
            let silu = (
                Epilogue::Silu,
                burn::tensor::activation::silu::<4> as fn(_) -> _,
            );
            check_conv(depthwise, [6, 6, 6], (k, s, pad), [2, h, w], silu, 1e-5);
        }
        // Wide maps are left to Burn's kernel (see WIDE).
        let wide = Conv2dConfig::new([2, 2], [3, 3])
            .with_groups(2)
            .init(&device);
        assert!(
            depthwise(
                &wide,
                Tensor::<4>::zeros([1, 2, 40, 40], &device),
                Epilogue::None
            )
            .is_err()
        );
        // Not depthwise: falls back.
        let dense = Conv2dConfig::new([4, 4], [3, 3]).init(&device);
        let x = Tensor::<4>::zeros([1, 4, 5, 5], &device);
        assert!(depthwise(&dense, x, Epilogue::None).is_err());
    }
}
