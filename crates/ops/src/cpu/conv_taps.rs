//! Stride-1 f32 convolutions on AVX-512 as an implicit GEMM over the image itself: each tap
//! of the kernel is a product of that tap's weights with the image read at the tap's offset,
//! all taps accumulated in the same registers.
//!
//! Why: through the `gemm` crate a 3x3 convolution first unfolds the image (`im2col`, nine
//! copies of every value) and the crate then packs both operands again; arranging operands
//! took ~15 % of ResNet-50's f32 forward (perf, docs/benchmarks.md). Here the weights are
//! packed once per layer and the image once per call, each value about three times at 3x3
//! (a pixel block's columns and the rows its taps reach below them). The image is flattened
//! with its padded width `wp`, so output `(oy, ox)` is grid column `oy * wp + ox` and tap
//! `(ky, kx)` reads grid column `oy * wp + ox + ky * wp + kx`; the grid's last `wp - ow`
//! columns of each row are computed and dropped (as in [`super::bf16::taps`]). Bias,
//! residual and ReLU are applied in registers as the last channel block is written.

use super::bf16::Out;
use super::bf16::taps::Taps;
use super::*;

/// Output channels per register tile (each broadcast from the packed weights).
const MR: usize = 6;
/// Grid columns per register tile: four AVX-512 vectors.
const NC: usize = 64;
/// Bytes of image (one channel block at one pixel block, all taps' reach) kept in L1 while
/// a task's output-channel blocks meet it (half of a 48 KB L1, the weights stream beside it).
const TILE_BYTES: usize = 24 << 10;
/// Output-channel blocks per task at most: the task's accumulators (`16 * 6 * 64` floats,
/// 24 KB) stay in L1/L2 between channel blocks.
const GROUP_BLOCKS: usize = 16;

/// A convolution weight `[m, c, taps]` packed for [`conv`]: blocks of [`MR`] output channels,
/// each `[taps][c][MR]` (rows past `m` zero).
pub struct Packed {
    data: Vec<f32>,
    m: usize,
    c: usize,
    taps: usize,
}

