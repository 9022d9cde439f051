//! Max pooling.

use super::*;

/// Max pooling with explicit padding (no dilation, floor mode), as ResNet's 3x3 stride-2
/// stem pool: per output row, the element-wise max of its `k` input rows (contiguous,
/// vectorised), then the max over each `k`-wide window of that row. Padding never wins (as
/// PyTorch's `-inf` padding). One rayon task per plane. A bf16 input (activations kept in
/// bf16, see [`bf16::Elem`]) gives a bf16 output: the maximum is one of the inputs.
pub fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [n, c, h, w] = x.dims();
    let bf16_in = bf16_activation(Kernel::MaxPool, &x);
    if !(bf16_in || eligible(Kernel::MaxPool, &x)) {
        return Err(x);
    }
    let Some(geom) = Geom::new(pool, [h, w]) else {
        return Err(x);
    };
    let [oh, ow] = geom.o;
    let t = eligible_input(x);
    Ok(match bf16_in {
        true => from_elems(pool_planes(elems::<u16>(&t), &geom), [n, c, oh, ow]),
        false => from_elems(pool_planes(elems::<f32>(&t), &geom), [n, c, oh, ow]),
    })
}

/// A pooling's input size, output size, window, stride and padding (top, left, right).
#[derive(Debug, Clone)]
pub(crate) struct Geom {
    pub(crate) hw: [usize; 2],
    pub(crate) o: [usize; 2],
    pub(crate) k: [usize; 2],
    pub(crate) s: [usize; 2],
    pub(crate) p: [usize; 3],
}

impl Geom {
    /// `pool` over `[h, w]` planes where the kernels apply: non-empty planes, explicit padding
    /// smaller than the window (a window entirely in the padding would have no input to take
    /// its max from), no dilation, floor mode.
    pub(crate) fn new(pool: &MaxPool2d, [h, w]: [usize; 2]) -> Option<Geom> {
        let ([kh, kw], [sh, sw]) = (pool.kernel_size, pool.stride);
        let PaddingConfig2d::Explicit(pt, pl, pb, pr) = pool.padding else {
            return None;
        };
        let fits = h > 0
            && w > 0
            && pool.dilation == [1, 1]
            && !pool.ceil_mode
            && sh > 0
            && sw > 0
            && h + pt + pb >= kh
            && w + pl + pr >= kw
            && pt.max(pb) < kh
            && pl.max(pr) < kw;
        fits.then(|| Geom {
            hw: [h, w],
            o: [(h + pt + pb - kh) / sh + 1, (w + pl + pr - kw) / sw + 1],
            k: [kh, kw],
            s: [sh, sw],
            p: [pt, pl, pr],
        })
    }
}

/// Every plane of `src` pooled (see [`max_pool`]), one rayon task per plane.
pub(crate) fn pool_planes<T: bf16::Elem>(src: &[T], g: &Geom) -> Vec<T> {
    let ([h, w], [oh, ow]) = (g.hw, g.o);
    let planes = src.len() / (h * w);
    let mut out = vec![T::default(); planes * oh * ow];
    out.par_chunks_mut(oh * ow)
        .zip(src.par_chunks_exact(h * w))
        .for_each(|(dst, plane)| match (T::view(plane), T::view_mut(dst)) {
            (bf16::View::F32(p), bf16::ViewMut::F32(d)) => pool_plane_f32(p, d, g),
            (bf16::View::Bf16(p), bf16::ViewMut::Bf16(d)) => pool_plane_bf16(p, d, g),
            _ => unreachable!("one element type"),
        });
    out
}

// Each compiled for the widest instruction set (a loop in the rayon closure builds for
// baseline x86-64: the bf16 one ran at half the f32 one's speed).
isa::widest!(fn pool_plane_f32(plane: &[f32], dst: &mut [f32], g: &Geom) = pool_plane::<f32>);
isa::widest!(fn pool_plane_bf16(plane: &[u16], dst: &mut [u16], g: &Geom) = pool_plane::<u16>);

/// One plane pooled: per output row, the element-wise maximum of its window's input rows,
/// then each window's maximum along it, in f32 (a bf16 input widened exactly, the maximum
/// one of its values). NaN wins, as in PyTorch.
#[inline(always)]
fn pool_plane<T: bf16::Elem>(plane: &[T], dst: &mut [T], g: &Geom) {
    let ([h, w], [_, ow], [kh, kw], [sh, sw], [pt, pl, pr]) = (g.hw, g.o, g.k, g.s, g.p);
    let wins = |a: f32, b: f32| b > a || b.is_nan();
    // The row maximum, padded left and right with -inf.
    let mut rowmax = vec![f32::NEG_INFINITY; pl + w + pr];
    for (oy, orow) in dst.chunks_exact_mut(ow).enumerate() {
        let lo = (oy * sh).saturating_sub(pt);
        let hi = (oy * sh + kh - pt).min(h);
        let m = &mut rowmax[pl..pl + w];
        for (a, &b) in m.iter_mut().zip(&plane[lo * w..][..w]) {
            *a = b.to_f32();
        }
        for iy in lo + 1..hi {
            for (a, &b) in m.iter_mut().zip(&plane[iy * w..][..w]) {
                let b = b.to_f32();
                *a = if wins(*a, b) { b } else { *a };
            }
        }
        for (ox, o) in orow.iter_mut().enumerate() {
            let win = &rowmax[ox * sw..][..kw];
            let v = win[1..]
                .iter()
                .fold(win[0], |a, &b| if wins(a, b) { b } else { a });
            *o = T::from_f32(v);
        }
    }
}
