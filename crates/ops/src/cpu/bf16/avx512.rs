//! AVX512-BF16: `vdpbf16ps` (16 f32 lanes += pair-wise products of 32 bf16), and the f32 to
//! bf16 conversions every kernel packs with (`vcvtne2ps2bf16`: ties to even).

use std::arch::x86_64::*;

use super::{BLOCK, Bias, BlockRows, Elem, NB, Seg, a_offset, b_offset};

pub(super) fn available() -> bool {
    static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // `COMMITTEE_ISA` below avx512 turns it off (and AMX with it).
    *A.get_or_init(|| {
        crate::cpu::isa::Isa::get().avx512()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16")
    })
}

pub(crate) fn bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 512 bits of plain data.
    unsafe { std::mem::transmute(v) }
}

fn ih(v: __m512bh) -> __m512i {
    // SAFETY: both are 512 bits of plain data.
    unsafe { std::mem::transmute(v) }
}

/// `dst = bf16(src)`, 32 at a time, the tail masked (so every element takes the same
/// instruction: it treats subnormal inputs as zero, unlike the scalar rounding).
///
/// # Safety
/// `dst` is valid for `src.len()` writes.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn convert(src: &[f32], dst: *mut u16) {
    let n = src.len();
    let mut i = 0;
    while i < n {
        let w = (n - i).min(32);
        let m = low_bits(w);
        // SAFETY: the mask keeps every access inside `src[i..i + w]` / `dst[i..i + w]` (the
        // caller's contract).
        unsafe {
            let v = load32(src.as_ptr().add(i), m);
            _mm512_mask_storeu_epi16(dst.add(i) as *mut i16, m, v);
        }
        i += w;
    }
}

/// The mask of the first `w` of 32 lanes (all of them from 32 on).
fn low_bits(w: usize) -> u32 {
    if w >= 32 { u32::MAX } else { (1u32 << w) - 1 }
}

/// `super::weave`: row pair `p` of every column block, 16 columns at a time.
///
/// # Safety
/// As `super::weave`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn weave<T: Elem>(
    r0: &[T],
    r1: Option<&[T]>,
    out: *mut u16,
    p: usize,
    k_pad: usize,
) {
    for (jb, j0) in (0..r0.len()).step_by(NB).enumerate() {
        let w = (r0.len() - j0).min(NB);
        // SAFETY: the caller's contract: block `jb`'s row pair `p` is 32 writable elements.
        unsafe {
            let dst = out.add(b_offset(p, jb, k_pad));
            interleave(&r0[j0..j0 + w], r1.map(|r| &r[j0..j0 + w]), dst);
        }
    }
}

/// Column block `j0 / 16` of `PackedB::pack_transposed_segments` (its `w` columns from `j0`
/// on; zeros for the rest and past each segment's `k`) written to `block`, 32 elements of 16
/// columns at a time: each column's 32 converted in one register (16 pairs), the 16 registers
/// transposed in place so that each holds one pair of all 16 columns, stored whole. Why: pair
/// by pair through a buffer, the copy was 5 % of a ResNet-50 bf16 training step.
///
/// # Safety
/// Each segment holds its columns `j0..j0 + w` (`k` from `j * ld`); `block` is valid for
/// `segs.len() * seg * 16` writes; `seg` is a multiple of 32 and at least `k`; `w <= 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn transposed_block(
    segs: &[&[f32]],
    (k, seg, ld): (usize, usize, usize),
    (j0, w): (usize, usize),
    block: *mut u16,
) {
    let mask = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
    let mut r = [_mm512_setzero_si512(); 16];
    for (si, src) in segs.iter().enumerate() {
        for q0 in (0..seg).step_by(32) {
            let left = k.saturating_sub(q0);
            let (lo_m, hi_m) = (mask(left), mask(left.saturating_sub(16)));
            for (jj, r) in r.iter_mut().enumerate() {
                *r = if jj < w && left > 0 {
                    // SAFETY: masked loads read only elements below `k` of column `j0 + jj`
                    // (the caller's contract); the addresses are formed without `add`.
                    unsafe {
                        let at = src.as_ptr().wrapping_add((j0 + jj) * ld + q0);
                        let lo = _mm512_maskz_loadu_ps(lo_m, at);
                        let hi = _mm512_maskz_loadu_ps(hi_m, at.wrapping_add(16));
                        ih(_mm512_cvtne2ps_pbh(hi, lo))
                    }
                } else {
                    _mm512_setzero_si512()
                };
            }
            transpose_16x16(&mut r);
            let p0 = (si * seg + q0) / 2;
            for (t, r) in r.iter().enumerate() {
                // SAFETY: pair p0 + t < segs.len() * seg / 2: inside `block` (the caller's
                // contract).
                unsafe { _mm512_storeu_si512(block.add((p0 + t) * 2 * NB) as *mut _, *r) };
            }
        }
    }
}

