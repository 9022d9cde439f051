//! f32 linear layers on AVX-512 with the weight packed once per layer.
//!
//! Why: through the `gemm` crate every call packs the weight again (11 % of ViT-B/16's f32
//! forward, `perf`), and the bias and activation take a pass of their own over the output
//! (fc1's at batch 8: 19 MB). Here the weight is packed at its first use and kept
//! ([`super::bf16::cache`]), the activations are read where they lie (one element of a row
//! broadcast against a packed weight row), and each block's sums get their bias and
//! activation as they leave the registers (a clamp: none, ReLU, ReLU6) or while in L1 (GELU,
//! SiLU: the bf16 products' write-back, [`write_plain`]).

use super::aligned::Aligned;
use super::bf16::{Bias, Out, Start, write_plain};
use super::*;

/// Columns of one packed weight panel, and of a register tile: four AVX-512 vectors.
const PANEL: usize = 64;
/// Rows of a register tile: 6 rows x 64 columns, 24 accumulators; per step along `k`, four
/// loads of the panel and six broadcasts for 24 fused multiply-adds (the `gemm` crate's
/// widest f32 kernel has the same shape). An 8 x 32 tile (ten loads per 16) ran 0.8-0.9x the
/// `gemm` crate.
const TILE_ROWS: usize = 6;
/// Rows of a block: the tiles that meet one part of a panel while it is in L1.
const BLOCK_ROWS: usize = 4 * TILE_ROWS;
/// Columns of the write-back's block ([`write_plain`]): half a panel.
const HALF: usize = 32;
/// Steps along `k` per pass over a block's tiles: the panel's `KC x 64` part (16 KB) stays in
/// L1 while the block's tiles meet it, beside six rows of input that for `k = 3072` (12 KB
/// apart) all fall in the same L1 sets. Why: with the whole panel per tile (`k = 768`:
/// 192 KB, past L1) every tile streamed it from L2 again.
const KC: usize = 64;
/// Bytes of packed weight panels one task keeps in L2 while one block of rows meets them all
/// (as the bf16 products: a quarter of a Sapphire Rapids core's 2 MB L2).
const PANELS_BYTES: usize = 512 << 10;
/// Output lines asked for per tile and part of `k` (see [`Place`]).
const PREFETCH_PER_TILE: usize = 8;

/// A weight `[k, n]` (row-major, `x W`) packed for [`linear_into`]: panels of 64 columns,
/// each `[k][64]` contiguous (columns past `n` zero).
pub struct PackedW {
    /// The panels, from a 64-byte boundary: each step loads a panel row as four 64-byte
    /// vectors.
    data: Aligned,
    k: usize,
    n: usize,
}

impl PackedW {
    /// Packs the row-major `[k, n]` matrix in `w`'s first `k * n` elements.
    pub fn new(w: &[f32], k: usize, n: usize) -> PackedW {
        assert!(w.len() >= k * n, "weight too short");
        let len = n.div_ceil(PANEL) * PANEL * k;
        let mut data = Aligned::zeroed(len);
        if k > 0 {
            data.get_mut()[..len]
                .par_chunks_mut(k * PANEL)
                .enumerate()
                .for_each(|(jb, panel)| {
                    let (j0, width) = (jb * PANEL, (n - jb * PANEL).min(PANEL));
                    for (p, row) in panel.chunks_exact_mut(PANEL).enumerate() {
                        row[..width].copy_from_slice(&w[p * n + j0..][..width]);
                    }
                });
        }
        PackedW { data, k, n }
    }

    /// Panel `jb`: `[k][64]`.
    fn panel(&self, jb: usize) -> &[f32] {
        &self.data.get()[jb * self.k * PANEL..][..self.k * PANEL]
    }

    pub fn bytes(&self) -> usize {
        self.data.bytes()
    }
}

/// Whether this CPU runs [`linear_into`] (AVX-512).
pub fn available() -> bool {
    Isa::get().avx512()
}

/// Whether an `m`-row product pays here: a block of rows at least (a classifier's few rows
/// would run 6-row tiles mostly empty; the `gemm` crate has kernels for those).
pub fn pays(m: usize) -> bool {
    m >= BLOCK_ROWS
}

