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