/// `r[i]`'s 32-bit lane `l` becomes `r[l]`'s lane `i`: at each of four levels `b` (8, 4, 2,
/// 1) rows `i` and `i + b` swap the off-diagonal `b x b` blocks, the recursive transpose.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose_16x16(r: &mut [__m512i; 16]) {
    for b in [8usize, 4, 2, 1] {
        let idx = |f: &dyn Fn(usize) -> usize| {
            let mut v = [0i32; 16];
            for (l, v) in v.iter_mut().enumerate() {
                *v = f(l) as i32;
            }
            // SAFETY: 64 bytes read from a 64-byte array.
            unsafe { _mm512_loadu_si512(v.as_ptr() as *const _) }
        };
        // Row i keeps its lanes with bit b clear and takes row i + b's lanes l - b for the
        // rest; row i + b takes row i's lanes l + b where bit b is clear and keeps the rest
        // (16 + l selects the second operand's lane l).
        let top = idx(&|l| if l & b == 0 { l } else { 16 + l - b });
        let bottom = idx(&|l| if l & b == 0 { l + b } else { 16 + l });
        for i in (0..16).filter(|i| i & b == 0) {
            let (x, y) = (r[i], r[i + b]);
            r[i] = _mm512_permutex2var_epi32(x, top, y);
            r[i + b] = _mm512_permutex2var_epi32(x, bottom, y);
        }
    }
}

/// One packed row pair (see `PackedB`): `out[2c] = bf16(r0[c])`, `out[2c + 1] = bf16(r1[c])`,
/// zeros past `r0.len()` (at most 16) and where `r1` is absent.
///
/// # Safety
/// `out` is valid for 32 writes (it need not be initialised).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn interleave<T: Elem>(r0: &[T], r1: Option<&[T]>, out: *mut u16) {
    assert!(r0.len() <= NB);
    let m = ((1u32 << r0.len()) - 1) as u16;
    // SAFETY: masked loads stay inside `r0` / `r1` (`r1` as long as `r0`); `out` takes 32
    // (the caller's contract).
    unsafe {
        let lo = load16(r0.as_ptr(), m);
        let hi = match r1 {
            Some(r) => load16(r.as_ptr(), m),
            None => _mm512_setzero_ps(),
        };
        _mm512_storeu_si512(out as *mut _, pair(lo, hi));
    }
}

/// `lo` and `hi` in bf16, woven: lane `2c` is `bf16(lo[c])`, lane `2c + 1` `bf16(hi[c])`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) fn pair(lo: __m512, hi: __m512) -> __m512i {
    let v = ih(_mm512_cvtne2ps_pbh(hi, lo));
    // Lane 2c takes element c (row 0), lane 2c + 1 element 16 + c (row 1).
    let idx = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    _mm512_permutexvar_epi16(idx, v)
}

/// The elements of `p` under mask `m` (up to 16) as f32, zeros elsewhere: bf16 widened
/// exactly (its bits are the f32's upper half), so converting back gives the same bits.
///
/// # Safety
/// The masked elements of `p` are readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn load16<T: Elem>(p: *const T, m: __mmask16) -> __m512 {
    // SAFETY: the caller's contract; only masked lanes are read.
    unsafe {
        if T::BF16 {
            let h = _mm512_maskz_loadu_epi16(m as __mmask32, p as *const i16);
            let w = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(h));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
        } else {
            _mm512_maskz_loadu_ps(m, p as *const f32)
        }
    }
}