/// `dst [m, n] = ep(x [m, k] W + bias)`, `x` row-major in its first `m * k` elements, every
/// output element written once (`dst` is never read). Each task takes one block of rows and
/// a group of weight panels that fits [`PANELS_BYTES`] (the tasks of one group, neighbours,
/// mostly one thread's, reuse it from L2).
///
/// Panics unless [`available`], for `k = 0` (an empty sum: the caller's), where the slices
/// are shorter than the shapes, or for a bias that is not per column.
pub fn linear_into(
    x: &[f32],
    m: usize,
    w: &PackedW,
    bias: Bias,
    ep: Epilogue,
    dst: &mut [MaybeUninit<f32>],
) {
    let (k, n) = (w.k, w.n);
    assert!(available(), "the packed f32 linear needs AVX-512");
    // With no step along `k` the direct stores would never run.
    assert!(k > 0, "an empty sum");
    assert!(x.len() >= m * k && dst.len() >= m * n, "operand too short");
    let bias = match bias {
        Bias::None => None,
        Bias::Columns(b) => {
            assert!(b.len() >= n, "bias shorter than a row");
            Some(b)
        }
        _ => panic!("a linear layer's bias is per column"),
    };
    if m == 0 || n == 0 {
        return;
    }
    let out = Out(dst.as_mut_ptr().cast());
    let (mb, nb) = (m.div_ceil(BLOCK_ROWS), n.div_ceil(PANEL));
    let group = (PANELS_BYTES / (PANEL * 4 * k)).clamp(1, nb);
    (0..nb.div_ceil(group) * mb).into_par_iter().for_each(|t| {
        let (g, ib) = (t / mb, t % mb);
        let (i0, rows) = (ib * BLOCK_ROWS, (m - ib * BLOCK_ROWS).min(BLOCK_ROWS));
        let xs = &x[i0 * k..(i0 + rows) * k];
        let mut c = [Block([0f32; HALF * HALF]), Block([0f32; HALF * HALF])];
        for jb in g * group..((g + 1) * group).min(nb) {
            let (j0, cols) = (jb * PANEL, (n - jb * PANEL).min(PANEL));
            let place = Place {
                at: out.get().wrapping_add(i0 * n + j0),
                stride: n,
                cols,
            };
            let clamp = ep.clamp_bounds();
            let sink = match clamp {
                Some(bounds) => Sink::Direct {
                    bias: bias.map(|b| &b[j0..j0 + cols]),
                    bounds,
                },
                None => {
                    let [c0, c1] = &mut c;
                    Sink::Block([&mut c0.0, &mut c1.0])
                }
            };
            block(xs, rows, k, w.panel(jb), place, sink);
            if clamp.is_some() {
                continue;
            }
            // GELU, SiLU: the block's sums through the bf16 products' write-back.
            for (h, c) in c.iter_mut().enumerate() {
                let j0 = j0 + h * HALF;
                if j0 >= n {
                    break;
                }
                let place = ([i0, j0], [rows, (n - j0).min(HALF)], (i0 * n + j0, n), n);
                let bias = bias.map_or(Bias::None, Bias::Columns);
                // SAFETY: rows i0..i0 + rows, columns j0..j0 + 32 (or to `n`) of `dst`
                // (inside m x n, asserted) belong to this block, written by this task
                // alone; the bias covers `n` (asserted).
                unsafe { write_plain(&mut c.0, place, Start::Bias(bias), ep, out.get()) };
            }
        }
    });
}

#[repr(C, align(64))]
struct Block([f32; HALF * HALF]);

