//! Multi-head attention read straight from the qkv projection.

use super::*;

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
    let dims = Heads {
        b,
        n,
        heads,
        dh: d3 / 3 / heads,
    };
    let t = eligible_input(qkv);
    let src = t.storage::<f32>();
    let out = match crate::precision::bf16_kernel() {
        // Each head's product written straight into its columns of the output: gathered
        // afterwards, the heads' outputs were one more copy of the block's width.
        Some(kern) => {
            let len = b * n * dims.d();
            let mut out = Vec::with_capacity(len);
            let dst = bf16::Out(out.as_mut_ptr());
            (0..b * heads)
                .into_par_iter()
                .for_each(|task| dims.head_bf16(kern, src, task, dst));
            // SAFETY: the tasks wrote every (image, head)'s `n x dh` block: all `len`.
            unsafe { out.set_len(len) };
            out
        }
        None => {
            let per_head: Vec<Vec<f32>> = (0..b * heads)
                .into_par_iter()
                .map(|task| dims.head(src, task).1)
                .collect();
            dims.join(&per_head, 1)
        }
    };
    Ok(from_vec(out, [b, n, dims.d()]))
}

/// The sizes of one multi-head attention over timm's qkv layout `[b, n, 3 d]`, and the
/// per-(image, head) steps the inference kernel and the training op share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub(crate) b: usize,
    pub(crate) n: usize,
    pub(crate) heads: usize,
    pub(crate) dh: usize,
}

impl Heads {
    pub(crate) fn d(&self) -> usize {
        self.heads * self.dh
    }

    pub(crate) fn d3(&self) -> usize {
        3 * self.d()
    }

    pub(crate) fn scale(&self) -> f32 {
        1.0 / (self.dh as f32).sqrt()
    }

    /// Task `task`'s (image, head) Q, K and V: slices starting at the head's first column
    /// of the image's rows (row stride `d3`).
    pub(crate) fn qkv<'a>(&self, src: &'a [f32], task: usize) -> (&'a [f32], &'a [f32], &'a [f32]) {
        let (img, h) = (task / self.heads, task % self.heads);
        let base = &src[img * self.n * self.d3()..][..self.n * self.d3()];
        let d = self.d();
        (
            &base[h * self.dh..],
            &base[d + h * self.dh..],
            &base[2 * d + h * self.dh..],
        )
    }

    /// One (image, head): the probabilities `P = softmax(s Q K^T)` `[n, n]` and the output
    /// `P V` `[n, dh]`, with the `n x n` scores in cache.
    pub(crate) fn head(&self, src: &[f32], task: usize) -> (Vec<f32>, Vec<f32>) {
        let (n, dh, d3) = (self.n, self.dh, self.d3());
        let (q, k, v) = self.qkv(src, task);
        let mut p = vec![0f32; n * n];
        product(&mut p, [n, n, dh], (q, d3, 1), (k, 1, d3), self.scale());
        p.chunks_exact_mut(n).for_each(softmax);
        let mut o = vec![0f32; n * dh];
        product(&mut o, [n, dh, n], (&p, n, 1), (v, d3, 1), 1.0);
        (p, o)
    }

    /// [`Heads::head`]'s output `P V` with both products in bf16 on `kern` (`--dtype bf16`, as
    /// PyTorch's autocast runs `scaled_dot_product_attention`), the scores and softmax in f32.
    /// Why: in f32 (through `gemm`, strided operands of 64 columns) attention ran at ~23
    /// GMAC/s per core, 12 % of ViT-B/16's bf16 forward for 4 % of its multiply-adds.
    /// Written into `out`, the `[b, n, d]` output of all tasks, at this task's image and
    /// head columns.
    pub(crate) fn head_bf16(
        &self,
        kern: bf16::Bf16Kernel,
        src: &[f32],
        task: usize,
        out: bf16::Out,
    ) {
        let (n, dh, d3) = (self.n, self.dh, self.d3());
        let (q, k, v) = self.qkv(src, task);
        let qa = bf16::PackedA::pack_strided(q, n, dh, d3);
        let kt = bf16::PackedB::pack_transposed(k, dh, n, d3);
        let mut p = bf16::gemm_new(kern, &qa, &kt, bf16::Bias::None, Epilogue::None);
        let s = self.scale();
        p.chunks_exact_mut(n).for_each(|row| {
            scale(row, s);
            softmax(row);
        });
        let pa = bf16::PackedA::pack(&p, n, n);
        let vb = bf16::PackedB::pack_rows(n, dh, |r, row| row.copy_from_slice(&v[r * d3..][..dh]));
        let (img, h) = (task / self.heads, task % self.heads);
        let d = self.d();
        // SAFETY: `out` holds `b * n * d` floats (the caller); this task alone writes rows
        // `img * n ..` at columns `h * dh .. + dh`, `d` apart.
        unsafe {
            let at = out.get().add(img * n * d + h * dh);
            bf16::gemm_into_rows(kern, &pa, &vb, at, d, bf16::Bias::None, Epilogue::None);
        }
    }

    /// Per-task blocks of `parts` matrices `[n, dh]` each (one per task, tasks in (image,
    /// head) order) joined into `[b, n, parts d]`: block `part` of head `h` at columns
    /// `part d + h dh` (the output for one part, the qkv gradient for three).
    pub(crate) fn join<T: AsRef<[f32]> + Sync>(&self, per_task: &[T], parts: usize) -> Vec<f32> {
        let (n, dh, d) = (self.n, self.dh, self.d());
        let row = parts * d;
        let mut out = vec![0f32; self.b * n * row];
        out.par_chunks_mut(n * row)
            .enumerate()
            .for_each(|(img, dst)| {
                for (h, g) in per_task[img * self.heads..][..self.heads]
                    .iter()
                    .enumerate()
                {
                    for (part, g) in g.as_ref().chunks_exact(n * dh).enumerate() {
                        for (r, src) in dst.chunks_exact_mut(row).zip(g.chunks_exact(dh)) {
                            r[part * d + h * dh..][..dh].copy_from_slice(src);
                        }
                    }
                }
            });
        out
    }
}