/// How far ahead (in bf16) the left operand's rows are prefetched: two 32-column parts.
/// Why: a panel's 8 rows advance 2 KB per part, a pattern the hardware prefetcher did not
/// follow once the weights lay beyond L2 (ResNet-50's 7x7 layers at 33-42 GMAC/s on one AMD
/// EPYC thread without, 66-83 with; 14x14 1x1 layers 75 -> 91; the whole model's bf16
/// forward 1.07x, alternated call by call). Four parts ahead ran no faster.
const AHEAD: usize = 2 * 1024;

/// Prefetches the 8 rows' lines of one 32-column part of a packed left panel (64 bytes per
/// row, the rows 64 bytes apart). The address may lie past the panel (a prefetch does not
/// fault).
#[inline]
#[target_feature(enable = "avx512f")]
fn prefetch_rows(at: *const u16) {
    for r in 0..8 {
        // A prefetch reads nothing architecturally and never faults.
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(r * 32) as *const i8);
    }
}

/// Rows of [`block`]'s register tile.
const R: usize = 8;

/// `c [32, 32] = a [32, k_pad] x b` (see `super::block`): 8 rows x 32 columns at a time,
/// 16 accumulators, each pair of bf16 in a row broadcast against two packed column blocks.
///
/// # Safety
/// The slices hold what `super::block` asserts.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn block(
    a: &[u16],
    b: &[u16],
    jb: usize,
    k_pad: usize,
    c: &mut [f32; BLOCK * BLOCK],
) {
    // SAFETY: the caller's contract; the stores stay inside `c` (rows rb*8..rb*8+8).
    unsafe {
        block_body(a, b, jb, k_pad, |rb, acc| {
            for (r, acc) in acc.iter().enumerate() {
                let row = c.as_mut_ptr().add((rb * R + r) * BLOCK);
                _mm512_storeu_ps(row, acc[0]);
                _mm512_storeu_ps(row.add(NB), acc[1]);
            }
        })
    }
}

/// Where [`block_finished`] puts a block: its first row `i0` and column `j0`, its `rows` and
/// `cols` (at most 32 each), in an output (and residual) whose rows are `n` apart.
pub(super) type Place = ([usize; 2], [usize; 2], usize);

/// [`block`] finished as each 8-row group leaves the registers: `min(hi, max(lo, sum +
/// bias[row] + residual))`, stored as `T` (rounded to bf16 for bf16), the same values
/// `super::write_block` gives for `Bias::Rows` / `Bias::RowsPlusBf16` (or no bias) and a
/// clamp; rows past `rows` and columns past `cols` neither read nor written. Why: stored
/// first and read back by the write-back, the block went through L1 twice more.
///
/// # Safety
/// As [`block`]; `bias` holds rows `i0..i0 + rows`; the residual and output hold elements
/// `(i0 + r) * n + j0 + c` for `r < rows`, `c < cols`, the output's written by this call
/// alone.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn block_finished<T: Elem>(
    a: &[u16],
    b: &[u16],
    k_pad: usize,
    bias: Option<&[f32]>,
    res: Option<&[u16]>,
    [lo, hi]: [f32; 2],
    ([i0, j0], [rows, cols], n): Place,
    out: *mut T,
) {
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let all = low_bits(cols);
    let (m0, m1) = (all as u16, (all >> 16) as u16);
    // SAFETY: the caller's contract (rows below `rows`, masked columns below `cols`).
    unsafe {
        block_body(a, b, 0, k_pad, |rb, acc| {
            for (r, acc) in acc.iter().enumerate().take(rows.saturating_sub(rb * R)) {
                let row = i0 + rb * R + r;
                let at = row * n + j0;
                let add = |v: __m512| match bias {
                    Some(b) => _mm512_add_ps(v, _mm512_set1_ps(*b.get_unchecked(row))),
                    None => v,
                };
                let (mut v0, mut v1) = (add(acc[0]), add(acc[1]));
                if let Some(res) = res {
                    v0 = _mm512_add_ps(v0, load16(res.as_ptr().add(at), m0));
                    v1 = _mm512_add_ps(v1, load16(res.as_ptr().wrapping_add(at + NB), m1));
                }
                // NaN kept (see `Epilogue::clamp_bounds`).
                let v0 = _mm512_min_ps(hi, _mm512_max_ps(lo, v0));
                let v1 = _mm512_min_ps(hi, _mm512_max_ps(lo, v1));
                store_lanes(out.add(at), [v0, v1], [m0, m1]);
            }
        })
    }
}

