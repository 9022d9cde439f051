//! Weight gradients of 1x1 and dense convolutions (any stride) as dot products over pixels,
//! read where the values lie (AVX-512; in f32, or in bf16 on AVX512-BF16 under `--dtype
//! bf16`): `dW[o][j] = sum_i sum_k dY_i[o][k] * X_i[j][k]`, where row `j` of the input is a
//! channel (1x1) or a channel read at one tap's offset in the zero-padded image, split into
//! its stride phases ([`Grid`]; at stride 1 the tap grid of [`crate::cpu::bf16::taps`]).
//!
//! Why: through a matrix product a 3x3 layer's weight gradient first unfolded every image
//! (nine copies of each value: 58 MB per step for ResNet's 64-channel 56x56 layers at batch
//! 8) and then packed that again; in f32 the pass ran at ~40 % of the FMA rate (27 ms where
//! the forward took 11), in bf16 at half the forward's rate. A 1x1 layer's f32 product was one
//! per image with only `h * w` terms, its output read and written again per image. Here both
//! operands are rows of pixels in memory (the image padded once, the output gradient laid on
//! the grid once; in bf16 each converted once), each register tile a 4 x 6 block of `dW`
//! summed lane-wise over every pixel block. `vdpbf16ps` pairs neighbouring pixels of both
//! rows, so a tap's odd offset needs no realignment.

use super::*;
use crate::cpu::bf16::Bf16Kernel;
use std::arch::x86_64::*;

/// Output-gradient rows (`o`) per register tile.
const MR: usize = 4;
/// Input rows (`j`: channel and tap) per register tile.
const NR: usize = 6;
/// Rows of `o` and of `j` per task: a task's tiles share these rows while they are in cache.
const TASK_O: usize = 8 * MR;
const TASK_J: usize = 16 * NR;
/// Bytes of one row per block: each tile's accumulators pass through memory once per block.
/// ResNet-50's 56x56 and 28x28 layers (`WGRAD=1 [F32=1] ... --example train_conv_rate`, AMD
/// EPYC Zen 4, two runs): 16 KB blocks ran 2-4 % faster than 4 KB ones (whose rows of a task
/// had fit L2), 64 KB ones no faster than 16 KB.
const BLOCK_BYTES: usize = 16384;

/// An element the tiles multiply: f32, or bf16 (`u16`) on AVX512-BF16. The loads and the
/// multiply-add are `#[inline(always)]` pieces of [`tile_body`], compiled inside each
/// element's entry point ([`tile_f32`], [`tile_bf16`]) with that entry point's features.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    /// One register of elements.
    type V: Copy;
    /// Elements per register.
    const STEP: usize;

    /// Whether this CPU has the features [`Elem::tile`] needs.
    fn available() -> bool;

    /// `acc[q][p] (16 f32 lanes) += sum over the pieces of A row q * B row p`.
    ///
    /// # Safety
    /// The CPU has the kernel's features; every row of every piece lies inside `r.a` / `r.b`.
    unsafe fn tile(
        r: &Rows<Self>,
        a: [usize; MR],
        b: [usize; NR],
        pieces: &[Piece],
        acc: &mut [f32],
    );

    /// The `n <= STEP` elements at `p` (the rest zero; all of them unmasked when `n == STEP`).
    ///
    /// # Safety
    /// The CPU has AVX-512 (and AVX512-BF16 for bf16); `p` is valid for `n` reads.
    unsafe fn load(p: *const Self, n: usize) -> Self::V;

    /// `acc + x * y` lane-wise (bf16: each f32 lane adds two neighbouring products).
    ///
    /// # Safety
    /// As [`Elem::load`].
    unsafe fn madd(acc: __m512, x: Self::V, y: Self::V) -> __m512;

    /// `dst` set from the f32 values `fill` writes (every element), through `buf` where the
    /// element is not f32.
    fn fill(dst: &mut [Self], buf: &mut Vec<f32>, fill: &dyn Fn(&mut [f32]));
}