impl Packed {
    /// Packs the row-major weight `[m, c, taps]` in `w`.
    pub fn new(w: &[f32], m: usize, c: usize, taps: usize) -> Packed {
        assert!(w.len() >= m * c * taps, "weight too short");
        let mut data = vec![0f32; m.div_ceil(MR) * MR * taps * c];
        data.par_chunks_mut(MR * taps * c)
            .enumerate()
            .for_each(|(b, block)| {
                for (i, v) in block.iter_mut().enumerate() {
                    let (t, ch, r) = (i / (c * MR), i / MR % c, i % MR);
                    let o = b * MR + r;
                    if o < m {
                        *v = w[(o * c + ch) * taps + t];
                    }
                }
            });
        Packed { data, m, c, taps }
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// Whether this CPU runs [`conv`] (AVX-512).
pub fn available() -> bool {
    Isa::get().avx512()
}

/// Grid columns computed: every output row at the grid's width.
fn cols(t: &Taps) -> usize {
    t.oh * t.wp
}

/// Floats per channel of one pixel block of packed images: the block's [`NC`] columns and
/// every column past them its taps read, rounded to whole vectors.
fn block_row(t: &Taps) -> usize {
    (NC + t.offs.iter().max().unwrap_or(&0)).next_multiple_of(16)
}

/// One pixel block of image `[c, h, w]` as [`Tile`] reads it: each channel's grid columns
/// from the block's first `g0` through the last its taps reach (zero where the grid is
/// padding), `block_row(t)` floats per channel. Why: read in place, each step of the
/// product moved to another channel's plane (another page), and packed for the whole batch
/// before the product the copy went through memory (ResNet-50 at batch 8 ran 0.88x the
/// unfolded path); a task packs its block just before it multiplies, into L2.
fn pack_block(image: &[f32], t: &Taps, g0: usize, dst: &mut [f32]) {
    let row = block_row(t);
    for (ch, dst) in dst.chunks_exact_mut(row).take(t.c).enumerate() {
        grid_columns(&image[ch * t.h * t.w..][..t.h * t.w], t, g0, dst);
    }
}

/// Grid columns `g0..g0 + dst.len()` of one channel `[h, w]` (zero where padding).
fn grid_columns(src: &[f32], t: &Taps, g0: usize, dst: &mut [f32]) {
    let (h, w, wp) = (t.h, t.w, t.wp);
    if t.pt == 0 && wp == w {
        // No padding above or beside: the grid is the image, one copy (a 1x1 convolution).
        let n = (h * w).saturating_sub(g0).min(dst.len());
        dst[..n].copy_from_slice(&src[g0..g0 + n]);
        dst[n..].fill(0.0);
        return;
    }
    let mut k = 0;
    while k < dst.len() {
        let g = g0 + k;
        let (gy, gx) = (g / wp, g % wp);
        // The rest of grid row gy, as far as `dst` goes.
        let n = (wp - gx).min(dst.len() - k);
        let seg = &mut dst[k..k + n];
        match gy.checked_sub(t.pt).filter(|&iy| iy < h) {
            Some(iy) => {
                // Grid columns gx..gx + n hold image columns from gx - pl, where inside.
                let lo = t.pl.clamp(gx, gx + n) - gx;
                let hi = (t.pl + w).clamp(gx + lo, gx + n) - gx;
                seg[..lo].fill(0.0);
                let first = (gx + lo).saturating_sub(t.pl);
                seg[lo..hi].copy_from_slice(&src[iy * w + first..][..hi - lo]);
                seg[hi..].fill(0.0);
            }
            None => seg.fill(0.0),
        }
        k += n;
    }
}

/// `dst [n, m, oh, ow] = ep(conv(images) + bias + residual)` for `n` images `[t.c, t.h, t.w]`
/// and weights `w` packed over taps `t`. Every output element is written once.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    w: &Packed,
    images: &[f32],
    n: usize,
    t: &Taps,
    dst: &mut [MaybeUninit<f32>],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    ep: Epilogue,
) {
    let (m, c) = (w.m, w.c);
    assert!(available(), "AVX-512 unavailable");
    assert_eq!(
        (c, w.taps),
        (t.c, t.offs.len()),
        "weights packed for other taps"
    );
    let row = block_row(t);
    let (h, wd) = (t.h, t.w);
    assert!(images.len() >= n * c * h * wd, "images too short");
    let out_plane = t.oh * t.ow;
    let len = n * m * out_plane;
    assert!(dst.len() >= len, "output too short");
    assert!(bias.is_none_or(|b| b.len() >= m), "bias too short");
    assert!(
        residual.is_none_or(|r| r.len() >= len),
        "residual too short"
    );
    let cols = cols(t);
    if len == 0 || c == 0 {
        return;
    }
    let max_off = *t.offs.iter().max().unwrap_or(&0);
    // Channels per block: their reach at one pixel block fits `TILE_BYTES`, blocks even.
    let kc = (TILE_BYTES / 4 / (NC + max_off)).clamp(1, c);
    let kc = c.div_ceil(c.div_ceil(kc));
    let mb = m.div_ceil(MR);
    let pb = cols.div_ceil(NC);
    // Output-channel blocks per group (the accumulators one channel block leaves for the
    // next), and the groups split over several tasks only where the pixel blocks are too few
    // to give each thread two: each task packs its pixel block once.
    let gb = mb.min(GROUP_BLOCKS);
    let groups = mb.div_ceil(gb);
    let threads = rayon::current_num_threads();
    let splits = (2 * threads).div_ceil(n * pb).clamp(1, groups);
    let per_split = groups.div_ceil(splits);
    let out = Out(dst.as_mut_ptr().cast());
    // ReLU and ReLU6 are applied in registers as the tiles are written; other activations
    // in a pass over each group's rows while they are in cache.
    let clamp = ep.clamp_bounds();
    let isa = Isa::get();
    let blocks = c.div_ceil(kc);
    (0..n * pb * splits).into_par_iter().for_each(|task| {
        let (i, p, split) = (task / (pb * splits), task / splits % pb, task % splits);
        let j0 = p * NC;
        let width = (cols - j0).min(NC);
        // The thread's scratch: this block's packed image (every element written).
        with_scratch(c * row, |image| {
            pack_block(&images[i * c * h * wd..][..c * h * wd], t, j0, image);
            let image = &*image;
            // Between channel blocks the tiles wait in `acc`; the last block writes the output.
            let mut acc = vec![0f32; if blocks > 1 { gb * MR * NC } else { 0 }];
            let first_group = split * per_split;
            for g in first_group..(first_group + per_split).min(groups) {
                let (b0, b1) = (g * gb, ((g + 1) * gb).min(mb));
                for c0 in (0..c).step_by(kc) {
                    let c1 = (c0 + kc).min(c);
                    for b in b0..b1 {
                        let panel = &w.data[b * MR * w.taps * c..][..MR * w.taps * c];
                        let tile = Tile {
                            panel,
                            c,
                            image,
                            plane: row,
                            width,
                            offs: &t.offs,
                            channels: [c0, c1],
                        };
                        let acc = acc.get_mut((b - b0) * MR * NC..).unwrap_or_default();
                        let write = Write {
                            out,
                            residual,
                            bias,
                            rows: [b * MR, m],
                            at: i * m * out_plane,
                            out_plane,
                            j0,
                            wp: t.wp,
                            ow: t.ow,
                            clamp,
                        };
                        tile.run(acc, c0 == 0, (c1 == c).then_some(&write));
                    }
                }
                if clamp.is_some() {
                    continue;
                }
                // Other activations over the rows just written, one grid row at a time.
                for o in b0 * MR..(b1 * MR).min(m) {
                    let mut j = j0;
                    while j < j0 + width {
                        let (oy, ox) = (j / t.wp, j % t.wp);
                        let end = (j0 + width).min(oy * t.wp + t.ow);
                        if ox < t.ow {
                            let at = (i * m + o) * out_plane + oy * t.ow + ox;
                            // SAFETY: output (image i, row o, grid row oy, columns ox..) lies
                            // inside `dst` (asserted), only this task writes it, and its tiles
                            // just did.
                            let d = unsafe {
                                std::slice::from_raw_parts_mut(out.get().add(at), end - j)
                            };
                            isa.epilogue(d, ep);
                        }
                        j = (oy + 1) * t.wp;
                    }
                }
            }
        });
    });
}

/// Where and how a tile's finished values go: `out[at + o * out_plane + ..]` for rows
/// `o` from `rows[0]` below `rows[1]`, bias and residual added, clamped to `clamp` (ReLU or
/// ReLU6) where given. Grid column `j` (row `j / wp`) is output pixel `j - j / wp * (wp - ow)`,
/// the columns with `j % wp >= ow` dropped.
struct Write<'a> {
    out: Out,
    residual: Option<&'a [f32]>,
    bias: Option<&'a [f32]>,
    rows: [usize; 2],
    at: usize,
    out_plane: usize,
    j0: usize,
    wp: usize,
    ow: usize,
    clamp: Option<[f32; 2]>,
}

