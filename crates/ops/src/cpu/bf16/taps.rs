//! Stride-1 convolutions as bf16 products over the padded image itself (an implicit GEMM,
//! on AMX tiles or AVX512-BF16): each kernel tap is a product of that tap's weights with the image shifted by the
//! tap's offset, all taps accumulated in the same tiles.
//!
//! Why: unfolded, a 3x3 convolution converts and packs every input value nine times (one
//! row per channel and tap); the unfolding and packing were a fifth of ResNet-50's bf16
//! forward. Here each value is converted once. The image is zero-padded and flattened with
//! its padded width `wp`, so output `(oy, ox)` is grid column `oy * wp + ox` and tap
//! `(ky, kx)` reads grid column `oy * wp + ox + ky * wp + kx`: one offset per tap, no bounds.
//! The grid's last `wp - ow` columns of each row are computed and dropped (3 % of a 56x56
//! map's work, 29 % of a 7x7 one's).

use super::*;

/// One image, zero-padded and flattened, as channel pairs interleaved along the grid
/// ("VNNI": `data[(p * len + j) * 2 + (ch % 2)]` for channel `ch` in pair `p = ch / 2` at grid
/// column `j`), channels padded to a multiple of 32.
pub struct PaddedImage {
    data: Vec<u16>,
    /// Grid columns per channel pair: every column a tile of any tap may read.
    len: usize,
}

/// Where a stride-1 convolution's taps read: the padded grid and the tap offsets.
#[derive(Debug, Clone)]
pub struct Taps {
    /// Input channels, and rounded up to 32.
    pub c: usize,
    pub kc_pad: usize,
    pub h: usize,
    pub w: usize,
    /// Padding before the first row and column.
    pub pt: usize,
    pub pl: usize,
    /// Padded width: the grid's row length.
    pub wp: usize,
    pub oh: usize,
    pub ow: usize,
    /// Each tap's grid offset, `ky * wp + kx`, in the weight's tap order.
    pub offs: Vec<usize>,
}

impl Taps {
    /// `[kh, kw]` taps over a `[c, h, w]` image padded by `[top, bottom, left, right]`, stride 1.
    pub fn new(c: usize, [h, w]: [usize; 2], [kh, kw]: [usize; 2], pads: [usize; 4]) -> Taps {
        let [pt, pb, pl, pr] = pads;
        let wp = w + pl + pr;
        Taps {
            c,
            kc_pad: c.div_ceil(BLOCK) * BLOCK,
            h,
            w,
            pt,
            pl,
            wp,
            oh: (h + pt + pb + 1).saturating_sub(kh),
            ow: (wp + 1).saturating_sub(kw),
            offs: (0..kh * kw).map(|t| (t / kw) * wp + t % kw).collect(),
        }
    }

    /// Grid columns computed: every output row at the grid's width.
    fn cols(&self) -> usize {
        self.oh * self.wp
    }

    /// Grid columns an image holds: the computed ones in whole blocks, shifted by the largest
    /// offset, the padded image itself, and a block of slack for the row writes.
    fn len(&self) -> usize {
        let reach = self.cols().div_ceil(BLOCK) * BLOCK + self.offs.iter().max().unwrap_or(&0);
        let grid = (self.h + self.pt) * self.wp;
        reach.max(grid) + BLOCK
    }
}

impl PaddedImage {
    /// Packs the image `[c, h, w]` in `src`'s first `c * h * w` elements.
    pub fn pack<T: Elem>(src: &[T], t: &Taps) -> PaddedImage {
        let (h, w) = (t.h, t.w);
        assert!(src.len() >= t.c * h * w, "image too short");
        let len = t.len();
        let total = t.kc_pad / 2 * len * 2;
        let mut data: Vec<u16> = Vec::with_capacity(total);
        // Zeros only where no pixel goes (padding, and channel pairs past `c`), the pixels
        // written once. Why: zeroing the whole image first and then writing its pixels over
        // the zeros was ~3 % of ResNet-50's bf16 forward.
        let zero = |s: &mut [MaybeUninit<u16>]| s.fill(MaybeUninit::new(0));
        data.spare_capacity_mut()[..total]
            .par_chunks_mut(2 * len)
            .enumerate()
            .for_each(|(p, pair)| {
                if 2 * p >= t.c {
                    return zero(pair);
                }
                // Row `iy`'s pixels start at `start(iy)` (2 values per grid column).
                let start = |iy: usize| ((iy + t.pt) * t.wp + t.pl) * 2;
                let mut at = 0;
                for iy in 0..h {
                    zero(&mut pair[at..start(iy)]);
                    at = start(iy) + 2 * w;
                }
                zero(&mut pair[at..]);
                let plane = |ch: usize| (ch < t.c).then(|| &src[ch * h * w..][..h * w]);
                let (r0, r1) = (plane(2 * p), plane(2 * p + 1));
                // In order: a row's last block may spill zeros into the next row's start.
                for (iy, row) in r0.into_iter().flat_map(|r| r.chunks_exact(w)).enumerate() {
                    let r1 = r1.map(|r| &r[iy * w..][..w]);
                    interleave_row(row, r1, &mut pair[start(iy)..]);
                }
            });
        // SAFETY: every element of every pair was written above: the padding and the pairs
        // past `c` zeroed, each row's `2 * w` values by `interleave_row`.
        unsafe { data.set_len(total) };
        PaddedImage { data, len }
    }
}