/// The products of [`block`], each 8-row group's accumulators handed to `done(group, acc)`.
///
/// # Safety
/// As [`block`]; AVX-512F, BW and BF16 (inlined into functions that enable them).
#[inline(always)]
unsafe fn block_body(
    a: &[u16],
    b: &[u16],
    jb: usize,
    k_pad: usize,
    mut done: impl FnMut(usize, &[[__m512; 2]; R]),
) {
    for rb in 0..BLOCK / R {
        // SAFETY: AVX-512F (the caller's contract).
        let mut acc = [[unsafe { _mm512_setzero_ps() }; 2]; R];
        // SAFETY: reads rows rb*8..rb*8+8 of `a` (k_pad each) and the tiles of column blocks
        // jb, jb + 1 of `b`, inside the slices (the caller's contract).
        unsafe {
            let b0 = b.as_ptr().add(b_offset(0, jb, k_pad));
            let b1 = b.as_ptr().add(b_offset(0, jb + 1, k_pad));
            for p in 0..k_pad / 2 {
                let vb0 = bh(_mm512_loadu_si512(b0.add(p * 2 * NB) as *const _));
                let vb1 = bh(_mm512_loadu_si512(b1.add(p * 2 * NB) as *const _));
                let ap = a.as_ptr().add(a_offset(rb * R, 2 * p, k_pad));
                if p % 16 == 0 {
                    prefetch_rows(ap.wrapping_add(AHEAD));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    // Rows rb*8.. lie in one tile half, 32 elements apart.
                    let pair = (ap.add(r * 32) as *const i32).read_unaligned();
                    let va = bh(_mm512_set1_epi32(pair));
                    acc[0] = _mm512_dpbf16_ps(acc[0], va, vb0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], va, vb1);
                }
            }
        }
        done(rb, &acc);
    }
}

/// Columns `j0 .. j0 + cols` (at most 32; zeros past `cols`) of the row-major `[k, ld]` matrix
/// `x` (bf16, or f32 rounded to bf16) woven into `buf` as column blocks 0 and 1 of a packed right operand (see
/// `super::b_offset`) with `k_pad / 2` row pairs, zeros past `k`: two loads and two permutes
/// per row pair (and two conversions for f32). See `super::gemm_rows_into`.
///
/// # Safety
/// None beyond the asserted extents.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn weave_block<S: Elem>(
    x: &[S],
    (k, ld): (usize, usize),
    (j0, cols): (usize, usize),
    k_pad: usize,
    buf: &mut [u16],
) {
    assert!(cols <= BLOCK && k <= k_pad && buf.len() >= 2 * NB * k_pad);
    assert!(k == 0 || (j0 + cols <= ld && x.len() >= (k - 1) * ld + j0 + cols));
    let m = low_bits(cols);
    // Lane 2c of the first block takes row 0's column c, lane 2c + 1 row 1's (index 32 + c:
    // the second operand); the second block the same for columns 16..32.
    let lo = _mm512_set_epi16(
        47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5, 36, 4,
        35, 3, 34, 2, 33, 1, 32, 0,
    );
    let hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    let (b0, b1) = (buf.as_mut_ptr(), buf.as_mut_ptr().wrapping_add(NB * k_pad));
    // SAFETY: masked loads of rows 2p and 2p + 1 < k of `x`, columns j0..j0 + cols (asserted
    // inside `x`; a row at or past `k` read with an empty mask, its address formed without
    // `add`); pair p < k_pad / 2 of both blocks inside `buf` (asserted).
    unsafe {
        let xr = x.as_ptr().wrapping_add(j0);
        for p in 0..k_pad / 2 {
            let m0 = if 2 * p < k { m } else { 0 };
            let m1 = if 2 * p + 1 < k { m } else { 0 };
            let r0 = load32(xr.wrapping_add(2 * p * ld), m0);
            let r1 = load32(xr.wrapping_add((2 * p + 1) * ld), m1);
            _mm512_storeu_si512(
                b0.add(p * 2 * NB) as *mut _,
                _mm512_permutex2var_epi16(r0, lo, r1),
            );
            _mm512_storeu_si512(
                b1.add(p * 2 * NB) as *mut _,
                _mm512_permutex2var_epi16(r0, hi, r1),
            );
        }
    }
}

