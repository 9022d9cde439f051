//! Weight gradients of convolutions (any stride, 1x1 too) on maps under 56x56 (ResNet's
//! 28x28, 14x14 and 7x7 stages) as outer products over pixels on AVX-512: 16 output channels
//! in a vector's lanes, one input value broadcast, every pixel of every image summed in
//! registers. At 28x28 this beat the dot products of [`super::wgrad`] (bf16 1.12-1.60x per
//! layer); at 56x56 it did not (0.91-1.01x, docs/benchmarks.md).
//!
//! Why: `dW = sum_i dY_i col(X_i)^T` went through each image unfolded (nine copies of each
//! value), both operands packed again, and a matrix product whose inner dimension is one
//! image's 196 or 49 pixels (several images per product under bf16): ResNet-50's 14x14 3x3
//! layer took 11.3 ms for its weight gradient in bf16 (~80 GMAC/s on two Zen 4 cores), more
//! than twice its forward. The dot products of [`super::wgrad`] lose on these maps to their
//! lane sums. Here each tile sums `4 x 16` output channels against 6 input channels at one
//! tap over the whole batch in 24 registers, and a tap reads only the output pixels whose
//! input lies inside the image (the padding's products are skipped, as PyTorch's oneDNN
//! does). In bf16 (`vdpbf16ps`) each lane sums a pair of images: both operands are laid out
//! with two images' values side by side, the input `[n / 2][c_in][h][w][2]`, the output
//! gradient `[n / 2][c_out / 16][oh][ow][16][2]`.

use super::conv::Dense;
use super::direct::{Direct, Operand, blocked_input};
use super::*;
use crate::cpu::aligned::Aligned;
use crate::cpu::bf16::avx512 as bf16_avx512;
use crate::cpu::bf16::{Bf16Kernel, Out};

/// Output channels per vector.
const LANES: usize = 16;
/// Vectors of output channels per tile (64 channels).
const MR: usize = 4;
/// Input channels per tile, all at one tap.
const NR: usize = 6;
/// Input channels per task at most: a task's tiles share its 64 channels of the output
/// gradient (from L2) and each group of 6 input channels serves all taps before the next.
const TASK_C: usize = 8 * NR;

static DIRECT_WGRAD: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_TRAIN_DIRECT_WGRAD"));

/// Turns the direct small-map weight gradients on or off for the process, over
/// `COMMITTEE_TRAIN_DIRECT_WGRAD` (to time them against the matrix products in one process:
/// `examples/ab_train.rs` in committee-train, switch `direct-wgrad`).
pub fn set_direct_weight_grad(on: bool) {
    DIRECT_WGRAD.set(on)
}

/// Maps of at least this many output pixels keep [`super::wgrad`]'s dot products.
const MAX_PIX: usize = 56 * 56;

/// Whether the layer's `out` is what its other sizes give.
fn consistent(d: &Dense) -> bool {
    let ([t, l], [b, r]) = (d.pad, d.pad_end);
    let ([kh, kw], [sh, sw]) = (d.k, d.s);
    let size = |len: usize, k: usize, s: usize| match len.checked_sub(k) {
        Some(v) if s > 0 => v / s + 1,
        _ => 0,
    };
    d.out == [size(d.h + t + b, kh, sh), size(d.w + l + r, kw, sw)]
}

/// The fewest input values (channels times taps) per output gradient value for which
/// [`weight_grad`] pays for laying out its operands. Why: MobileNetV2's 32->192 1x1 layer at
/// 28x28 (32 multiply-adds per output gradient value) ran 0.57x (f32) and 0.74x (bf16) of
/// the matrix product, its 64->384 one at 14x14 1.22x and 1.05x.
const MIN_DEPTH: usize = 64;

/// Whether [`weight_grad`] takes the layer `d` with its products (`d.half`; `None`: f32), and
/// in bf16 (AMX keeps its tiles): maps under [`MAX_PIX`] outputs, [`MIN_DEPTH`] input values
/// per output gradient value, [`applies`].
pub(crate) fn layer(d: &Dense) -> Option<bool> {
    let bf16 = match d.half {
        None => false,
        Some(Bf16Kernel::Avx512) => true,
        Some(_) => return None,
    };
    let deep = d.c_in * d.k[0] * d.k[1] >= MIN_DEPTH;
    (d.out[0] * d.out[1] < MAX_PIX && deep && applies(d, bf16)).then_some(bf16)
}

