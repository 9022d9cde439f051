//! Max pooling.

use super::*;

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
    Ok(from_vec(out, [n, c, oh, ow]))
}