impl Elem for f32 {
    type V = __m512;
    const STEP: usize = 16;

    fn available() -> bool {
        Isa::get().avx512()
    }

    unsafe fn tile(
        r: &Rows<f32>,
        a: [usize; MR],
        b: [usize; NR],
        pieces: &[Piece],
        acc: &mut [f32],
    ) {
        // SAFETY: the caller's contract.
        unsafe { tile_f32(r, a, b, pieces, acc) }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32, n: usize) -> __m512 {
        // SAFETY: the caller's contract; the mask keeps the reads below `n`.
        unsafe {
            match n {
                16 => _mm512_loadu_ps(p),
                n => _mm512_maskz_loadu_ps(((1u32 << n) - 1) as __mmask16, p),
            }
        }
    }

    #[inline(always)]
    unsafe fn madd(acc: __m512, x: __m512, y: __m512) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_fmadd_ps(x, y, acc) }
    }

    fn fill(dst: &mut [f32], _: &mut Vec<f32>, fill: &dyn Fn(&mut [f32])) {
        fill(dst)
    }
}

impl Elem for u16 {
    type V = __m512bh;
    const STEP: usize = 32;

    fn available() -> bool {
        Bf16Kernel::Avx512.available()
    }

    unsafe fn tile(
        r: &Rows<u16>,
        a: [usize; MR],
        b: [usize; NR],
        pieces: &[Piece],
        acc: &mut [f32],
    ) {
        // SAFETY: the caller's contract.
        unsafe { tile_bf16(r, a, b, pieces, acc) }
    }

    #[inline(always)]
    unsafe fn load(p: *const u16, n: usize) -> __m512bh {
        // SAFETY: the caller's contract; the mask keeps the reads below `n`. Both types are
        // 512 bits of plain data.
        unsafe {
            let v = match n {
                32 => _mm512_loadu_si512(p.cast()),
                n => _mm512_maskz_loadu_epi16(((1u64 << n) - 1) as __mmask32, p.cast()),
            };
            std::mem::transmute::<__m512i, __m512bh>(v)
        }
    }

    #[inline(always)]
    unsafe fn madd(acc: __m512, x: __m512bh, y: __m512bh) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_dpbf16_ps(acc, x, y) }
    }

    fn fill(dst: &mut [u16], buf: &mut Vec<f32>, fill: &dyn Fn(&mut [f32])) {
        buf.resize(dst.len(), 0.0);
        fill(buf);
        crate::cpu::bf16::convert(buf, dst);
    }
}

/// The operands of [`weight_grad`]: `n` images, rows `len` elements long.
pub(crate) struct Rows<'a, T> {
    /// Output gradient: row `o < m` of image `i` at `i * a_img + o * a_row`.
    pub(crate) a: &'a [T],
    pub(crate) a_img: usize,
    pub(crate) a_row: usize,
    pub(crate) m: usize,
    /// Input: row `j` of image `i` at `i * b_img + b_rows[j]`.
    pub(crate) b: &'a [T],
    pub(crate) b_img: usize,
    pub(crate) b_rows: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) n: usize,
}

/// Whether a layer with `pix` output pixels per image and products `half` (`None`: f32) takes
/// [`weight_grad`]: on AVX-512 (bf16: the AVX512-BF16 kernel; AMX keeps its tiles), switched
/// on, and on maps of [`MIN_PIX`] pixels or more.
pub(crate) fn applies(half: Option<Bf16Kernel>, pix: usize) -> bool {
    let kernel = match half {
        None => <f32 as Elem>::available(),
        Some(k) => k == Bf16Kernel::Avx512,
    };
    kernel && pix >= MIN_PIX && DOTS.on()
}

