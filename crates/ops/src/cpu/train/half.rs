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

/// `dw [c_out, rows] = dy [c_out, pix] x col^T` (plus what `dw` holds when `accumulate`) for
/// one image's `col [rows, pix]`: a weight gradient, with the pixels split into blocks added
/// in order (the same bits for any number of threads). Both operands are windows of
/// row-major matrices, each row converted as one contiguous run.
pub(crate) fn weight_grad(
    kernel: Bf16Kernel,
    col: &[f32],
    dy: &[f32],
    [rows, c_out, pix]: [usize; 3],
    dw: &mut [f32],
    accumulate: bool,
) {
    for (j, p0) in (0..pix).step_by(K_BLOCK).enumerate() {
        let len = (pix - p0).min(K_BLOCK);
        let a = PackedA::pack_strided(&dy[p0..], c_out, len, pix);
        let b = PackedB::pack_transposed(&col[p0..], len, rows, pix);
        bf16::gemm(kernel, &a, &b, dw, accumulate || j > 0, Epilogue::None);
    }
}