/// One register tile's share of a product: [`MR`] output channels at up to [`NC`] grid
/// columns, over one block of input channels and every tap.
struct Tile<'a> {
    /// The output-channel block's packed weights, `[taps][c][MR]`.
    panel: &'a [f32],
    c: usize,
    /// One pixel block of the packed images: its channels, `plane` floats apart.
    image: &'a [f32],
    plane: usize,
    /// Grid columns computed from the block's first (1..=64).
    width: usize,
    offs: &'a [usize],
    channels: [usize; 2],
}

impl Tile<'_> {
    /// `acc [MR][NC] (+)= panel x image`, starting from zero when `first`; with `write`, the
    /// sum goes to the output instead (and `acc` may be empty when also `first`).
    fn run(&self, acc: &mut [f32], first: bool, write: Option<&Write>) {
        let acc_used = !first || write.is_none();
        assert!((!acc_used || acc.len() >= MR * NC) && (1..=NC).contains(&self.width));
        if let Some(w) = write {
            // Every output pixel of this tile's columns lies inside the output and residual.
            let [o0, m] = w.rows;
            let last = self.width - 1 + w.j0;
            let pixel = last - last / w.wp * (w.wp - w.ow);
            let end = w.at + (m - 1) * w.out_plane + pixel.min(w.out_plane - 1);
            assert!(o0 < m && w.ow <= w.wp && w.residual.is_none_or(|r| r.len() > end));
            assert!(w.bias.is_none_or(|b| b.len() >= m));
        }
        let c1 = self.channels[1];
        assert!(c1 <= self.c && self.panel.len() >= MR * self.offs.len() * self.c);
        // Every column a lane reads: whole vectors from the block's first, plus the largest
        // offset (a packed block's rows hold them: `block_row`).
        let reach = self.width.div_ceil(16) * 16 + self.offs.iter().max().unwrap_or(&0);
        assert!(c1 == 0 || (c1 - 1) * self.plane + reach <= self.image.len());
        #[cfg(target_arch = "x86_64")]
        {
            assert!(available());
            // SAFETY: AVX-512 is available; the reads stay inside `panel`, `image` and
            // `acc` (asserted above).
            unsafe {
                match self.width.div_ceil(16) {
                    1 => tile::<1>(self, acc, first, write),
                    2 => tile::<2>(self, acc, first, write),
                    3 => tile::<3>(self, acc, first, write),
                    _ => tile::<4>(self, acc, first, write),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (acc, first, write);
    }
}

/// The tile's product with `V` vectors of 16 columns: 6 x `V` accumulators in registers, per
/// (tap, channel) `V` image loads and 6 weight broadcasts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const V: usize>(t: &Tile, acc: &mut [f32], first: bool, write: Option<&Write>) {
    use std::arch::x86_64::*;
    let accp = acc.as_mut_ptr();
    // SAFETY (whole body): the caller checked the bounds (`Tile::run`).
    unsafe {
        let mut a = [[_mm512_setzero_ps(); V]; MR];
        if !first {
            for (r, a) in a.iter_mut().enumerate() {
                for (q, a) in a.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(accp.add(r * NC + 16 * q));
                }
            }
        }
        let [c0, c1] = t.channels;
        let img = t.image.as_ptr();
        for (k, &off) in t.offs.iter().enumerate() {
            let mut wp = t.panel.as_ptr().add((k * t.c + c0) * MR);
            let mut xp = img.add(c0 * t.plane + off);
            for _ in c0..c1 {
                // Unmasked: lanes past `width` read packed columns whose sums are never
                // stored (no mask to apply per load; not measurable apart on this host).
                let x: [__m512; V] = std::array::from_fn(|q| _mm512_loadu_ps(xp.add(16 * q)));
                for (r, a) in a.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*wp.add(r));
                    for (a, x) in a.iter_mut().zip(&x) {
                        *a = _mm512_fmadd_ps(b, *x, *a);
                    }
                }
                wp = wp.add(MR);
                xp = xp.add(t.plane);
            }
        }
        let Some(w) = write else {
            for (r, a) in a.iter().enumerate() {
                for (q, a) in a.iter().enumerate() {
                    _mm512_storeu_ps(accp.add(r * NC + 16 * q), *a);
                }
            }
            return;
        };
        let [o0, m] = w.rows;
        let [lo, hi] = w.clamp.unwrap_or([f32::NEG_INFINITY, f32::INFINITY]);
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let out = w.out.get();
        for q in 0..V {
            // The vector's lanes below `width`, grid row by grid row: lane `l` of grid row `y`
            // is output pixel `jq + l - y * (wp - ow)`, kept where its column is below `ow`.
            let jq = w.j0 + 16 * q;
            let lanes = t.width.saturating_sub(16 * q).min(16);
            let mut y = jq / w.wp;
            while y * w.wp < jq + lanes {
                let first = (y * w.wp).max(jq) - jq;
                let stop = (y * w.wp + w.ow).min(jq + lanes).max(jq + first) - jq;
                let keep = ((1u32 << stop) - (1u32 << first)) as __mmask16;
                let shift = jq - y * (w.wp - w.ow);
                for (r, a) in a.iter().enumerate().take(m.saturating_sub(o0).min(MR)) {
                    let at = (w.at + (o0 + r) * w.out_plane).wrapping_add(shift);
                    let mut v = a[q];
                    if let Some(b) = w.bias {
                        v = _mm512_add_ps(v, _mm512_set1_ps(b[o0 + r]));
                    }
                    if let Some(res) = w.residual {
                        let p = res.as_ptr().wrapping_add(at);
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(keep, p));
                    }
                    if w.clamp.is_some() {
                        // NaN kept (see `Epilogue::clamp_bounds`).
                        v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                    }
                    _mm512_mask_storeu_ps(out.wrapping_add(at), keep, v);
                }
                y += 1;
            }
        }
    }
}