/// `dst [m, oh, ow] = ep(bias + conv(image))` for a convolution whose weights `a` were packed
/// by tap ([`cache::left_taps`]: row `o` holds tap 0's `kc_pad` channels, then tap 1's, ...),
/// on `kernel` (AMX or AVX512-BF16; emulated for the tests), in f32 or rounded to bf16
/// ([`Elem`]). Each output element is written once. The
/// bias is per output channel (and a residual per output element): a per-column bias would
/// be indexed by the padded grid's columns, not the output's, so it is refused.
pub fn conv_into<T: Elem>(
    kernel: Bf16Kernel,
    a: &PackedA,
    img: &PaddedImage,
    t: &Taps,
    dst: &mut [MaybeUninit<T>],
    bias: Bias,
    ep: Epilogue,
) {
    let m = a.m;
    let ka = a.k_pad;
    assert_eq!(ka, t.offs.len() * t.kc_pad, "weights packed for other taps");
    assert!(dst.len() >= m * t.oh * t.ow, "output too short");
    bias.assert_fits(m, t.oh * t.ow);
    assert!(
        !matches!(bias, Bias::Columns(_)),
        "a convolution's bias is per output channel"
    );
    assert!(kernel.available(), "{} unavailable", kernel.name());
    let plane = t.oh * t.ow;
    let n = t.cols();
    let out = Out16(dst.as_mut_ptr().cast());
    for_each_block(a, n, |i0, pa, j0, c| {
        block_taps(kernel, pa, ka, t, img, j0, &mut c.0);
        // The block's columns, one grid row at a time, the dropped columns skipped.
        let stop = (j0 + BLOCK).min(n);
        let mut segs = [Seg {
            col: 0,
            len: 0,
            at: 0,
            res_at: 0,
        }; BLOCK];
        let mut runs = 0;
        let mut j = j0;
        while j < stop {
            let (oy, ox) = (j / t.wp, j % t.wp);
            let end = stop.min(oy * t.wp + t.ow);
            if ox < t.ow {
                let at = i0 * plane + oy * t.ow + ox;
                segs[runs] = Seg {
                    col: j - j0,
                    len: end - j,
                    at,
                    res_at: at,
                };
                runs += 1;
            }
            // Past the row's outputs: the next grid row.
            j = (oy + 1) * t.wp;
        }
        let rows = BlockRows {
            i0,
            j0,
            rows: (m - i0).min(BLOCK),
            segs: &segs[..runs],
            stride: plane,
            res_stride: plane,
        };
        // SAFETY: output rows i0.., the pixels of the block's grid columns: inside `dst`
        // (asserted), and only this block writes them.
        unsafe {
            write_block(
                &mut c.0,
                &rows,
                Start::Bias(bias),
                ep,
                out.get().cast::<T>(),
            )
        };
    });
}

/// One output block (rows of the panel `a`, grid columns `j0..j0 + 32`) on `kernel`.
fn block_taps(
    kernel: Bf16Kernel,
    a: &[u16],
    ka: usize,
    t: &Taps,
    img: &PaddedImage,
    j0: usize,
    c: &mut [f32; BLOCK * BLOCK],
) {
    let (image, len, offs, kc_pad) = (&img.data[..], img.len, &t.offs[..], t.kc_pad);
    match kernel {
        // SAFETY: `conv_into` asserted availability; the panel holds 32 rows of `ka`, and the
        // image `len` columns per pair, enough for column `j0 + 31` at every offset (both
        // kernels assert it).
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Amx => unsafe { amx::block_taps(a, ka, kc_pad, image, len, j0, offs, c) },
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Avx512 => unsafe { avx512::block_taps(a, ka, kc_pad, image, len, j0, offs, c) },
        #[cfg(not(target_arch = "x86_64"))]
        Bf16Kernel::Amx | Bf16Kernel::Avx512 => unreachable!("not available"),
        Bf16Kernel::Emulated => {
            for (r, row) in c.chunks_exact_mut(BLOCK).enumerate() {
                for (col, v) in row.iter_mut().enumerate() {
                    *v = 0.0;
                    for (tap, &off) in offs.iter().enumerate() {
                        for p in 0..kc_pad / 2 {
                            let x = (p * len + j0 + off + col) * 2;
                            let w = a_offset(r, tap * kc_pad + 2 * p, ka);
                            *v += from_bf16(a[w]) * from_bf16(image[x])
                                + from_bf16(a[w + 1]) * from_bf16(image[x + 1]);
                        }
                    }
                }
            }
        }
    }
}