/// The elements of `p` under mask `m` (up to 32) as bf16, zeros elsewhere: bf16 as it is,
/// f32 rounded as [`convert`] rounds.
///
/// # Safety
/// The masked elements of `p` are readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn load32<S: Elem>(p: *const S, m: u32) -> __m512i {
    // SAFETY: the caller's contract; only masked lanes are read.
    unsafe {
        if S::BF16 {
            _mm512_maskz_loadu_epi16(m, p as *const i16)
        } else {
            let p = p as *const f32;
            let lo = _mm512_maskz_loadu_ps(m as u16, p);
            let hi = _mm512_maskz_loadu_ps((m >> 16) as u16, p.wrapping_add(16));
            ih(_mm512_cvtne2ps_pbh(hi, lo))
        }
    }
}

/// `super::taps`' block on AVX512-BF16: `c [32, 32] = sum over taps t of a [32, tap t's
/// kc_pad] x image [kc_pad, j0 + offs[t] ..]`, 8 rows x 32 columns at a time as [`block`],
/// each packed row pair of a tap read from the padded image at the tap's offset.
///
/// # Safety
/// The slices hold what `amx::block_taps` asserts (asserted here too).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn block_taps(
    a: &[u16],
    ka: usize,
    kc_pad: usize,
    image: &[u16],
    len: usize,
    j0: usize,
    offs: &[usize],
    c: &mut [f32; BLOCK * BLOCK],
) {
    const R: usize = 8;
    assert!(kc_pad.is_multiple_of(32) && a.len() >= BLOCK * ka && ka >= offs.len() * kc_pad);
    assert!(image.len() >= kc_pad * len && offs.iter().all(|o| j0 + BLOCK + o <= len));
    for rb in 0..BLOCK / R {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY: rows rb*8..rb*8+8 of the panel at columns t * kc_pad + 2p (inside the
        // asserted `BLOCK * ka`), and per channel pair p < kc_pad / 2 the image's columns
        // j0 + off .. + 32 (inside `len`, asserted): 64 bytes at 4 * (p * len + j0 + off).
        unsafe {
            let rows = a.as_ptr().add(a_offset(rb * R, 0, ka));
            for (t, &off) in offs.iter().enumerate() {
                let at = rows.add(t * kc_pad / 32 * 1024);
                let bt = image.as_ptr().add((j0 + off) * 2);
                for p in 0..kc_pad / 2 {
                    let b0 = bt.add(p * len * 2);
                    let vb0 = bh(_mm512_loadu_si512(b0 as *const _));
                    let vb1 = bh(_mm512_loadu_si512(b0.add(2 * NB) as *const _));
                    let ap = at.add(p / 16 * 1024 + p % 16 * 2);
                    if p % 16 == 0 {
                        prefetch_rows(ap.wrapping_add(AHEAD));
                    }
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let pair = (ap.add(r * 32) as *const i32).read_unaligned();
                        let va = bh(_mm512_set1_epi32(pair));
                        acc[0] = _mm512_dpbf16_ps(acc[0], va, vb0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], va, vb1);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let row = c.as_mut_ptr().add((rb * R + r) * BLOCK);
                _mm512_storeu_ps(row, acc[0]);
                _mm512_storeu_ps(row.add(NB), acc[1]);
            }
        }
    }
}

/// Lanes `i..i + 16` of run `s` in row `r` of the block `c`, plus the block's addends there
/// (`bias`'s row value, column values or residual), and the mask of the lanes inside the run.
///
/// # Safety
/// As [`write_block`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn summed(
    c: &[f32; BLOCK * BLOCK],
    b: &BlockRows,
    bias: Bias,
    (r, s, i): (usize, &Seg, usize),
) -> (__m512, __mmask16) {
    let k = ((1u32 << s.len.saturating_sub(i).min(16)) - 1) as __mmask16;
    let res = s.res_at + r * b.res_stride + i;
    // SAFETY: masked lanes below `s.len` only, inside the block's row and (the caller's
    // checks) the addends.
    unsafe {
        let v = _mm512_maskz_loadu_ps(k, c.as_ptr().add(r * BLOCK + s.col + i));
        let row = |x: &[f32]| _mm512_add_ps(v, _mm512_set1_ps(x[b.i0 + r]));
        let v = match bias {
            Bias::None => v,
            Bias::Rows(x) => row(x),
            Bias::Columns(q) => {
                let q = q.as_ptr().add(b.j0 + s.col + i);
                _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, q))
            }
            Bias::RowsPlus(x, q) => {
                _mm512_add_ps(row(x), _mm512_maskz_loadu_ps(k, q.as_ptr().add(res)))
            }
            Bias::RowsPlusBf16(x, q) => _mm512_add_ps(row(x), load16(q.as_ptr().add(res), k)),
        };
        (v, k)
    }
}