/// The smallest map (output pixels per image) whose weight gradient runs as dot products.
/// Why: each `dW` element ends in a sum of its 16 lanes and its tiles' accumulators pass
/// through memory once per block, costs the `gemm` crate's outer products do not have, paid
/// back only over many pixels. ResNet-50's layers at batch 8, forward and weight gradient,
/// f32, 2 threads, alternated (`WGRAD=1 ... --example train_conv_rate`, AMD EPYC Zen 4):
/// 56x56 3x3 1.41x, 1x1 1.50-2.06x; 28x28 3x3 1.03-1.04x, 1x1 1.13-1.16x; 14x14 3x3 0.90x,
/// 1x1 0.95-1.07x; 7x7 0.65-0.70x.
const MIN_PIX: usize = 28 * 28;

static DOTS: crate::kernel::Switch = crate::kernel::Switch::new(true, Some("COMMITTEE_WGRAD_DOTS"));

/// Turns the dot-product weight gradients of 1x1 and dense training layers on or
/// off for the process, over `COMMITTEE_WGRAD_DOTS` (off: matrix products over the unfolded
/// image), to time the two in one process (`examples/ab_train.rs` in committee-train, switch
/// `wgrad-dots`).
pub fn set_weight_grad_dots(on: bool) {
    DOTS.set(on)
}

/// A part of one image's rows summed in one go: `len` elements from `a` in the output
/// gradient and `b` in the input (the row offsets added).
#[derive(Clone, Copy)]
pub(crate) struct Piece {
    a: usize,
    b: usize,
    len: usize,
}

/// `[m, b_rows.len()]`: each `dW[o][j]` summed over images and pixels in a fixed order (by
/// blocks of pixels in image order, lane by lane, the lanes last): the same bits for any
/// thread count.
pub(crate) fn weight_grad<T: Elem>(r: &Rows<T>) -> Vec<f32> {
    let (m, nj) = (r.m, r.b_rows.len());
    assert!(
        T::available(),
        "the CPU lacks the dot-product kernel's features"
    );
    if m == 0 || nj == 0 {
        return vec![0.0; m * nj];
    }
    if r.n > 0 && r.len > 0 {
        let last = r.n - 1;
        assert!(
            last * r.a_img + (m - 1) * r.a_row + r.len <= r.a.len(),
            "dY too short"
        );
        let far = r.b_rows.iter().max().copied().unwrap_or(0);
        assert!(last * r.b_img + far + r.len <= r.b.len(), "X too short");
    }
    // Pieces of at most a block, gathered into blocks in image order.
    let block = BLOCK_BYTES / std::mem::size_of::<T>();
    let mut blocks: Vec<Vec<Piece>> = Vec::new();
    let mut filled = block;
    for i in 0..r.n {
        for k0 in (0..r.len).step_by(block) {
            let len = (r.len - k0).min(block);
            if filled + len > block {
                blocks.push(Vec::new());
                filled = 0;
            }
            filled += len;
            let piece = Piece {
                a: i * r.a_img + k0,
                b: i * r.b_img + k0,
                len,
            };
            blocks.last_mut().expect("pushed").push(piece);
        }
    }
    let (to, tj) = (m.div_ceil(TASK_O), nj.div_ceil(TASK_J));
    let parts: Vec<Vec<f32>> = (0..to * tj)
        .into_par_iter()
        .map(|task| task_sums(r, &blocks, task / tj * TASK_O, task % tj * TASK_J))
        .collect();
    let mut dw = vec![0f32; m * nj];
    for (task, part) in parts.iter().enumerate() {
        let (o0, j0) = (task / tj * TASK_O, task % tj * TASK_J);
        let cols = (nj - j0).min(TASK_J);
        for (row, src) in dw
            .chunks_exact_mut(nj)
            .skip(o0)
            .zip(part.chunks_exact(cols))
        {
            row[j0..j0 + cols].copy_from_slice(src);
        }
    }
    dw
}

