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
use rayon::prelude::*;

/// Pixels per block of a weight gradient's inner dimension: a 32-row panel of a block is
/// 32 KB of bf16, so a block's panels stay in cache while the kernel reads them (a whole
/// 112x112 map would be a 0.8 MB panel).
const K_BLOCK: usize = 512;

/// The transpose of the row-major `[rows, cols]` matrix `w`, as a left operand `[cols, rows]`.
pub(crate) fn left_transposed(w: &[f32], rows: usize, cols: usize) -> PackedA {
    let t = transpose(w, rows, cols);
    PackedA::pack(&t, cols, rows)
}

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

/// `dwt [rows, c_out] = col [rows, pix] x dy^T` (plus what `dwt` holds when `accumulate`) for
/// one image's `dy [c_out, pix]`: a weight gradient, transposed, with the pixels split into
/// blocks added in order (the same bits for any number of threads). The transposed form
/// gathers the strided operand from `dy`, whose rows are at most a few hundred channels,
/// instead of from the unfolded image (thousands of rows for a 3x3 layer).
pub(crate) fn weight_grad_t(
    kernel: Bf16Kernel,
    col: &[f32],
    dy: &[f32],
    [rows, c_out, pix]: [usize; 3],
    dwt: &mut [f32],
    accumulate: bool,
) {
    for (j, p0) in (0..pix).step_by(K_BLOCK).enumerate() {
        let len = (pix - p0).min(K_BLOCK);
        let a = PackedA::pack_strided(&col[p0..], rows, len, pix);
        let b = PackedB::pack_rows(len, c_out, |r, row| {
            for (co, v) in row.iter_mut().enumerate() {
                *v = dy[co * pix + p0 + r];
            }
        });
        bf16::gemm(kernel, &a, &b, dwt, accumulate || j > 0, Epilogue::None);
    }
}

/// The row-major `[rows, cols]` matrix `src` as `[cols, rows]`, in 32x32 tiles split over
/// the threads. Why tiles: written element by element, every store of a weight-sized
/// transpose missed the cache (11 % of a bf16 ResNet-50 step in `perf`).
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const T: usize = 32;
    let mut t = vec![0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return t;
    }
    // Task `b` writes output rows (source columns) `b * T..`, tile by tile along the source rows.
    t.par_chunks_mut(T * rows).enumerate().for_each(|(b, dst)| {
        let (c0, width) = (b * T, dst.len() / rows);
        for r0 in (0..rows).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                let row = &src[r * cols + c0..][..width];
                for (c, &v) in row.iter().enumerate() {
                    dst[c * rows + r] = v;
                }
            }
        }
    });
    t
}
