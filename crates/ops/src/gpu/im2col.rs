//! Dense convolutions on GPU devices as one matrix product over the unfolded image (im2col),
//! composed of Burn's tensor ops, so autodiff gives both gradients: the weight's as matrix
//! products over the unfolded image, the input's as the adjoint of the unfolding (strided
//! slice-assigns into the padded input).
//!
//! Why: Burn 0.22 on wgpu has implicit-GEMM convolution only with tensor-core tiles, which f32
//! never reaches, so every f32 3x3, 7x7 and strided convolution runs `conv_direct` (~840
//! GMAC/s for 3x3 on an H100, ~200 for 1x1) while its matmul ran ViT's linear layers at
//! 3,000-6,500 GMAC/s (docs/benchmarks.md, "GPU"). The unfolding costs `kh * kw` copies of the
//! input, memory-bound work that a GPU does far faster than conv_direct's arithmetic.
//!
//! Two layouts, chosen by `COMMITTEE_GPU_IM2COL`:
//! - `batched` (default): columns `[B, C*kh*kw, OH*OW]`, product `W[1, O, C*kh*kw] x cols`,
//!   the output is channels-first as it comes out (no transpose); the weight gradient is one
//!   product per image summed over the batch.
//! - `channel`: columns `[C*kh*kw, B*OH*OW]`, one product `W[O, C*kh*kw] x cols`, output and
//!   columns transposed once each; the weight gradient is one product.
//! - `0`: Burn's convolution, to compare.
//! - `all`: `batched` for every dense convolution, without the rule below.
//!
//! Grouped convolutions (depthwise included) keep Burn's path, and so, in inference, do small
//! batches and stems, by measurement on an H200 (docs/gpu-h200-2026-12-04/switches.txt): at
//! batch 1 the unfolded product lost to Burn's one kernel (ResNet-50's sixteen 3x3 layers 24
//! vs 10 ms: launch-bound, and unfolding adds `kh*kw + 1` kernels per layer), at batch 8 it
//! won (the whole ResNet-50 29.5 vs 41.4 ms); a stem (at most 4 input channels, so a product
//! with 27-147 terms over a large map) lost at every batch measured (ResNet-50's 7x7 stem 2.2
//! vs 0.5 ms at batch 1; 15 ms, 249 GMAC/s at batch 32). Training was measured with every
//! dense convolution unfolded (ResNet-50 step 2.7x faster with the GPU BatchNorm), so there
//! the rule does not apply.

use burn::nn::conv::Conv2d;
use burn::tensor::ops::PadMode;
use burn::tensor::{Slice, Tensor};

use crate::backend::is_cpu;
use crate::cpu::{Window, window};

/// How dense convolutions run on GPU devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Im2col {
    /// Burn's convolution.
    Off,
    /// One product per image: `[1, O, CK] x [B, CK, L]`.
    Batched,
    /// One product for the batch: `[O, CK] x [CK, B*L]`.
    Channel,
}

impl Im2col {
    /// The form `COMMITTEE_GPU_IM2COL` names (`0`, `batched`, `channel`, `all`) and whether
    /// the inference rule applies (not with `all`); `batched` with the rule when unset or
    /// unknown.
    pub fn get() -> (Im2col, bool) {
        static MODE: std::sync::OnceLock<(Im2col, bool)> = std::sync::OnceLock::new();
        *MODE.get_or_init(|| match std::env::var("COMMITTEE_GPU_IM2COL").as_deref() {
            Ok("0") | Ok("off") => (Im2col::Off, true),
            Ok("channel") => (Im2col::Channel, true),
            Ok("all") => (Im2col::Batched, false),
            _ => (Im2col::Batched, true),
        })
    }
}

/// In inference, the smallest batch the unfolded product pays at (see the module's doc).
const MIN_BATCH: usize = 8;
/// In inference, convolutions with at most this many input channels (stems) keep Burn's.
const STEM_CHANNELS: usize = 4;