/// One task's block of `dW` (rows `o0..`, columns `j0..`, up to `TASK_O x TASK_J`), row-major.
fn task_sums<T: Elem>(r: &Rows<T>, blocks: &[Vec<Piece>], o0: usize, j0: usize) -> Vec<f32> {
    let rows = (r.m - o0).min(TASK_O);
    let cols = (r.b_rows.len() - j0).min(TASK_J);
    let (ti, tj) = (rows.div_ceil(MR), cols.div_ceil(NR));
    // Each tile's 24 accumulators between blocks, 16 lanes each.
    let mut acc = vec![0f32; ti * tj * MR * NR * 16];
    for block in blocks {
        for t in 0..tj {
            // Rows past the task's end repeat its first (their sums are dropped).
            let b: [usize; NR] = std::array::from_fn(|q| {
                let j = t * NR + q;
                r.b_rows[j0 + if j < cols { j } else { 0 }]
            });
            for s in 0..ti {
                let a: [usize; MR] = std::array::from_fn(|q| {
                    let o = s * MR + q;
                    (o0 + if o < rows { o } else { 0 }) * r.a_row
                });
                let at = (s * tj + t) * MR * NR * 16;
                // SAFETY: the kernel's features were checked (`weight_grad`); every
                // row of every piece lies inside `a` and `b` (asserted by `weight_grad`: the
                // farthest row of the last image plus `len`), and the masked tails read no
                // further than `len`.
                unsafe { T::tile(r, a, b, block, &mut acc[at..at + MR * NR * 16]) };
            }
        }
    }
    let mut out = vec![0f32; rows * cols];
    for (o, row) in out.chunks_exact_mut(cols).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let at = ((o / MR * tj + j / NR) * MR * NR + (o % MR) * NR + j % NR) * 16;
            *v = acc[at..at + 16].iter().sum();
        }
    }
    out
}

/// [`Elem::tile`] in f32: per 16 pixels, four output-gradient loads, six input loads and 24
/// FMAs.
#[target_feature(enable = "avx512f")]
unsafe fn tile_f32(
    r: &Rows<f32>,
    a: [usize; MR],
    b: [usize; NR],
    pieces: &[Piece],
    acc: &mut [f32],
) {
    // SAFETY: the caller's contract; AVX-512 is what `tile_body` needs for f32.
    unsafe { tile_body(r, a, b, pieces, acc) }
}

/// [`Elem::tile`] in bf16: per 32 pixels, four output-gradient loads, six input loads and 24
/// `vdpbf16ps` (each lane the sum of two neighbouring pixels' products).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile_bf16(
    r: &Rows<u16>,
    a: [usize; MR],
    b: [usize; NR],
    pieces: &[Piece],
    acc: &mut [f32],
) {
    // SAFETY: the caller's contract; the features are what `tile_body` needs for bf16.
    unsafe { tile_body(r, a, b, pieces, acc) }
}

/// The tile's sums: the 24 accumulators in registers over every piece, `T::STEP` pixels at
/// a time, then the tail, masked.
///
/// # Safety
/// As [`Elem::tile`]; inlined into a caller with `T`'s features.
#[inline(always)]
unsafe fn tile_body<T: Elem>(
    r: &Rows<T>,
    a: [usize; MR],
    b: [usize; NR],
    pieces: &[Piece],
    acc: &mut [f32],
) {
    assert!(acc.len() >= MR * NR * 16);
    // SAFETY (whole body): the caller's contract.
    unsafe {
        let accp = acc.as_mut_ptr();
        let mut s: [[__m512; NR]; MR] = std::array::from_fn(|q| {
            std::array::from_fn(|p| _mm512_loadu_ps(accp.add((q * NR + p) * 16)))
        });
        let (ab, bb) = (r.a.as_ptr(), r.b.as_ptr());
        for piece in pieces {
            let ap: [*const T; MR] = std::array::from_fn(|q| ab.add(a[q] + piece.a));
            let bp: [*const T; NR] = std::array::from_fn(|p| bb.add(b[p] + piece.b));
            let full = piece.len / T::STEP * T::STEP;
            for k in (0..full).step_by(T::STEP) {
                step(&mut s, ap, bp, k, T::STEP);
            }
            if full < piece.len {
                step(&mut s, ap, bp, full, piece.len - full);
            }
        }
        for (q, s) in s.iter().enumerate() {
            for (p, v) in s.iter().enumerate() {
                _mm512_storeu_ps(accp.add((q * NR + p) * 16), *v);
            }
        }
    }
}