/// Whether [`weight_grad`] takes the layer `d` in f32 (`bf16` false) or bf16: switched on,
/// AVX-512 (and AVX512-BF16 for bf16), output channels in blocks of 64, nonempty input and
/// output maps (the output the one the other sizes give), and padding below the kernel's size.
pub(crate) fn applies(d: &Dense, bf16: bool) -> bool {
    let ([t, l], [b, r]) = (d.pad, d.pad_end);
    let isa = Isa::get().avx512() && (!bf16 || Bf16Kernel::Avx512.available());
    DIRECT_WGRAD.on()
        && isa
        && d.n > 0
        && d.c_in > 0
        && d.h * d.w > 0
        && d.c_out.is_multiple_of(LANES * MR)
        && d.out[0] * d.out[1] > 0
        && consistent(d)
        && t.max(b) < d.k[0]
        && l.max(r) < d.k[1]
}

/// The weight gradient `[c_out, c_in, kh, kw]` of the layer `d` from its input `x` (`n`
/// images `[c_in, h, w]`) and output gradient `dy` (`[n, c_out, oh, ow]`): f32 products, or
/// bf16 products with f32 sums (`bf16`). Each element summed in a fixed order (image pairs,
/// rows, columns), the same bits for any thread count. Panics unless [`applies`] holds or
/// where the slices are shorter than the shapes.
pub(crate) fn weight_grad(d: &Dense, x: &[f32], dy: &[f32], bf16: bool) -> Vec<f32> {
    assert!(applies(d, bf16), "the direct weight gradient applies");
    let [oh, ow] = d.out;
    assert!(x.len() >= d.n * d.c_in * d.h * d.w, "input too short");
    assert!(
        dy.len() >= d.n * d.c_out * oh * ow,
        "output gradient too short"
    );
    // The output gradient as `[n][c_out / 16][oh][ow][16]`.
    let grad = Direct {
        n: d.n,
        c_in: d.c_out,
        c_out: 0,
        h: oh,
        w: ow,
        k: [1, 1],
        pad: [0; 4],
    };
    if !bf16 {
        return sums(d, x, blocked_input(&grad, dy).get(), tile_f32);
    }
    let (xp, dyp) = (paired_input(d, x), paired_grad(d, dy, oh * ow));
    sums(d, xp.get(), dyp.get(), tile_bf16)
}

/// `x` in bf16 as `[n / 2][c_in][h][w][2]`: each pair of images' values side by side (an odd
/// batch's last image beside zeros).
fn paired_input(d: &Dense, x: &[f32]) -> Aligned<u16> {
    let plane = d.h * d.w;
    let img = d.c_in * plane;
    let pairs = d.n.div_ceil(2);
    Aligned::written(pairs * img * 2, |dst| {
        dst.par_chunks_mut(plane * 2)
            .enumerate()
            .for_each(|(t, dst)| {
                let (p, c) = (t / d.c_in, t % d.c_in);
                let first = &x[(2 * p * d.c_in + c) * plane..][..plane];
                let second = (2 * p + 1 < d.n).then(|| &x[((2 * p + 1) * d.c_in + c) * plane..]);
                // SAFETY: `weight_grad` asserted AVX512-BF16 (`applies`); `dst` holds the
                // plane's `2 * plane` values, each written once.
                unsafe { weave(first, second, dst) };
            })
    })
}

/// The output gradient `dy` (`[n, c_out, pix]`) in bf16 as `[n / 2][c_out / 16][pix][16][2]`:
/// each pixel's 16 channels of two images side by side (an odd batch's last image beside
/// zeros), in one pass through register transposes.
fn paired_grad(d: &Dense, dy: &[f32], pix: usize) -> Aligned<u16> {
    let block = pix * LANES;
    let blocks = d.c_out / LANES;
    Aligned::written(d.n.div_ceil(2) * d.c_out * pix * 2, |dst| {
        dst.par_chunks_mut(block * 2)
            .enumerate()
            .for_each(|(t, dst)| {
                let (p, b) = (t / blocks, t % blocks);
                // SAFETY: `weight_grad` asserted AVX512-BF16 (`applies`) and `dy`'s length;
                // `dst` holds the block's `2 * block` values, each written once.
                unsafe { pair_block(dy, d, pix, [2 * p, b], dst) };
            })
    })
}