/// Where a block's sums go.
enum Sink<'a> {
    /// Into the output with the columns' `bias` and the clamp `bounds` (see
    /// [`Epilogue::clamp_bounds`]), from the registers.
    Direct {
        bias: Option<&'a [f32]>,
        bounds: [f32; 2],
    },
    /// Into two 32x32 buffers (columns 0-31, 32-63; rows 32 apart), for the write-back.
    Block([&'a mut [f32; HALF * HALF]; 2]),
}

/// A block's place in the output: its first element `at`, its rows (the block's) `stride`
/// floats apart, `cols` columns (at most 64). The direct stores write it; its lines are asked
/// for while the block computes. Why: the output is fresh memory, each line read before it is
/// written; stored after the products without asking first, the write-back was a tenth of a
/// ViT-B/16 qkv product (halved with it).
#[derive(Clone, Copy)]
struct Place {
    at: *mut f32,
    stride: usize,
    cols: usize,
}

/// `sink = x [rows, k] panel` (`x` row-major, rows `k` apart; `panel` one packed panel
/// `[k][64]`), the block's output at `place`.
fn block(x: &[f32], rows: usize, k: usize, panel: &[f32], place: Place, sink: Sink) {
    assert!((1..=BLOCK_ROWS).contains(&rows) && x.len() >= rows * k && panel.len() >= k * PANEL);
    assert!(k > 0 && place.cols <= PANEL);
    if let Sink::Direct { bias, .. } = &sink {
        assert!(bias.is_none_or(|b| b.len() >= place.cols));
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `linear_into` checked AVX-512; the extents are asserted above, and the output
    // rows `place` names are the caller's (`linear_into`: its block of `dst`).
    unsafe {
        block_avx512(x, rows, k, panel, place, sink)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("not available")
}

/// [`block`] one tile of six rows at a time, `k` in parts of [`KC`], the sums kept between
/// parts in the sink's buffers (for [`Sink::Direct`], in local ones; the last part stores
/// straight into the output). Rows past `rows` in the last tile repeat the last row (read
/// in bounds, their sums dropped).
///
/// # Safety
/// AVX-512F is available; the extents [`block`] asserts; for [`Sink::Direct`], `place` is
/// writable for `rows` rows and its columns and no one else's meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512(x: &[f32], rows: usize, k: usize, panel: &[f32], place: Place, sink: Sink) {
    use std::arch::x86_64::*;
    // Sums between parts of `k`: the sink's buffers, or (direct) a local pair, each element
    // stored by one part before the next part reads it.
    let mut local = std::mem::MaybeUninit::<[Block; 2]>::uninit();
    let (cp, direct) = match sink {
        Sink::Block(c) => (c.map(|c| c.as_mut_ptr()), None),
        Sink::Direct { bias, bounds } => {
            let l = local.as_mut_ptr().cast::<f32>();
            ([l, l.wrapping_add(HALF * HALF)], Some((bias, bounds)))
        }
    };
    // The output's lines, asked for a few per tile (see `Place`).
    let (mut asked, row_lines) = (0, place.cols.div_ceil(16));
    let lines = rows * row_lines;
    let wp = panel.as_ptr();
    for p0 in (0..k).step_by(KC) {
        let p1 = (p0 + KC).min(k);
        for r0 in (0..rows).step_by(TILE_ROWS) {
            let row: [*const f32; TILE_ROWS] =
                std::array::from_fn(|r| x[(r0 + r).min(rows - 1) * k..].as_ptr());
            for _ in 0..PREFETCH_PER_TILE.min(lines - asked) {
                let (r, l) = (asked / row_lines, asked % row_lines);
                let line = place.at.wrapping_add(r * place.stride + 16 * l);
                // A prefetch reads nothing and cannot fault (safe under the target feature).
                _mm_prefetch::<_MM_HINT_ET0>(line as *const i8);
                asked += 1;
            }
            // Vector `v` of row `r`'s sums: lanes 16 (v % 2).. of half v / 2, row r0 + r.
            let at = |r: usize, v: usize| cp[v / 2].wrapping_add((r0 + r) * HALF + 16 * (v % 2));
            // The panel's next part of `k` (or the next panel's first), one line a step
            // across the block's tiles: from memory for a group's first block of rows.
            let ahead = wp.wrapping_add(p1 * PANEL + (r0 / TILE_ROWS) * (p1 - p0) * 16);
            // SAFETY: `p < k` reads element `p` of rows below `rows` (each `k` long) and row
            // `p` of the panel (64 long): inside the slices (the caller's contract); rows
            // `r0..r0 + 6` of the buffers lie inside their 32 (`r0 < 24`); prefetches cannot
            // fault.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); 4]; TILE_ROWS];
                if p0 > 0 {
                    for (r, acc) in acc.iter_mut().enumerate() {
                        *acc = std::array::from_fn(|v| _mm512_loadu_ps(at(r, v)));
                    }
                }
                for p in p0..p1 {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add((p - p0) * 16) as *const i8);
                    let b: [__m512; 4] =
                        std::array::from_fn(|v| _mm512_loadu_ps(wp.add(p * PANEL + 16 * v)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = _mm512_set1_ps(*row[r].add(p));
                        for (acc, b) in acc.iter_mut().zip(b) {
                            *acc = _mm512_fmadd_ps(a, b, *acc);
                        }
                    }
                }
                match &direct {
                    Some((bias, bounds)) if p1 == k => {
                        store_direct(&acc, place, rows, r0, *bias, *bounds)
                    }
                    _ => {
                        for (r, acc) in acc.iter().enumerate() {
                            for (v, acc) in acc.iter().enumerate() {
                                _mm512_storeu_ps(at(r, v), *acc);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A tile's sums (rows `r0..r0 + 6` of the block) plus `bias`, clamped to `bounds`, into the
/// block's output rows below `rows`, the columns below `place.cols`.
///
/// # Safety
/// AVX-512F; `place` is writable for `rows` rows and its columns; `bias` holds its columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_direct(
    acc: &[[std::arch::x86_64::__m512; 4]; TILE_ROWS],
    place: Place,
    rows: usize,
    r0: usize,
    bias: Option<&[f32]>,
    [lo, hi]: [f32; 2],
) {
    use std::arch::x86_64::*;
    // No activation: nothing to clamp (NaN kept either way, see `Epilogue::clamp_bounds`).
    let clamp = lo > f32::NEG_INFINITY || hi < f32::INFINITY;
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let masks: [__mmask16; 4] =
        std::array::from_fn(|v| ((1u32 << place.cols.saturating_sub(16 * v).min(16)) - 1) as u16);
    // SAFETY: masked lanes below `place.cols` only: inside the bias (asserted by `block`) and
    // the output rows (the caller's contract).
    unsafe {
        let bias: [__m512; 4] = std::array::from_fn(|v| match bias {
            Some(b) => _mm512_maskz_loadu_ps(masks[v], b.as_ptr().wrapping_add(16 * v)),
            None => _mm512_setzero_ps(),
        });
        for (r, acc) in acc.iter().enumerate().take(rows.saturating_sub(r0)) {
            let row = place.at.add((r0 + r) * place.stride);
            for (v, acc) in acc.iter().enumerate() {
                let mut y = _mm512_add_ps(*acc, bias[v]);
                if clamp {
                    y = _mm512_min_ps(hi, _mm512_max_ps(lo, y));
                }
                _mm512_mask_storeu_ps(row.add(16 * v), masks[v], y);
            }
        }
    }
}