/// Whether the measured rule sends this inference convolution to Burn's kernel.
fn burns_is_faster(x: &Tensor<4>) -> bool {
    let [b, c, _, _] = x.dims();
    !x.device().is_autodiff() && (b < MIN_BATCH || c <= STEM_CHANNELS)
}

/// `conv(x)` as an unfolded matrix product on GPU devices, inference and training alike;
/// `Err(x)` on CPU devices, for grouped convolutions, for inference where Burn's kernel was
/// measured faster (batches under 8, stems), when switched off, or when the padded input is
/// smaller than the kernel.
pub fn conv_im2col(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let (mode, rule) = Im2col::get();
    if mode == Im2col::Off
        || conv.groups != 1
        || conv.dilation != [1, 1]
        || is_cpu(&x.device())
        || (rule && burns_is_faster(&x))
    {
        return Err(x);
    }
    conv_im2col_with(conv, x, mode)
}

/// [`conv_im2col`] in the given layout, whatever the device (the tests compare it with Burn's
/// convolution on flex too).
pub fn conv_im2col_with(conv: &Conv2d, x: Tensor<4>, mode: Im2col) -> Result<Tensor<4>, Tensor<4>> {
    let [o, c, kh, kw] = conv.weight.dims();
    let [b, ci, h, w] = x.dims();
    if mode == Im2col::Off || ci != c || conv.groups != 1 || conv.dilation != [1, 1] {
        return Err(x);
    }
    let Some(win) = window(conv, [h, w]) else {
        return Err(x);
    };
    let (oh, ow, k) = (win.oh, win.ow, kh * kw);
    let cols = unfold(x, conv, &win, [oh, ow]);
    let weight = conv.weight.val().reshape([o, c * k]);
    let y = match mode {
        Im2col::Batched => {
            // [B, C, K, OH, OW] -> [B, C*K, L]: channel-major rows, as the weight's columns.
            let cols = cols.reshape([b, c * k, oh * ow]);
            weight.unsqueeze::<3>().matmul(cols).reshape([b, o, oh, ow])
        }
        Im2col::Channel | Im2col::Off => {
            let cols = cols.permute([1, 2, 0, 3, 4]).reshape([c * k, b * oh * ow]);
            weight.matmul(cols).reshape([o, b, oh, ow]).swap_dims(0, 1)
        }
    };
    Ok(match &conv.bias {
        Some(bias) => y + bias.val().reshape([1, o, 1, 1]),
        None => y,
    })
}

/// The unfolded input `[B, C, kh*kw, OH, OW]`: for each kernel tap, the padded input read at
/// that offset with the convolution's stride. A 1x1 stride-1 unpadded convolution needs no
/// copy at all.
fn unfold(x: Tensor<4>, conv: &Conv2d, win: &Window, [oh, ow]: [usize; 2]) -> Tensor<5> {
    let [kh, kw] = conv.kernel_size;
    let [sh, sw] = conv.stride;
    let [b, c, _, _] = x.dims();
    let padded = if win.pt + win.pb + win.pl + win.pr > 0 {
        x.pad([(win.pt, win.pb), (win.pl, win.pr)], PadMode::Constant(0.0))
    } else {
        x
    };
    if kh == 1 && kw == 1 && sh == 1 && sw == 1 {
        return padded.reshape([b, c, 1, oh, ow]);
    }
    let tap = |i: usize, j: usize| {
        let rows = Slice::new(
            i as isize,
            Some((i + (oh - 1) * sh + 1) as isize),
            sh as isize,
        );
        let cols = Slice::new(
            j as isize,
            Some((j + (ow - 1) * sw + 1) as isize),
            sw as isize,
        );
        padded
            .clone()
            .slice([Slice::full(), Slice::full(), rows, cols])
    };
    let taps: Vec<Tensor<4>> = (0..kh)
        .flat_map(|i| (0..kw).map(move |j| (i, j)))
        .map(|(i, j)| tap(i, j))
        .collect();
    Tensor::stack(taps, 2)
}