/// Block `b` (channels `16 b..`) of images `i` and `i + 1` (zeros past `n`) into `dst`
/// (`[pix][16][2]`), 16 pixels at a time: each image's 16 rows transposed in registers, then
/// the two woven.
///
/// # Safety
/// AVX512-BF16; `dy` holds `[n, c_out, pix]`; `dst` holds `pix * 32`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pair_block(
    dy: &[f32],
    d: &Dense,
    pix: usize,
    [i, b]: [usize; 2],
    dst: &mut [std::mem::MaybeUninit<u16>],
) {
    use crate::cpu::bf16::avx512::transpose_16x16;
    use std::arch::x86_64::*;
    assert!(dy.len() >= d.n * d.c_out * pix && dst.len() >= pix * 2 * LANES);
    let rows = |img: usize, q0: usize, m: __mmask16| -> [__m512i; 16] {
        let at = (img * d.c_out + b * LANES) * pix + q0;
        let mut r = std::array::from_fn(|o| {
            // SAFETY: channel 16 b + o of image `img`, pixels q0.. under the mask: inside
            // `dy` (asserted; `img < n`).
            unsafe { _mm512_castps_si512(_mm512_maskz_loadu_ps(m, dy.as_ptr().add(at + o * pix))) }
        });
        transpose_16x16(&mut r);
        r
    };
    for q0 in (0..pix).step_by(LANES) {
        let left = (pix - q0).min(LANES);
        let m = ((1u32 << left) - 1) as __mmask16;
        let first = rows(i, q0, m);
        let second = match i + 1 < d.n {
            true => rows(i + 1, q0, m),
            false => [_mm512_setzero_si512(); 16],
        };
        for q in 0..left {
            let v = bf16_avx512::pair(
                _mm512_castsi512_ps(first[q]),
                _mm512_castsi512_ps(second[q]),
            );
            // SAFETY: pixel q0 + q < pix: its 32 values inside `dst` (asserted).
            unsafe { _mm512_storeu_si512(dst[(q0 + q) * 2 * LANES..].as_mut_ptr().cast(), v) };
        }
    }
}

/// `dst[2 q] = bf16(first[q])`, `dst[2 q + 1] = bf16(second[q])` (zero without `second`) for
/// every `q < first.len()`; `dst` holds `2 * first.len()`, `second` at least `first.len()`.
///
/// # Safety
/// AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn weave(first: &[f32], second: Option<&[f32]>, dst: &mut [std::mem::MaybeUninit<u16>]) {
    let len = first.len();
    assert!(dst.len() >= 2 * len && second.is_none_or(|s| s.len() >= len));
    let whole = len / LANES * LANES;
    for q in (0..whole).step_by(LANES) {
        // SAFETY: AVX512-BF16 (the caller's contract); 16 values of each source at q, the 32
        // of `dst` at 2 q (asserted).
        unsafe {
            bf16_avx512::interleave(
                &first[q..q + LANES],
                second.map(|s| &s[q..q + LANES]),
                dst[2 * q..].as_mut_ptr().cast(),
            )
        };
    }
    if whole < len {
        // The last values through a buffer: `interleave` writes 32.
        let mut tail = [0u16; 2 * LANES];
        // SAFETY: as above; `tail` takes the 32.
        unsafe {
            bf16_avx512::interleave(
                &first[whole..],
                second.map(|s| &s[whole..len]),
                tail.as_mut_ptr(),
            )
        };
        for (d, v) in dst[2 * whole..2 * len].iter_mut().zip(tail) {
            d.write(v);
        }
    }
}

/// What a tile reads, in elements of `E`: `E::PAIR` images per step.
struct Geom {
    /// Steps of images (`n` in f32, pairs in bf16).
    steps: usize,
    c_in: usize,
    /// Blocks of 16 output channels.
    blocks: usize,
    h: usize,
    w: usize,
    out: [usize; 2],
    stride: [usize; 2],
    /// Top and left padding.
    pad: [usize; 2],
}