/// A convolution weight `[m, c, taps]` (row-major) packed by tap: row `o` holds tap 0's `c`
/// channels padded to a multiple of 32, then tap 1's, and so on.
pub(crate) fn pack_weights(data: &[f32], m: usize, c: usize, taps: usize) -> PackedA {
    let kc_pad = c.div_ceil(BLOCK) * BLOCK;
    let mut rows = vec![0f32; m * taps * kc_pad];
    for (o, row) in rows.chunks_exact_mut(taps * kc_pad).enumerate() {
        for (t, tap) in row.chunks_exact_mut(kc_pad).enumerate() {
            for (ch, v) in tap[..c].iter_mut().enumerate() {
                *v = data[(o * c + ch) * taps + t];
            }
        }
    }
    PackedA::pack(&rows, m, taps * kc_pad)
}

// A stride-2 convolution is a stride-1 one over the image's four phases: phase `(py, px)` of
// the padded image holds its pixels `(2 qy + py, 2 qx + px)`, and tap `(ky, kx)` reads phase
// `(ky % 2, kx % 2)` at `(oy + ky / 2, ox + kx / 2)`. So `[m, c, kh, kw]` at stride 2 is
// `[m, 4 c, ceil(kh / 2), ceil(kw / 2)]` at stride 1 over a `4 c`-channel image (channel
// `4 ci + 2 py + px`), the taps past the kernel zero. Why: a stem (7x7 at stride 2 over 3
// channels) unfolded converts and packs each pixel ~12 times, and ran at 27 GMAC/s per core,
// 10 % of ResNet-50's bf16 forward; its phases are converted once and read at tap offsets.

/// The four phases of `src` (`[c, h, w]`, padded by `pt` rows above and `pl` columns to the
/// left, zeros past it) as a `[4 c, hq, wq]` image.
pub fn phases<T: Elem>(
    src: &[T],
    c: usize,
    [h, w]: [usize; 2],
    [pt, pl]: [usize; 2],
    [hq, wq]: [usize; 2],
) -> Vec<f32> {
    assert!(src.len() >= c * h * w, "image too short");
    let mut out = vec![0f32; 4 * c * hq * wq];
    for (ch, plane) in out.chunks_exact_mut(hq * wq).enumerate() {
        let (ci, py, px) = (ch / 4, ch / 2 % 2, ch % 2);
        let src = &src[ci * h * w..][..h * w];
        for (qy, row) in plane.chunks_exact_mut(wq).enumerate() {
            let Some(iy) = (2 * qy + py).checked_sub(pt).filter(|&iy| iy < h) else {
                continue;
            };
            let src = &src[iy * w..][..w];
            for (qx, v) in row.iter_mut().enumerate() {
                if let Some(ix) = (2 * qx + px).checked_sub(pl).filter(|&ix| ix < w) {
                    *v = src[ix].to_f32();
                }
            }
        }
    }
    out
}

/// A stride-2 weight `[m, c, kh, kw]` as the stride-1 weight over [`phases`]:
/// `[m, 4 c, ceil(kh / 2), ceil(kw / 2)]`, zero where a phase's tap lies past the kernel.
pub fn phase_weights(data: &[f32], m: usize, c: usize, [kh, kw]: [usize; 2]) -> Vec<f32> {
    let (th, tw) = (kh.div_ceil(2), kw.div_ceil(2));
    let mut out = vec![0f32; m * 4 * c * th * tw];
    for (i, v) in out.iter_mut().enumerate() {
        let (o, ch, t) = (
            i / (4 * c * th * tw),
            i / (th * tw) % (4 * c),
            i % (th * tw),
        );
        let (ci, py, px) = (ch / 4, ch / 2 % 2, ch % 2);
        let (ky, kx) = (2 * (t / tw) + py, 2 * (t % tw) + px);
        if ky < kh && kx < kw {
            *v = data[((o * c + ci) * kh + ky) * kw + kx];
        }
    }
    out
}