/// `dst [m, n] (row-major, overwritten) = scale * lhs [m, k] x rhs [k, n]`, each operand given
/// as (slice, row stride, column stride), on the calling thread (one task per head).
pub(crate) fn product(
    dst: &mut [f32],
    mnk: [usize; 3],
    (data, rs, cs): (&[f32], usize, usize),
    (rdata, rrs, rcs): (&[f32], usize, usize),
    scale: f32,
) {
    let lhs = Mat { data, rs, cs };
    let rhs = Mat {
        data: rdata,
        rs: rrs,
        cs: rcs,
    };
    gemm_scaled(mnk, dst, lhs, rhs, false, scale, gemm::Parallelism::None);
}

/// `row = softmax(row)` in place.
pub(crate) fn softmax(row: &mut [f32]) {
    let max = row_max(row);
    shift(row, -max);
    Isa::get().epilogue(row, Epilogue::Exp);
    scale(row, 1.0 / super::train::norm::plane_sum(row));
}

/// Lanes of the row max (the sum is BatchNorm's `plane_sum`): with one running value, each
/// step waited on the last (four cycles per element), and a ViT-B/16 forward spent about
/// half its attention time in the max and the sum of the score rows.
const LANES: usize = 16;

crate::cpu::isa::widest!(fn row_max(x: &[f32]) -> f32 = row_max_body);
crate::cpu::isa::widest!(fn shift(x: &mut [f32], by: f32) = shift_body);
crate::cpu::isa::widest!(fn scale(x: &mut [f32], by: f32) = scale_body);

/// The largest element, NaNs ignored (as `f32::max` does); `-inf` for an empty row.
#[inline(always)]
fn row_max_body(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let (chunks, tail) = x.as_chunks::<LANES>();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    tail.iter()
        .chain(&acc)
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v))
}

#[inline(always)]
fn shift_body(x: &mut [f32], by: f32) {
    for v in x.iter_mut() {
        *v += by;
    }
}

#[inline(always)]
fn scale_body(x: &mut [f32], by: f32) {
    for v in x.iter_mut() {
        *v *= by;
    }
}