/// The gradient from the laid-out operands (`xs` `[steps][c_in][h][w][PAIR]`, `dys`
/// `[steps][c_out / 16][oh][ow][16][PAIR]`): tasks of 64 output channels x up to [`TASK_C`] input
/// channels, each writing its part of `dW` once.
fn sums<E: Operand + Sync>(d: &Dense, xs: &[E], dys: &[E], tile: TileFn<E>) -> Vec<f32> {
    let [kh, kw] = d.k;
    let taps = kh * kw;
    let g = Geom {
        steps: d.n.div_ceil(E::PAIR),
        c_in: d.c_in,
        blocks: d.c_out / LANES,
        h: d.h,
        w: d.w,
        out: d.out,
        stride: d.s,
        pad: d.pad,
    };
    let pix = g.out[0] * g.out[1];
    assert!(
        xs.len() >= g.steps * d.c_in * d.h * d.w * E::PAIR,
        "input too short"
    );
    assert!(
        dys.len() >= g.steps * d.c_out * pix * E::PAIR,
        "gradient too short"
    );
    let row = d.c_in * taps;
    let len = d.c_out * row;
    let mut dw: Vec<f32> = Vec::with_capacity(len);
    let out = Out(dw.as_mut_ptr());
    // Smaller chunks where the output groups (64 channels each) are few, so that every
    // thread gets work: ResNet-50's 64-channel 56x56 layer had two tasks, 48 and 16 wide.
    let groups = d.c_out / (LANES * MR);
    let want = 4 * rayon::current_num_threads();
    let per = d
        .c_in
        .div_ceil(want.div_ceil(groups))
        .next_multiple_of(NR)
        .clamp(NR, TASK_C);
    let chunks = d.c_in.div_ceil(per);
    (0..groups * chunks).into_par_iter().for_each(|task| {
        let (og, c_lo) = (task / chunks, task % chunks * per);
        let mut buf = [0f32; MR * NR * LANES];
        // A channel group's sums, `[MR][NR][taps][16]`: per vector of output channels, its
        // rows (channel, tap) in `dW`'s order.
        let mut stage = vec![0f32; MR * NR * taps * LANES];
        for c0 in (c_lo..d.c_in.min(c_lo + per)).step_by(NR) {
            let cols = (d.c_in - c0).min(NR);
            // Columns past the last channel repeat it (their sums are dropped).
            let cs: [usize; NR] = std::array::from_fn(|j| c0 + j.min(cols - 1));
            for ky in 0..kh {
                for kx in 0..kw {
                    // SAFETY: `applies` found the element's features (asserted by
                    // `weight_grad`); the extents were asserted above; channels `cs`
                    // < c_in, blocks og * MR + MR <= c_out / 16.
                    unsafe { tile(xs, dys, &g, og * MR, cs, [ky, kx], &mut buf) };
                    let tap = ky * kw + kx;
                    for (mj, sums) in buf.chunks_exact(LANES).enumerate() {
                        stage[(mj * taps + tap) * LANES..][..LANES].copy_from_slice(sums);
                    }
                }
            }
            for m in 0..MR {
                let o0 = (og * MR + m) * LANES;
                let rows = &stage[m * NR * taps * LANES..][..NR * taps * LANES];
                // SAFETY: AVX-512 (`applies`); output channels o0..o0 + 16 < c_out, their
                // columns `c0 * taps..(c0 + cols) * taps` of `dw` (inside its `len`) are this
                // task's alone.
                unsafe { put_rows(rows, cols * taps, out.get().add(o0 * row + c0 * taps), row) };
            }
        }
    });
    // SAFETY: the tasks wrote every (o, c, tap) once: output groups of 64 cover c_out
    // (`applies`), chunks and their tiles cover c_in, every tap.
    unsafe { dw.set_len(len) };
    dw
}

/// The first `len` rows of `rows` (`[len][16]`: 16 output channels each) into 16 rows of
/// `dst` (`stride` apart; `len` values each), 16 x 16 at a time through register transposes.
/// Why: stored one value at a time, 384 scattered stores per tile cost ResNet-50's 7x7
/// layer about a third of its weight gradient's own sums.
///
/// # Safety
/// AVX-512F; `rows` holds `len.next_multiple_of(16)` rows, or `len` whole ones; `dst` is
/// writable for `15 * stride + len` values.
#[target_feature(enable = "avx512f")]
unsafe fn put_rows(rows: &[f32], len: usize, dst: *mut f32, stride: usize) {
    use crate::cpu::bf16::avx512::transpose_16x16;
    use std::arch::x86_64::*;
    assert!(rows.len() >= len * LANES);
    for r0 in (0..len).step_by(LANES) {
        let left = (len - r0).min(LANES);
        let mut r: [__m512i; 16] = std::array::from_fn(|q| match q < left {
            // SAFETY: row r0 + q < len: inside `rows` (asserted).
            true => unsafe { _mm512_loadu_si512(rows[(r0 + q) * LANES..].as_ptr().cast()) },
            false => _mm512_setzero_si512(),
        });
        transpose_16x16(&mut r);
        let m = ((1u32 << left) - 1) as __mmask16;
        for (o, v) in r.iter().enumerate() {
            // SAFETY: row o < 16 of `dst`, values r0..r0 + left < len (the caller's extents).
            unsafe { _mm512_mask_storeu_ps(dst.add(o * stride + r0), m, _mm512_castsi512_ps(*v)) };
        }
    }
}