/// `s[q][p] += A row q * B row p` over the `n <= T::STEP` elements at `k` (`n` a constant in
/// the whole-register loop, so its loads are unmasked there).
///
/// # Safety
/// As [`tile_body`]; `n` elements at `k` lie inside every row.
#[inline(always)]
unsafe fn step<T: Elem>(
    s: &mut [[__m512; NR]; MR],
    ap: [*const T; MR],
    bp: [*const T; NR],
    k: usize,
    n: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let x: [T::V; MR] = std::array::from_fn(|q| T::load(ap[q].add(k), n));
        for (p, bp) in bp.iter().enumerate() {
            let y = T::load(bp.add(k), n);
            for (s, x) in s.iter_mut().zip(&x) {
                s[p] = T::madd(s[p], *x, y);
            }
        }
    }
}

/// `rows` rows of `row` elements, row `p` set from the f32 values `fill(p, ..)` writes (every
/// element), in parallel.
fn laid<T: Elem + Default>(
    rows: usize,
    row: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<T> {
    let mut v = vec![T::default(); rows * row];
    if row > 0 {
        v.par_chunks_mut(row)
            .enumerate()
            .for_each_init(Vec::new, |buf, (p, dst)| T::fill(dst, buf, &|d| fill(p, d)));
    }
    v
}

/// Where a convolution's weight gradient reads its input: the zero-padded image split into
/// its stride phases (`P[a][b][y][x] = padded[y * sh + a][x * sw + b]`, one plane per channel
/// and phase a tap uses), each plane flattened with the phases' width `ws`. Tap `(ky, kx)` of
/// output `(oy, ox)` reads plane `(ky % sh, kx % sw)` at row `oy + ky / sh`, column
/// `ox + kx / sw`: grid column `oy * ws + ox` plus the tap's offset, as at stride 1 (one
/// phase, the padded width). The grid's last `ws - ow` columns of each row are computed and
/// dropped (their output gradient is zero).
#[derive(Debug, Clone)]
pub(crate) struct Grid {
    c: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    s: [usize; 2],
    pt: usize,
    pl: usize,
    oh: usize,
    ow: usize,
    /// Phases used per axis (`min(stride, kernel)`), and each plane's rows and columns.
    phases: [usize; 2],
    hs: usize,
    ws: usize,
}

impl Grid {
    /// The grid of a `[kh, kw]` convolution with stride `s` over `[c, h, w]` images padded by
    /// `[top, bottom, left, right]`; `None` where the kernel is larger than the padded image
    /// or a stride is zero.
    pub(crate) fn new(
        c: usize,
        [h, w]: [usize; 2],
        k: [usize; 2],
        s: [usize; 2],
        [pt, pb, pl, pr]: [usize; 4],
    ) -> Option<Grid> {
        let (hp, wp) = (h + pt + pb, w + pl + pr);
        if s.contains(&0) || k.contains(&0) || hp < k[0] || wp < k[1] {
            return None;
        }
        Some(Grid {
            c,
            h,
            w,
            k,
            s,
            pt,
            pl,
            oh: (hp - k[0]) / s[0] + 1,
            ow: (wp - k[1]) / s[1] + 1,
            phases: [s[0].min(k[0]), s[1].min(k[1])],
            hs: hp.div_ceil(s[0]),
            ws: wp.div_ceil(s[1]),
        })
    }

    pub(crate) fn out(&self) -> [usize; 2] {
        [self.oh, self.ow]
    }

    /// Floats per plane: its rows and the farthest tap's column reach past them.
    fn plane(&self) -> usize {
        self.hs * self.ws + (self.k[1] - 1) / self.s[1]
    }

    /// Plane `(a, b)` of channel `img [h, w]` into `dst` (every element written).
    fn fill_plane(&self, img: &[f32], [a, b]: [usize; 2], dst: &mut [f32]) {
        let ([sh, sw], ws) = (self.s, self.ws);
        let (rows, rest) = dst.split_at_mut(self.hs * ws);
        rest.fill(0.0);
        for (y, row) in rows.chunks_exact_mut(ws).enumerate() {
            let Some(iy) = (y * sh + a).checked_sub(self.pt).filter(|&iy| iy < self.h) else {
                row.fill(0.0);
                continue;
            };
            // Columns x0..x1 lie inside the image: x * sw + b - pl in 0..w.
            let x0 = self.pl.saturating_sub(b).div_ceil(sw).min(ws);
            let x1 = (self.w + self.pl)
                .saturating_sub(b)
                .div_ceil(sw)
                .clamp(x0, ws);
            row[..x0].fill(0.0);
            row[x1..].fill(0.0);
            let src = &img[iy * self.w + (x0 * sw + b - self.pl)..];
            for (v, s) in row[x0..x1].iter_mut().zip(src.iter().step_by(sw)) {
                *v = *s;
            }
        }
    }
}

/// `dW [m, c, kh, kw]` of the convolution over `grid` of `images [n, c, h, w]` with output
/// gradient `dy [n, m, oh, ow]`, in f32 or (`T = u16`) with bf16 operands: `dy` laid on the
/// grid (`ws - ow` zeros after each row), and each input row a channel's phase plane at one
/// tap's offset (`c * taps + tap`, the weight's order).
pub(crate) fn grid_weight_grad<T: Elem + Default>(
    grid: &Grid,
    images: &[f32],
    dy: &[f32],
    m: usize,
    n: usize,
) -> Vec<f32> {
    let (c, [kh, kw], [sh, sw], [pa, pb]) = (grid.c, grid.k, grid.s, grid.phases);
    let (oh, ow, ws, plane) = (grid.oh, grid.ow, grid.ws, grid.plane());
    let img = grid.h * grid.w;
    let x: Vec<T> = laid(n * c * pa * pb, plane, |p, dst| {
        let (ch, phase) = (p / (pa * pb), p % (pa * pb));
        grid.fill_plane(&images[ch * img..][..img], [phase / pb, phase % pb], dst);
    });
    let len = oh * ws;
    let g: Vec<T> = laid(n * m, len, |p, dst| {
        let src = dy[p * oh * ow..][..oh * ow].chunks_exact(ow.max(1));
        for (src, dst) in src.zip(dst.chunks_exact_mut(ws)) {
            dst[..ow].copy_from_slice(src);
            dst[ow..].fill(0.0);
        }
    });
    let b_rows = (0..c * kh * kw)
        .map(|j| {
            let (ch, ky, kx) = (j / (kh * kw), j / kw % kh, j % kw);
            let phase = (ch * pa + ky % sh) * pb + kx % sw;
            phase * plane + (ky / sh) * ws + kx / sw
        })
        .collect();
    weight_grad(&Rows {
        a: &g,
        a_img: m * len,
        a_row: len,
        m,
        b: &x,
        b_img: c * pa * pb * plane,
        b_rows,
        len,
        n,
    })
}

/// `dW [m, c]` of a 1x1 stride-1 convolution of `x [n, c, hw]` with output gradient
/// `dy [n, m, hw]`: in f32 both read in place, with bf16 operands (`half`) each converted once.
pub(crate) fn pointwise_weight_grad(
    x: &[f32],
    dy: &[f32],
    [n, c, m, hw]: [usize; 4],
    half: bool,
) -> Vec<f32> {
    let dims = [n, c, m, hw];
    if !half {
        return weight_grad(&pointwise_rows(dy, x, dims));
    }
    let xh: Vec<u16> = laid(n * c, hw, |p, d| d.copy_from_slice(&x[p * hw..][..hw]));
    let dyh: Vec<u16> = laid(n * m, hw, |p, d| d.copy_from_slice(&dy[p * hw..][..hw]));
    weight_grad(&pointwise_rows(&dyh, &xh, dims))
}

/// The rows of a 1x1 layer's weight gradient: `dy [n, m, hw]` and `x [n, c, hw]` as they lie.
fn pointwise_rows<'a, T>(dy: &'a [T], x: &'a [T], [n, c, m, hw]: [usize; 4]) -> Rows<'a, T> {
    Rows {
        a: dy,
        a_img: m * hw,
        a_row: hw,
        m,
        b: x,
        b_img: c * hw,
        b_rows: (0..c).map(|ch| ch * hw).collect(),
        len: hw,
        n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::bf16::{from_bf16, to_bf16};

    /// Uniform values in [-1, 1) from a fixed seed (an LCG: no dependence on `rand`'s
    /// streams).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// `dW [m, c, kh, kw]` of a convolution with stride `s` by its definition, in f64: the sum
    /// over images, outputs `o` and pixels `(oy, ox)` of
    /// `dY[i][o][oy][ox] * X[i][c][oy * sh + ky - pt][ox * sw + kx - pl]`.
    #[allow(clippy::too_many_arguments)]
    fn definition(
        x: &[f32],
        dy: &[f32],
        [n, c, h, w]: [usize; 4],
        [m, kh, kw]: [usize; 3],
        [sh, sw]: [usize; 2],
        [pt, pl]: [usize; 2],
        [oh, ow]: [usize; 2],
    ) -> Vec<f64> {
        let mut dw = vec![0f64; m * c * kh * kw];
        for (i, o, ch, ky, kx) in (0..n).flat_map(|i| {
            (0..m).flat_map(move |o| {
                (0..c).flat_map(move |ch| {
                    (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (i, o, ch, ky, kx)))
                })
            })
        }) {
            let mut sum = 0f64;
            for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                let iy = (oy * sh + ky).wrapping_sub(pt);
                let ix = (ox * sw + kx).wrapping_sub(pl);
                if iy < h && ix < w {
                    let g = dy[((i * m + o) * oh + oy) * ow + ox] as f64;
                    sum += g * x[((i * c + ch) * h + iy) * w + ix] as f64;
                }
            }
            dw[((o * c + ch) * kh + ky) * kw + kx] += sum;
        }
        dw
    }

    fn assert_close(ours: &[f32], want: &[f64], what: &str) {
        assert_eq!(ours.len(), want.len(), "{what}");
        let scale = want.iter().fold(1e-3f64, |a, v| a.max(v.abs()));
        for (k, (o, r)) in ours.iter().zip(want).enumerate() {
            let d = (*o as f64 - r).abs() / scale;
            assert!(d < 1e-5, "{what}: element {k}: {o} against {r}");
        }
    }

    /// Weight gradients read at the taps' offsets equal the definition (bf16 operands: over
    /// the rounded values, where the CPU has AVX512-BF16): rows longer than a block (split
    /// into pieces), rows short enough for several images per block, output and input rows
    /// past whole tiles and past one task, uneven padding, 5x5 and 1x1 kernels, and strides
    /// of 2 (ResNet's 7x7 stem, its 3x3 and 1x1 downsampling, TF's uneven SAME) and 3.
    #[test]
    fn grid_weight_gradients_match_the_definition() {
        if !Isa::get().avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let cases = [
            // (n, c, m, [h, w], [kh, kw], [sh, sw], [pt, pb, pl, pr])
            (2, 3, 5, [95, 90], [3, 3], [1, 1], [1, 1, 1, 1]),
            (2, 13, 37, [6, 5], [3, 3], [1, 1], [1, 1, 1, 1]),
            (2, 4, 6, [9, 8], [5, 5], [1, 1], [2, 0, 1, 2]),
            (3, 3, 2, [4, 4], [1, 1], [1, 1], [0, 0, 0, 0]),
            (2, 2, 3, [7, 9], [3, 3], [1, 1], [0, 0, 0, 0]),
            (2, 3, 7, [23, 21], [7, 7], [2, 2], [3, 3, 3, 3]),
            (2, 5, 4, [12, 11], [3, 3], [2, 2], [1, 1, 1, 1]),
            (2, 6, 9, [11, 12], [1, 1], [2, 2], [0, 0, 0, 0]),
            (1, 3, 4, [10, 9], [3, 3], [2, 2], [0, 1, 0, 1]),
            (2, 2, 3, [13, 14], [4, 5], [3, 2], [1, 2, 2, 0]),
        ];
        let bf16 = Bf16Kernel::Avx512.available();
        for (n, c, m, [h, w], k, s, pads) in cases {
            let grid = Grid::new(c, [h, w], k, s, pads).expect("kernel fits");
            let [oh, ow] = grid.out();
            let x = values(n * c * h * w, 1);
            let dy = values(n * m * oh * ow, 2);
            let [pt, _, pl, _] = pads;
            let what = format!("{n}x{c}x{h}x{w} -> {m}, {k:?} stride {s:?} {pads:?}");
            let dims = ([n, c, h, w], [m, k[0], k[1]]);
            let ours = grid_weight_grad::<f32>(&grid, &x, &dy, m, n);
            let want = definition(&x, &dy, dims.0, dims.1, s, [pt, pl], [oh, ow]);
            assert_close(&ours, &want, &what);
            if bf16 {
                // bf16 operands: the definition over the rounded values (each product exact
                // in f32, the sums in f32).
                let ours = grid_weight_grad::<u16>(&grid, &x, &dy, m, n);
                let (x, dy) = (rounded(&x), rounded(&dy));
                let want = definition(&x, &dy, dims.0, dims.1, s, [pt, pl], [oh, ow]);
                assert_close(&ours, &want, &format!("bf16 {what}"));
            }
        }
    }

    fn rounded(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| from_bf16(to_bf16(x))).collect()
    }

    /// 1x1 weight gradients read in place equal the definition (and in bf16, as above), over rows longer than a block
    /// and shorter than a vector, with output and input rows past one task.
    #[test]
    fn pointwise_weight_gradients_match_the_definition() {
        if !Isa::get().avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for (n, c, m, hw) in [(2, 5, 7, 9000), (4, 101, 35, 7), (1, 1, 1, 16)] {
            let x = values(n * c * hw, 3);
            let dy = values(n * m * hw, 4);
            let ours = pointwise_weight_grad(&x, &dy, [n, c, m, hw], false);
            let want = definition(&x, &dy, [n, c, hw, 1], [m, 1, 1], [1, 1], [0, 0], [hw, 1]);
            assert_close(&ours, &want, &format!("{n}x{c}x{hw} -> {m}"));
            if Bf16Kernel::Avx512.available() {
                let ours = pointwise_weight_grad(&x, &dy, [n, c, m, hw], true);
                let (x, dy) = (rounded(&x), rounded(&dy));
                let want = definition(&x, &dy, [n, c, hw, 1], [m, 1, 1], [1, 1], [0, 0], [hw, 1]);
                assert_close(&ours, &want, &format!("bf16 {n}x{c}x{hw} -> {m}"));
            }
        }
    }
}