/// `super::write_block` for no activation, ReLU or ReLU6 (a clamp to `bounds`): every row
/// and run of the block summed, clamped and stored (rounded to bf16 for a bf16 output) 16
/// lanes at a time in one call.
///
/// # Safety
/// As `super::write_block`, whose checks on the addends' lengths have passed.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn write_block<T: Elem>(
    c: &[f32; BLOCK * BLOCK],
    b: &BlockRows,
    bias: Bias,
    bounds: [f32; 2],
    out: *mut T,
) {
    let [lo, hi] = bounds;
    // No activation: nothing to clamp.
    let clamp = lo > f32::NEG_INFINITY || hi < f32::INFINITY;
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    for r in 0..b.rows {
        for s in b.segs {
            // Lanes i..i + 16 of the run, clamped.
            let lanes = |i: usize| {
                // SAFETY: the caller's contract.
                let (mut v, k) = unsafe { summed(c, b, bias, (r, s, i)) };
                if clamp {
                    // NaN kept (see `Epilogue::clamp_bounds`).
                    v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                }
                (v, k)
            };
            let ((a, ka), (z, kz)) = (lanes(0), lanes(16));
            // SAFETY: the masks keep the stores inside the run's `s.len` outputs (the
            // caller's contract).
            unsafe { store_lanes(out.add(s.at + r * b.stride), [a, z], [ka, kz]) };
        }
    }
}

/// 32 lanes, `a` then `z`, stored at `dst` as `T` (rounded to bf16 for bf16) where the masks
/// `ka`, `kz` are set: one row of a finished block.
///
/// # Safety
/// `dst`'s elements under the masks are writable (the address past a masked-off half is
/// formed without `add`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn store_lanes<T: Elem>(dst: *mut T, [a, z]: [__m512; 2], [ka, kz]: [__mmask16; 2]) {
    // SAFETY: the caller's contract; only masked lanes are written.
    unsafe {
        if T::BF16 {
            let m = (ka as u32) | ((kz as u32) << 16);
            _mm512_mask_storeu_epi16(dst as *mut i16, m, ih(_mm512_cvtne2ps_pbh(z, a)));
        } else {
            _mm512_mask_storeu_ps(dst as *mut f32, ka, a);
            _mm512_mask_storeu_ps((dst as *mut f32).wrapping_add(NB), kz, z);
        }
    }
}

/// The addends of `super::write_block` added into the block itself (`c`'s rows and runs), for
/// an activation applied to the whole block next (GELU, SiLU: see `super::write_block`).
///
/// # Safety
/// As [`write_block`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn add_in_place(c: &mut [f32; BLOCK * BLOCK], b: &BlockRows, bias: Bias) {
    for r in 0..b.rows {
        for s in b.segs {
            for i in [0, 16] {
                // SAFETY: the caller's contract; the store takes the lanes just read.
                unsafe {
                    let (v, k) = summed(c, b, bias, (r, s, i));
                    _mm512_mask_storeu_ps(c.as_mut_ptr().add(r * BLOCK + s.col + i), k, v);
                }
            }
        }
    }
}