/// One tile's sums into `buf` (see [`tile_body`]).
type TileFn<E> = unsafe fn(&[E], &[E], &Geom, usize, [usize; NR], [usize; 2], &mut [f32]);

/// [`tile_body`] in f32: per pixel, four vectors of the output gradient, six input values
/// broadcast, 24 FMAs.
///
/// # Safety
/// As [`tile_body`], with AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn tile_f32(
    xs: &[f32],
    dys: &[f32],
    g: &Geom,
    ob: usize,
    cs: [usize; NR],
    tap: [usize; 2],
    buf: &mut [f32],
) {
    // SAFETY: the caller's contract; AVX-512 is what `tile_body` needs for f32.
    unsafe { tile_body(xs, dys, g, ob, cs, tap, buf) }
}

/// [`tile_body`] in bf16: per pixel of a pair of images, four vectors of the output
/// gradient's pairs, six input pairs broadcast, 24 `vdpbf16ps`.
///
/// # Safety
/// As [`tile_body`], with AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_bf16(
    xs: &[u16],
    dys: &[u16],
    g: &Geom,
    ob: usize,
    cs: [usize; NR],
    tap: [usize; 2],
    buf: &mut [f32],
) {
    // SAFETY: the caller's contract; the features are what `tile_body` needs for bf16.
    unsafe { tile_body(xs, dys, g, ob, cs, tap, buf) }
}

