//! bf16 products for the training convolutions (`committee train --dtype bf16`): operands
//! rounded to bf16 as they are packed, f32 accumulation, and f32 everywhere else (weights,
//! activations, gradients and the optimiser's master copy), as PyTorch's CPU autocast treats
//! convolutions in training.
//!
//! Why: on AMX (and AVX512-BF16) a bf16 product runs several times faster than `gemm`'s f32
//! one, and the products are 47-57 % of a ResNet-50 step (docs/benchmarks.md). Each product of
//! a step gets its own packed operands (a weight changes every step, so nothing is cached).

use crate::cpu::bf16::{self, Bf16Kernel, PackedA, PackedB};
use crate::cpu::isa::Epilogue;

/// Pixels per block of a weight gradient's inner dimension: a 32-row panel of a block is
/// 32 KB of bf16, so a block's panels stay in cache while the kernel reads them (a whole
/// 112x112 map would be a 0.8 MB panel).
const K_BLOCK: usize = 512;

/// `dst [m, n] = a x b` for `a` `[m, k]` and the row-major `[k, n]` matrix `b`.
pub(crate) fn product(
    kernel: Bf16Kernel,
    a: &PackedA,
    b: &[f32],
    [k, n]: [usize; 2],
    dst: &mut [f32],
) {
    let b = PackedB::pack(b, k, n);
    bf16::gemm(kernel, a, &b, dst, false, Epilogue::None);
}

/// [`product`] into memory not yet written (every element of `dst[..m * n]` stored once).
pub(crate) fn product_into(
    kernel: Bf16Kernel,
    a: &PackedA,
    b: &[f32],
    [k, n]: [usize; 2],
    dst: &mut [std::mem::MaybeUninit<f32>],
) {
    let b = PackedB::pack(b, k, n);
    bf16::gemm_into(kernel, a, &b, dst, bf16::Bias::None, Epilogue::None);
}

/// How many images one weight-gradient product sums (see [`weight_grad`]): as many as fill
/// [`K_BLOCK`] pixels, each image's padded to a multiple of 32. Why: ResNet-50's last stage
/// (7x7 maps, 49 pixels) had one product per image, each of which read and wrote the whole
/// gradient (up to 9 MB) for 49 steps of its inner dimension.
/// One image per product for f32 products (`half` `None`), and never more than the batch's
/// `n`. `COMMITTEE_BF16_WGRAD_IMAGES=0`: one image per product (to time the two).
pub(crate) fn images_per_product(half: Option<Bf16Kernel>, pix: usize, n: usize) -> usize {
    match half.is_some() && IMAGES.on() {
        true => (K_BLOCK / (pix.div_ceil(32).max(1) * 32)).clamp(1, n.max(1)),
        false => 1,
    }
}

static IMAGES: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_BF16_WGRAD_IMAGES"));

/// Turns several images per bf16 weight-gradient product on or off for the process, over
/// `COMMITTEE_BF16_WGRAD_IMAGES` (to alternate the two in one process:
/// `examples/train_conv_rate.rs`).
pub fn set_images_per_product(on: bool) {
    IMAGES.set(on)
}

/// `dw [c_out, rows] = sum over images i of dy_i [c_out, pix] x col_i^T` (plus what `dw`
/// holds when `accumulate`) for the images' `col_i [rows, pix]`: a weight gradient. One
/// image: its pixels split into blocks added in order; several (small maps, see
/// [`images_per_product`]): one product over all their pixels side by side. Either way the
/// same bits for any number of threads. Both operands are windows of row-major matrices,
/// each row converted as one contiguous run.
pub(crate) fn weight_grad(
    kernel: Bf16Kernel,
    cols: &[&[f32]],
    dys: &[&[f32]],
    [rows, c_out, pix]: [usize; 3],
    dw: &mut [f32],
    accumulate: bool,
) {
    assert_eq!(cols.len(), dys.len(), "one gradient per image");
    if let ([col], [dy]) = (cols, dys) {
        for (j, p0) in (0..pix).step_by(K_BLOCK).enumerate() {
            let len = (pix - p0).min(K_BLOCK);
            let a = PackedA::pack_strided(&dy[p0..], c_out, len, pix);
            let b = PackedB::pack_transposed(&col[p0..], len, rows, pix);
            bf16::gemm(kernel, &a, &b, dw, accumulate || j > 0, Epilogue::None);
        }
        return;
    }
    let a = PackedA::pack_segments(dys, c_out, pix, pix);
    let b = PackedB::pack_transposed_segments(cols, pix, rows, pix);
    bf16::gemm(kernel, &a, &b, dw, accumulate, Epilogue::None);
}