/// `buf[m][j]` (16 lanes: output channels `16 (ob + m)..`) = the sum over every step of
/// images and every output pixel whose input at tap `[ky, kx]` lies inside the image of
/// the output gradient times input channel `cs[j]` there: `MR x NR` accumulators in
/// registers throughout.
///
/// # Safety
/// The element's features; `xs` holds `[g.steps][c_in][h][w][PAIR]`, `dys` `[g.steps][blocks]
/// [oh][ow][16][PAIR]`; `cs[j] < c_in`, `ob + MR <= blocks`, `ky, kx` inside the kernel
/// (`ky <= pad + h - 1`...: the rows read are clamped here), `buf` holds `MR * NR * 16`.
#[inline(always)]
unsafe fn tile_body<E: Operand>(
    xs: &[E],
    dys: &[E],
    g: &Geom,
    ob: usize,
    cs: [usize; NR],
    [ky, kx]: [usize; 2],
    buf: &mut [f32],
) {
    use std::arch::x86_64::*;
    let [oh, ow] = g.out;
    let ([pt, pl], [sy, sx]) = (g.pad, g.stride);
    let pix = oh * ow;
    // Output rows and columns whose input at this tap (`y * s + k - pad`) lies inside the
    // image.
    let inside = |pad: usize, k: usize, s: usize, len: usize, out: usize| {
        let first = pad.saturating_sub(k).div_ceil(s);
        (first, out.min((len + pad).saturating_sub(k).div_ceil(s)))
    };
    let (y0, y1) = inside(pt, ky, sy, g.h, oh);
    let (x0, x1) = inside(pl, kx, sx, g.w, ow);
    let v = LANES * E::PAIR;
    // SAFETY (whole body): the caller's contract; every pointer below is an element of `xs`
    // or `dys` (rows y0..y1, columns x0..x1 of the output; their inputs y + ky - pt < h,
    // x + kx - pl < w).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        if y0 < y1 && x0 < x1 {
            let (xp, dp) = (xs.as_ptr(), dys.as_ptr());
            for s in 0..g.steps {
                for y in y0..y1 {
                    let iy = y * sy + ky - pt;
                    let drow = dp.add(((s * g.blocks + ob) * pix + y * ow + x0) * v);
                    let xrow: [*const E; NR] = std::array::from_fn(|j| {
                        let ix = x0 * sx + kx - pl;
                        xp.add((((s * g.c_in + cs[j]) * g.h + iy) * g.w + ix) * E::PAIR)
                    });
                    for x in 0..x1 - x0 {
                        let dv: [E::V; MR] =
                            std::array::from_fn(|m| E::weights(drow.add((m * pix + x) * v)));
                        for (j, row) in xrow.iter().enumerate() {
                            let a = E::pixel(row.add(x * sx * E::PAIR));
                            for (acc, d) in acc.iter_mut().zip(dv) {
                                acc[j] = E::madd(acc[j], a, d);
                            }
                        }
                    }
                }
            }
        }
        for (m, acc) in acc.iter().enumerate() {
            for (j, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(buf[(m * NR + j) * LANES..][..LANES].as_mut_ptr(), *acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::direct::tests::values;
    use super::*;

    /// The weight gradient by its definition, summed in f64.
    fn reference(d: &Dense, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let [oh, ow] = d.out;
        let [sy, sx] = d.s;
        let [kh, kw] = d.k;
        let [t, l] = d.pad;
        let mut dw = vec![0f32; d.c_out * d.c_in * kh * kw];
        for o in 0..d.c_out {
            for c in 0..d.c_in {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let mut s = 0f64;
                        for i in 0..d.n {
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let (iy, ix) = (oy * sy + ky, ox * sx + kx);
                                    if iy < t || ix < l || iy - t >= d.h || ix - l >= d.w {
                                        continue;
                                    }
                                    let xv = x[((i * d.c_in + c) * d.h + iy - t) * d.w + ix - l];
                                    let g = dy[((i * d.c_out + o) * oh + oy) * ow + ox];
                                    s += xv as f64 * g as f64;
                                }
                            }
                        }
                        dw[((o * d.c_in + c) * kh + ky) * kw + kx] = s as f32;
                    }
                }
            }
        }
        dw
    }

    /// Strides 1 and 2, odd and even batches (bf16: a last image without a partner), input channels not a
    /// multiple of a tile's 6 or a task's 48, 1x1, 3x3 and 5x5 kernels, even, uneven and no
    /// padding, several output groups, in f32 and in bf16 (on values that are bf16 already,
    /// so every product is exact): the definition's sums within f32 rounding.
    #[test]
    fn direct_weight_grad_matches_the_definition() {
        if !applies(&case(1, 1, 64, 1, 1, 1, 1, [0; 4]), false) {
            return;
        }
        let bf16 = Bf16Kernel::Avx512.available();
        let round = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| crate::cpu::bf16::from_bf16(crate::cpu::bf16::to_bf16(x)))
                .collect()
        };
        for d in [
            case(3, 16, 64, 14, 14, 3, 1, [1, 1, 1, 1]),
            case(2, 7, 64, 7, 7, 3, 1, [1, 1, 1, 1]),
            case(1, 13, 128, 5, 9, 3, 1, [2, 0, 1, 0]),
            case(4, 50, 64, 7, 7, 1, 1, [0, 0, 0, 0]),
            case(2, 8, 64, 6, 6, 5, 1, [2, 2, 2, 2]),
            case(3, 6, 192, 4, 4, 3, 1, [0, 0, 0, 0]),
            // Strided: ResNet's 3x3 stride-2 layers, and its 1x1 stride-2 shortcuts; an odd
            // map whose last column no output reads.
            case(3, 16, 64, 14, 14, 3, 2, [1, 1, 1, 1]),
            case(2, 20, 64, 9, 10, 1, 2, [0, 0, 0, 0]),
            case(2, 6, 128, 11, 8, 3, 2, [1, 0, 2, 1]),
        ] {
            let [oh, ow] = d.out;
            let x = round(values(d.n * d.c_in * d.h * d.w, 1));
            let dy = round(values(d.n * d.c_out * oh * ow, 2));
            let want = reference(&d, &x, &dy);
            assert_close(&weight_grad(&d, &x, &dy, false), &want, &format!("{d:?}"));
            if bf16 {
                assert_close(
                    &weight_grad(&d, &x, &dy, true),
                    &want,
                    &format!("bf16 {d:?}"),
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn case(
        n: usize,
        c_in: usize,
        c_out: usize,
        h: usize,
        w: usize,
        k: usize,
        s: usize,
        [t, b, l, r]: [usize; 4],
    ) -> Dense {
        Dense {
            n,
            c_in,
            c_out,
            h,
            w,
            k: [k, k],
            s: [s, s],
            pad: [t, l],
            pad_end: [b, r],
            out: [(h + t + b - k) / s + 1, (w + l + r - k) / s + 1],
            half: None,
        }
    }

    /// Within 1e-5 of the largest value.
    fn assert_close(ours: &[f32], want: &[f32], what: &str) {
        assert_eq!(ours.len(), want.len(), "{what}");
        let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (at, (a, b)) in ours.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * max, "{what} at {at}: {a} vs {b}");
        }
    }
}
