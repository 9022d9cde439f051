//! f32 stride-1 convolutions on small maps (ResNet's 14x14 and 7x7 stages) computed directly
//! on AVX-512, for the training forward and, with the flipped kernel, the input gradient;
//! also inference's f32 layers on maps under 56x56 ([`conv_finished`], from `cpu::conv`).
//!
//! Why: unfolded, these layers ran through the `gemm` crate at ~75 GMAC/s on two Zen 4 cores
//! (each image unfolded, the weight packed again for every image, and every product over
//! the padding's zeros: 18 % of a 7x7 map's multiply-adds, 9 % of a 14x14 one's), where
//! PyTorch's oneDNN ran the same layers' forward and input gradient in ~0.6x the time
//! (its `jit:avx512_core` direct convolution in 16-channel blocks, skipping the padding).
//! Here the same scheme: the input in blocks of 16 channels, each pixel's 16 channels
//! contiguous (`[n][c / 16][hp][wp][16]`, zero-padded), the weight in blocks of 32 output
//! channels; a register tile holds 14 pixels (a row of 14, or two rows of 7) x 32 channels,
//! and taps whose input rows all lie in the padding are skipped. Under `--dtype bf16` on
//! AVX512-BF16 the same tiles multiply pairs of input channels in bf16 (`vdpbf16ps`, f32
//! sums) ([`conv_bf16`]).

use super::*;
use crate::cpu::aligned::Aligned;
#[cfg(target_arch = "x86_64")]
use crate::cpu::bf16::avx512 as bf16_avx512;
use crate::cpu::bf16::{Bf16Kernel, Out};
use crate::cpu::isa::Epilogue;

/// Channels per input block: one AVX-512 vector of f32.
const LANES: usize = 16;
/// Vectors of output channels per tile: 32 channels, against 14 pixels (28 accumulators).
const OCV: usize = 2;

/// One stride-1 convolution: `n` images `[c_in, h, w]` to `[c_out, oh, ow]` with a `[c_out,
/// c_in, kh, kw]` weight, padded `[top, bottom, left, right]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Direct {
    pub(crate) n: usize,
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) k: [usize; 2],
    pub(crate) pad: [usize; 4],
}

static DIRECT: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_TRAIN_DIRECT"));

/// Turns the direct small-map convolutions on or off for the process, over
/// `COMMITTEE_TRAIN_DIRECT` (to time them against the unfolded products in one process:
/// `examples/ab_train.rs` in committee-train, switch `direct`).
pub fn set_direct(on: bool) {
    DIRECT.set(on)
}

impl Direct {
    /// Padded rows and columns.
    fn padded(&self) -> [usize; 2] {
        let [t, b, l, r] = self.pad;
        [self.h + t + b, self.w + l + r]
    }

    /// Output rows and columns (`None`: the kernel is larger than the padded map).
    pub(crate) fn out(&self) -> Option<[usize; 2]> {
        let [hp, wp] = self.padded();
        let oh = (hp + 1).checked_sub(self.k[0]).filter(|&v| v > 0)?;
        let ow = (wp + 1).checked_sub(self.k[1]).filter(|&v| v > 0)?;
        Some([oh, ow])
    }

    /// [`Direct::fits`] where training takes the direct kernel (`COMMITTEE_TRAIN_DIRECT`).
    pub(crate) fn tile(&self) -> Option<usize> {
        DIRECT.on().then(|| self.fits()).flatten()
    }

    /// The width of this layer's tiles where the kernel takes it: AVX-512, rows of 7 outputs
    /// (tiles of two rows) or of a multiple of 14 (tiles of 14), input channels in whole
    /// blocks of 16, output channels in blocks of 32, padding below the kernel's size.
    pub(crate) fn fits(&self) -> Option<usize> {
        let [oh, ow] = self.out()?;
        let [t, b, l, r] = self.pad;
        let [kh, kw] = self.k;
        let tw = match ow {
            7 => 7,
            _ if ow.is_multiple_of(14) => 14,
            _ => return None,
        };
        let fits = Isa::get().avx512()
            && oh > 0
            && self.n > 0
            && self.c_in > 0
            && self.c_in.is_multiple_of(LANES)
            && self.c_out.is_multiple_of(LANES * OCV)
            && t.max(b) < kh
            && l.max(r) < kw;
        fits.then_some(tw)
    }
}

/// The convolution of `x` (`n` images `[c_in, h, w]`) with `w` (`[c_out, c_in, kh, kw]`;
/// with `flip`, `w` is `[c_in, c_out, kh, kw]` and each kernel is turned by 180 degrees: an
/// input gradient), `[n, c_out, oh, ow]`, every element written once. Panics unless
/// [`Direct::tile`] holds or where the slices are shorter than the shapes.
pub(crate) fn conv(d: &Direct, x: &[f32], w: &[f32], flip: bool) -> Vec<f32> {
    let tw = d.tile().expect("the direct kernel applies");
    let [kh, kw] = d.k;
    assert!(w.len() >= d.c_out * d.c_in * kh * kw, "weight too short");
    run(d, tw, x, &blocked_weight(w, d, flip), |_, _, _| {})
}

/// The weight `w` (`[c_out, c_in, kh, kw]`) blocked for [`conv_finished`], once per
/// inference layer (kept by [`crate::cpu::bf16::cache`]). Panics unless [`Direct::fits`]
/// or where `w` is shorter than the shape.
pub(crate) fn blocked(w: &[f32], d: &Direct) -> Aligned {
    assert!(d.fits().is_some(), "the direct kernel applies");
    assert!(
        w.len() >= d.c_out * d.c_in * d.k[0] * d.k[1],
        "weight too short"
    );
    blocked_weight(w, d, false)
}

/// An inference layer's convolution: [`conv`] with the weight blocked beforehand
/// ([`blocked`]) and each output plane finished as the unfolded path finishes it (the
/// channel's `bias`, then the residual `res` of the output's shape, then `ep`), in the task
/// that wrote it, while it is in L2. Why: ResNet-50's 3x3 layers on 28x28 to 7x7 maps ran
/// at ~78 % (tap offsets) and 55-77 % (unfolded, 7x7) of one Zen 4 core's FMA rate, this
/// kernel at 87-97 % (four images a thread). Panics unless [`Direct::fits`] or where a slice
/// is shorter than the shapes.
pub(crate) fn conv_finished(
    d: &Direct,
    x: &[f32],
    wb: &Aligned,
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    ep: Epilogue,
) -> Vec<f32> {
    let tw = d.fits().expect("the direct kernel applies");
    let [oh, ow] = d.out().expect("an output");
    let pix = oh * ow;
    assert!(
        wb.get().len() >= d.c_out * d.c_in * d.k[0] * d.k[1],
        "weight too short"
    );
    assert!(bias.is_none_or(|b| b.len() >= d.c_out), "bias too short");
    assert!(
        res.is_none_or(|r| r.len() >= d.n * d.c_out * pix),
        "residual too short"
    );
    let isa = Isa::get();
    // Nothing to apply: no pass over the output (as the unfolded path).
    let finish = ep != Epilogue::None || bias.is_some() || res.is_some();
    run(d, tw, x, wb, |i, o, plane| {
        if !finish {
            return;
        }
        let at = (i * d.c_out + o) * pix;
        let r = res.map(|r| &r[at..at + pix]);
        isa.bias_epilogue(plane, bias.map_or(0.0, |b| b[o]), r, ep);
    })
}

/// [`conv`] on a blocked weight, each finished output plane (image, channel) handed to
/// `finish`.
fn run(
    d: &Direct,
    tw: usize,
    x: &[f32],
    wb: &Aligned,
    finish: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let [kh, kw] = d.k;
    assert!(x.len() >= d.n * d.c_in * d.h * d.w, "input too short");
    let xb = blocked_input(d, x);
    let oc = LANES * OCV;
    let [hp, wp] = d.padded();
    let img = d.c_in * hp * wp;
    let per_block = kh * kw * d.c_in * oc;
    let tile = |[i, b]: [usize; 2], place: &Place, buf: &mut [f32]| {
        let xs = &xb.get()[i * img..][..img];
        let ws = &wb.get()[b * per_block..][..per_block];
        // SAFETY: `fits` checked AVX-512; the blocked input holds rows `oy + ky < hp` (for
        // each of the tile's rows) and columns `x0 + kx + tw <= wp` of every channel block,
        // the weight block every tap and input channel of its 32 outputs; `buf` holds the
        // tile.
        unsafe {
            match (tw, place.rows) {
                (14, _) => tile::<14, 1>(xs, ws, d, wp, hp, place, buf),
                (7, 2) => tile::<7, 2>(xs, ws, d, wp, hp, place, buf),
                (7, _) => tile::<7, 1>(xs, ws, d, wp, hp, place, buf),
                _ => unreachable!("tiles come from Direct::fits"),
            }
        }
    };
    for_each_task(d, tw, tile, finish)
}

/// The output `[n, c_out, oh, ow]` of `run(place, buf)` for each tile: `run` puts the tile's
/// sums (`[pixel][32 channels]`) in `buf`, this copies them out; then `finish(image,
/// channel, plane)` for each of the task's output planes. Tasks are (block of 32 output
/// channels, image), by block first: a thread's run of images reuses the block's weights
/// from its L2.
fn for_each_task(
    d: &Direct,
    tw: usize,
    run: impl Fn([usize; 2], &Place, &mut [f32]) + Sync,
    finish: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let [oh, ow] = d.out().expect("an output");
    let oc = LANES * OCV;
    let pix = oh * ow;
    let len = d.n * d.c_out * pix;
    let mut y: Vec<f32> = Vec::with_capacity(len);
    let out = Out(y.as_mut_ptr());
    let (kh, t, h) = (d.k[0], d.pad[0], d.h);
    (0..d.c_out / oc * d.n).into_par_iter().for_each(|task| {
        let (b, i) = (task / d.n, task % d.n);
        let mut buf = [0f32; 14 * 32];
        let mut oy = 0;
        while oy < oh {
            // Two rows of a 7-wide map per tile (14 pixels), else one row in tiles of 14.
            let rows = if tw == 7 && oy + 1 < oh { 2 } else { 1 };
            // Taps whose input row lies in the padding for every row of the tile add
            // nothing: skipped (the tile's other rows read the padding's zeros).
            let lo = t.saturating_sub(oy + rows - 1);
            let hi = kh.min((t + h).saturating_sub(oy));
            for x0 in (0..ow).step_by(tw) {
                let place = Place {
                    oy,
                    x0,
                    rows,
                    ky: lo..hi,
                };
                run([i, b], &place, &mut buf);
                for o in 0..oc {
                    let at = (i * d.c_out + b * oc + o) * pix + oy * ow + x0;
                    for px in 0..rows * tw {
                        // SAFETY: image i < n, channel b * oc + o < c_out, pixel oy * ow + x0
                        // + px < pix (two rows only where ow = tw = 7): inside `y`'s `len`;
                        // this task alone writes its image's channels of block b.
                        unsafe { *out.get().add(at + px) = buf[px * oc + o] };
                    }
                }
            }
            oy += rows;
        }
        for o in b * oc..(b + 1) * oc {
            // SAFETY: the plane of image i < n, channel o < c_out lies inside `y`'s `len`;
            // this task wrote all of it above and alone holds it.
            let plane = unsafe {
                std::slice::from_raw_parts_mut(out.get().add((i * d.c_out + o) * pix), pix)
            };
            finish(i, o, plane);
        }
    });
    // SAFETY: the tasks wrote every (image, channel, row, column) once.
    unsafe { y.set_len(len) };
    y
}

/// [`conv`] with bf16 operands and f32 sums on AVX512-BF16 (`--dtype bf16` training, as
/// PyTorch's CPU autocast runs convolutions): the blocked input and weight rounded to bf16,
/// each input pixel's channels in pairs (`vdpbf16ps` multiplies a pair of input channels
/// with the weights' pairs for 16 output channels), the weight `[c_out / 32][kh][kw][c_in /
/// 2][32][2]`. Panics unless [`Direct::tile`] holds and the CPU has AVX512-BF16.
pub(crate) fn conv_bf16(d: &Direct, x: &[f32], w: &[f32], flip: bool) -> Vec<f32> {
    let tw = d.tile().expect("the direct kernel applies");
    assert!(Bf16Kernel::Avx512.available(), "AVX512-BF16");
    let [kh, kw] = d.k;
    assert!(x.len() >= d.n * d.c_in * d.h * d.w, "input too short");
    assert!(w.len() >= d.c_out * d.c_in * kh * kw, "weight too short");
    let [hp, wp] = d.padded();
    let img = d.c_in * hp * wp;
    let xf = blocked_input(d, x);
    let xb = Aligned::<u16>::written(d.n * img, |dst| {
        dst.par_chunks_mut(img)
            .zip(xf.get()[..d.n * img].par_chunks(img))
            // SAFETY: AVX512-BF16 (asserted); `dst` takes the chunk's `img` values, each one
            // written.
            .for_each(|(dst, src)| unsafe { bf16_avx512::convert(src, dst.as_mut_ptr().cast()) })
    });
    drop(xf);
    let oc = LANES * OCV;
    let wb = blocked_weight_bf16(w, d, flip);
    let rows = kh * kw * d.c_in;
    let per_block = rows * oc;
    let tile = |[i, b]: [usize; 2], place: &Place, buf: &mut [f32]| {
        let xs = &xb.get()[i * img..][..img];
        let ws = &wb.get()[b * per_block..][..per_block];
        // SAFETY: as in `conv`, with the bf16 layouts (AVX512-BF16 asserted).
        unsafe {
            match (tw, place.rows) {
                (14, _) => tile_bf16::<14, 1>(xs, ws, d, wp, hp, place, buf),
                (7, 2) => tile_bf16::<7, 2>(xs, ws, d, wp, hp, place, buf),
                (7, _) => tile_bf16::<7, 1>(xs, ws, d, wp, hp, place, buf),
                _ => unreachable!("tiles come from Direct::tile"),
            }
        }
    };
    for_each_task(d, tw, tile, |_, _, _| {})
}

/// A tile's place: its first output row `oy` and column `x0`, its output rows, and the
/// taps' rows `ky` it reads.
struct Place {
    oy: usize,
    x0: usize,
    rows: usize,
    ky: std::ops::Range<usize>,
}

/// `x` as `[n][c_in / 16][hp][wp][16]`, zeros in the padding.
pub(super) fn blocked_input(d: &Direct, x: &[f32]) -> Aligned {
    let [hp, wp] = d.padded();
    let cb = d.c_in / LANES;
    let mut xb = Aligned::zeroed(d.n * cb * hp * wp * LANES);
    xb.get_mut()[..d.n * cb * hp * wp * LANES]
        .par_chunks_mut(hp * wp * LANES)
        .enumerate()
        // SAFETY: `conv` and `conv_bf16` run only where `Direct::fits` found AVX-512; the
        // block is `hp * wp * 16` long and `x` holds the image's channels (asserted there).
        .for_each(|(t_ib, block)| unsafe { input_block(x, d, t_ib / cb, t_ib % cb, block) });
    xb
}

/// Channels `16 ib..` of image `i` into `block` (`[hp][wp][16]`, the padding left as it is),
/// 16 pixels of a row at a time through a register transpose. Why: element by element (a
/// store every 64 bytes) it cost more than a 1x1 layer's product at 28x28.
///
/// # Safety
/// AVX-512F; `x` holds `n` images `[c_in, h, w]`; `block` holds `hp * wp * 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_block(x: &[f32], d: &Direct, i: usize, ib: usize, block: &mut [f32]) {
    use crate::cpu::bf16::avx512::transpose_16x16;
    use std::arch::x86_64::*;
    let [_, wp] = d.padded();
    let [t, _, l, _] = d.pad;
    let plane = d.h * d.w;
    assert!(x.len() >= (i * d.c_in + (ib + 1) * LANES) * plane);
    assert!(block.len() >= (d.h + t) * wp * LANES);
    let src = x[(i * d.c_in + ib * LANES) * plane..].as_ptr();
    for y in 0..d.h {
        for x0 in (0..d.w).step_by(LANES) {
            let left = (d.w - x0).min(LANES);
            let m = ((1u32 << left) - 1) as __mmask16;
            // SAFETY: channel j's row y, pixels x0..x0 + left: inside `x` (asserted).
            let mut r: [__m512i; 16] = std::array::from_fn(|j| unsafe {
                _mm512_castps_si512(_mm512_maskz_loadu_ps(m, src.add(j * plane + y * d.w + x0)))
            });
            transpose_16x16(&mut r);
            for (q, v) in r.iter().enumerate().take(left) {
                let at = ((y + t) * wp + l + x0 + q) * LANES;
                // SAFETY: pixel (y + t, l + x0 + q) of the padded map: inside `block`.
                unsafe { _mm512_storeu_ps(block.as_mut_ptr().add(at), _mm512_castsi512_ps(*v)) };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn input_block(_: &[f32], _: &Direct, _: usize, _: usize, _: &mut [f32]) {
    unreachable!("AVX-512 only")
}

/// The weight `w` as `[c_out / 32][kh][kw][c_in][32]`; with `flip`, the weight of the
/// input gradient's convolution instead, `w` being the forward's `[c_in, c_out, kh, kw]`
/// (each kernel turned by 180 degrees, input and output channels swapped). Each source row
/// is read in order: a weight of ResNet's last stage is 9.4 MB, and reading it across rows
/// (or flipping it in a pass of its own first) cost as much as a tenth of the convolution.
fn blocked_weight(w: &[f32], d: &Direct, flip: bool) -> Aligned {
    let per_block = d.k[0] * d.k[1] * d.c_in * LANES * OCV;
    Aligned::written(d.c_out / (LANES * OCV) * per_block, |dst| {
        dst.par_chunks_mut(per_block)
            .enumerate()
            // SAFETY: `conv` runs only where `Direct::tile` found AVX-512; each block is
            // `taps * c_in * 32` long and `w` holds the whole weight (asserted by `conv`).
            .for_each(|(b, block)| unsafe {
                weight_block(w, d, flip, b, block.as_mut_ptr().cast())
            })
    })
}

/// [`blocked_weight`] rounded to bf16 with each pair of input channels' rows woven
/// (`[c_out / 32][kh][kw][c_in / 2][32][2]`): each block made in f32 in a buffer of the task's
/// own (in its core's cache), then woven.
fn blocked_weight_bf16(w: &[f32], d: &Direct, flip: bool) -> Aligned<u16> {
    let oc = LANES * OCV;
    let per_block = d.k[0] * d.k[1] * d.c_in * oc;
    Aligned::written(d.c_out / oc * per_block, |dst| {
        dst.par_chunks_mut(per_block).enumerate().for_each_init(
            || vec![0f32; per_block],
            |scratch, (b, block)| {
                // SAFETY: as in `blocked_weight` (AVX512-BF16 asserted by `conv_bf16`); the
                // scratch holds a block; each pair of rows (64 floats) is woven into its 64
                // values of `block`, all of them written.
                unsafe {
                    weight_block(w, d, flip, b, scratch.as_mut_ptr());
                    for (pair, out) in scratch
                        .chunks_exact(2 * oc)
                        .zip(block.chunks_exact_mut(2 * oc))
                    {
                        let (r0, r1) = pair.split_at(oc);
                        for h in 0..OCV {
                            let (p0, p1) = (&r0[h * LANES..][..LANES], &r1[h * LANES..][..LANES]);
                            bf16_avx512::interleave(
                                p0,
                                Some(p1),
                                out[2 * h * LANES..].as_mut_ptr().cast(),
                            );
                        }
                    }
                }
            },
        )
    })
}

/// Block `b` (output channels `32 b..`) of [`blocked_weight`] into `dst`, 16 x 16 at a
/// time through register transposes.
///
/// # Safety
/// AVX-512F; `w` holds `c_out * c_in * taps` values, `dst` is writable for `taps * c_in *
/// 32`, all of which this writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_block(w: &[f32], d: &Direct, flip: bool, b: usize, dst: *mut f32) {
    use std::arch::x86_64::*;
    let taps = d.k[0] * d.k[1];
    let oc = LANES * OCV;
    assert!(w.len() >= d.c_out * d.c_in * taps);
    for h in 0..OCV {
        let o0 = b * oc + h * LANES;
        if flip {
            // w is the forward's `[c_in][c_out][taps]`: for input channel ic, the runs are
            // the 16 output channels' kernels (`taps` long, `taps` apart).
            for ic in 0..d.c_in {
                // SAFETY: the runs lie inside `w` (asserted); row (taps - 1 - t, ic) of the
                // block, lanes h * 16..: inside `dst` (the caller's contract).
                unsafe {
                    pieces(w, (ic * d.c_out + o0) * taps, taps, taps, |t, v| {
                        let at = ((taps - 1 - t) * d.c_in + ic) * oc + h * LANES;
                        _mm512_storeu_ps(dst.add(at), v)
                    })
                };
            }
        } else {
            // The 16 output channels' rows `[c_in][taps]`, each `c_in * taps` long, read in
            // order; piece position q is input channel q / taps, tap q % taps.
            let k = d.c_in * taps;
            let (mut ic, mut tap) = (0, 0);
            // SAFETY: as above: row (tap, ic) of the block, lanes h * 16...
            unsafe {
                pieces(w, o0 * k, k, k, |_, v| {
                    _mm512_storeu_ps(dst.add((tap * d.c_in + ic) * oc + h * LANES), v);
                    tap += 1;
                    if tap == taps {
                        (ic, tap) = (ic + 1, 0);
                    }
                })
            };
        }
    }
}

/// Hands `put(q, v)` each position `q < len` of 16 runs of `w` (`len` values each, from `at +
/// r * step` for run r) as one vector `v` holding that position of all 16 runs, in order of
/// `q`: 16 positions at a time, loaded and transposed in registers.
///
/// # Safety
/// AVX-512F; `at + 15 * step + len <= w.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pieces(
    w: &[f32],
    at: usize,
    step: usize,
    len: usize,
    mut put: impl FnMut(usize, std::arch::x86_64::__m512),
) {
    use crate::cpu::bf16::avx512::transpose_16x16;
    use std::arch::x86_64::*;
    let src = w.as_ptr();
    for q0 in (0..len).step_by(LANES) {
        let left = (len - q0).min(LANES);
        let m = ((1u32 << left) - 1) as __mmask16;
        // SAFETY: masked loads inside run r (the caller's extents).
        let mut r: [__m512i; 16] = std::array::from_fn(|r| unsafe {
            _mm512_castps_si512(_mm512_maskz_loadu_ps(m, src.add(at + r * step + q0)))
        });
        transpose_16x16(&mut r);
        for (qq, v) in r.iter().enumerate().take(left) {
            put(q0 + qq, _mm512_castsi512_ps(*v));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn weight_block(_: &[f32], _: &Direct, _: bool, _: usize, _: *mut f32) {
    unreachable!("AVX-512 only")
}

/// An element of the tiles' operands: f32, or bf16 (`u16`) in pairs of input channels on
/// AVX512-BF16. The loads and the multiply-add are `#[inline(always)]` pieces of
/// [`tile_body`], compiled inside each element's entry point ([`tile`], [`tile_bf16`]) with
/// that entry point's features.
#[cfg(target_arch = "x86_64")]
pub(super) trait Operand: Copy {
    /// One register of weights (16 output channels) or of one broadcast pixel.
    type V: Copy;
    /// Input channels per multiply-add: 1, or a pair for bf16.
    const PAIR: usize;

    /// The register of weights at `p` (64 bytes).
    ///
    /// # Safety
    /// The CPU has the element's features; `p` is valid for 64 bytes of reads.
    unsafe fn weights(p: *const Self) -> Self::V;

    /// The `PAIR` input channels at `p`, in every lane.
    ///
    /// # Safety
    /// As [`Operand::weights`], for `PAIR` elements.
    unsafe fn pixel(p: *const Self) -> Self::V;

    /// `acc + a * w` lane-wise (bf16: each lane adds the pair's two products).
    ///
    /// # Safety
    /// The CPU has the element's features.
    unsafe fn madd(
        acc: std::arch::x86_64::__m512,
        a: Self::V,
        w: Self::V,
    ) -> std::arch::x86_64::__m512;
}

#[cfg(target_arch = "x86_64")]
impl Operand for f32 {
    type V = std::arch::x86_64::__m512;
    const PAIR: usize = 1;

    #[inline(always)]
    unsafe fn weights(p: *const f32) -> Self::V {
        // SAFETY: the caller's contract.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn pixel(p: *const f32) -> Self::V {
        // SAFETY: the caller's contract.
        unsafe { std::arch::x86_64::_mm512_set1_ps(*p) }
    }

    #[inline(always)]
    unsafe fn madd(acc: Self::V, a: Self::V, w: Self::V) -> Self::V {
        // SAFETY: the caller's contract.
        unsafe { std::arch::x86_64::_mm512_fmadd_ps(a, w, acc) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Operand for u16 {
    type V = std::arch::x86_64::__m512bh;
    const PAIR: usize = 2;

    #[inline(always)]
    unsafe fn weights(p: *const u16) -> Self::V {
        // SAFETY: the caller's contract.
        unsafe { bf16_avx512::bh(std::arch::x86_64::_mm512_loadu_si512(p.cast())) }
    }

    #[inline(always)]
    unsafe fn pixel(p: *const u16) -> Self::V {
        // SAFETY: the caller's contract: the pair's 4 bytes.
        unsafe {
            let pair = p.cast::<i32>().read_unaligned();
            bf16_avx512::bh(std::arch::x86_64::_mm512_set1_epi32(pair))
        }
    }

    #[inline(always)]
    unsafe fn madd(
        acc: std::arch::x86_64::__m512,
        a: Self::V,
        w: Self::V,
    ) -> std::arch::x86_64::__m512 {
        // SAFETY: the caller's contract.
        unsafe { std::arch::x86_64::_mm512_dpbf16_ps(acc, a, w) }
    }
}

/// `ROWS` output rows (`TW` pixels each) of one image and one block of 32 output channels
/// into `buf` (`[ROWS * TW][32]`), in f32: for each tap row in `place.ky`, tap column and input
/// channel, two weight vectors against `ROWS * TW` broadcast pixels.
///
/// # Safety
/// AVX-512F is available; `xs` holds the image's blocked input (`[c_in / 16][hp][wp][16]`)
/// with `place.oy + ROWS - 1 + ky < hp` for every `ky` in `place.ky` and `place.x0 + TW + kw
/// - 1 <= wp`; `ws` holds the block's weight (`[kh][kw][c_in][32]`); `buf` holds `ROWS * TW
/// * 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const TW: usize, const ROWS: usize>(
    xs: &[f32],
    ws: &[f32],
    d: &Direct,
    wp: usize,
    hp: usize,
    place: &Place,
    buf: &mut [f32],
) {
    // SAFETY: the caller's contract; AVX-512 is what `tile_body` needs for f32.
    unsafe { tile_body::<f32, TW, ROWS>(xs, ws, d, [wp, hp], place, buf) }
}

/// [`tile`] with bf16 operands: per tap and pair of input channels, two weight vectors (16
/// output channels' pairs each) against the tile's pixels' pairs, broadcast.
///
/// # Safety
/// AVX-512F and AVX512-BF16 are available; the extents of [`tile`], in bf16: `xs`
/// `[c_in / 16][hp][wp][16]`, `ws` `[kh][kw][c_in / 2][32][2]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_bf16<const TW: usize, const ROWS: usize>(
    xs: &[u16],
    ws: &[u16],
    d: &Direct,
    wp: usize,
    hp: usize,
    place: &Place,
    buf: &mut [f32],
) {
    // SAFETY: the caller's contract; the features are what `tile_body` needs for bf16.
    unsafe { tile_body::<u16, TW, ROWS>(xs, ws, d, [wp, hp], place, buf) }
}

/// The tile's sums: 2 x `ROWS * TW` accumulators in registers over every tap and input
/// channel (`E::PAIR` at a time), then stored into `buf`.
///
/// # Safety
/// As [`tile`] / [`tile_bf16`]; inlined into a caller with `E`'s features.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_body<E: Operand, const TW: usize, const ROWS: usize>(
    xs: &[E],
    ws: &[E],
    d: &Direct,
    [wp, hp]: [usize; 2],
    place: &Place,
    buf: &mut [f32],
) {
    use std::arch::x86_64::*;
    let oc = LANES * OCV;
    let kw = d.k[1];
    // SAFETY: AVX-512 (the caller's contract).
    let mut acc = [[[unsafe { _mm512_setzero_ps() }; OCV]; TW]; ROWS];
    for ky in place.ky.clone() {
        for kx in 0..kw {
            for ib in 0..d.c_in / LANES {
                let at = ((ib * hp + place.oy + ky) * wp + place.x0 + kx) * LANES;
                let first = xs[at..].as_ptr();
                let xrow: [*const E; ROWS] =
                    std::array::from_fn(|r| first.wrapping_add(r * wp * LANES));
                let wrow = ws[((ky * kw + kx) * d.c_in + ib * LANES) * oc..].as_ptr();
                for j in 0..LANES / E::PAIR {
                    // SAFETY: the caller's extents: row r of the tile, pixel px + kx < wp,
                    // channel step j of block ib, its row of the weight block.
                    unsafe {
                        let wv: [E::V; OCV] = std::array::from_fn(|v| {
                            E::weights(wrow.add((j * OCV + v) * LANES * E::PAIR))
                        });
                        for (r, acc) in acc.iter_mut().enumerate() {
                            for (px, acc) in acc.iter_mut().enumerate() {
                                let a = E::pixel(xrow[r].add(px * LANES + j * E::PAIR));
                                for (acc, w) in acc.iter_mut().zip(wv) {
                                    *acc = E::madd(*acc, a, w);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (px, acc) in acc.iter().enumerate() {
            for (v, acc) in acc.iter().enumerate() {
                let at = (r * TW + px) * oc + v * LANES;
                // SAFETY: `buf` holds ROWS * TW * oc (the caller's contract).
                unsafe { _mm512_storeu_ps(buf[at..at + LANES].as_mut_ptr(), *acc) };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const TW: usize, const ROWS: usize>(
    _: &[f32],
    _: &[f32],
    _: &Direct,
    _: usize,
    _: usize,
    _: &Place,
    _: &mut [f32],
) {
    unreachable!("AVX-512 only")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_bf16<const TW: usize, const ROWS: usize>(
    _: &[u16],
    _: &[u16],
    _: &Direct,
    _: usize,
    _: usize,
    _: &Place,
    _: &mut [f32],
) {
    unreachable!("AVX-512 only")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The convolution by its definition, summed in f64.
    fn reference(d: &Direct, x: &[f32], w: &[f32]) -> Vec<f32> {
        let [oh, ow] = d.out().expect("output");
        let [kh, kw] = d.k;
        let [t, _, l, _] = d.pad;
        let mut y = vec![0f32; d.n * d.c_out * oh * ow];
        for i in 0..d.n {
            for o in 0..d.c_out {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = 0f64;
                        for c in 0..d.c_in {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let (iy, ix) = (oy + ky, ox + kx);
                                    if iy < t || ix < l || iy - t >= d.h || ix - l >= d.w {
                                        continue;
                                    }
                                    let xv = x[((i * d.c_in + c) * d.h + iy - t) * d.w + ix - l];
                                    let wv = w[((o * d.c_in + c) * kh + ky) * kw + kx];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((i * d.c_out + o) * oh + oy) * ow + ox] = s as f32;
                    }
                }
            }
        }
        y
    }

    /// `len` values in [-0.5, 0.5), spread by a multiplicative hash of the index and `seed`.
    pub(in crate::cpu::train) fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(40503));
                (v >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Both tiles (7- and 14-wide rows), 3x3 and 5x5 kernels, even, uneven and no padding,
    /// against the definition summed in f64.
    #[test]
    fn direct_matches_the_definition() {
        if !Isa::get().avx512() {
            return;
        }
        for (c_in, c_out, h, w, k, pad) in [
            (16, 32, 14, 14, 3, [1, 1, 1, 1]),
            (32, 64, 7, 7, 3, [1, 1, 1, 1]),
            (16, 64, 7, 7, 5, [2, 2, 2, 2]),
            // Uneven padding: the rows skipped differ at the top and the bottom.
            (16, 32, 13, 15, 3, [2, 0, 1, 0]),
            (16, 64, 9, 9, 3, [0, 0, 0, 0]),
            (48, 32, 12, 12, 3, [2, 2, 2, 2]),
            // Rows of 28: two tiles each.
            (16, 32, 28, 28, 3, [1, 1, 1, 1]),
        ] {
            let d = Direct {
                n: 3,
                c_in,
                c_out,
                h,
                w,
                k: [k, k],
                pad,
            };
            assert!(d.tile().is_some(), "{d:?}");
            let x = values(d.n * c_in * h * w, 1);
            let wt = values(c_out * c_in * k * k, 2);
            let (ours, want) = (conv(&d, &x, &wt, false), reference(&d, &x, &wt));
            assert_close(&ours, &want, &format!("{d:?}"));
            // The same weight read as an input gradient's: `[c_in, c_out]`, kernels turned.
            let taps = k * k;
            let mut turned = vec![0f32; wt.len()];
            for o in 0..c_out {
                for i in 0..c_in {
                    for t in 0..taps {
                        turned[(o * c_in + i) * taps + t] =
                            wt[(i * c_out + o) * taps + taps - 1 - t];
                    }
                }
            }
            let flipped = conv(&d, &x, &wt, true);
            assert_close(
                &flipped,
                &reference(&d, &x, &turned),
                &format!("flipped {d:?}"),
            );
        }
    }

    /// The bf16 kernel on values that are bf16 already (every product exact in f32): the
    /// definition's sums within f32 rounding, both ways (forward and flipped).
    #[test]
    fn direct_bf16_matches_the_definition() {
        if !Isa::get().avx512() || !Bf16Kernel::Avx512.available() {
            return;
        }
        let round = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| crate::cpu::bf16::from_bf16(crate::cpu::bf16::to_bf16(x)))
                .collect()
        };
        for (c_in, c_out, h, w, pad) in [
            (32, 32, 14, 14, [1, 1, 1, 1]),
            (16, 64, 7, 7, [1, 1, 1, 1]),
            (48, 32, 13, 15, [2, 0, 1, 0]),
            (16, 32, 28, 28, [1, 1, 1, 1]),
        ] {
            let d = Direct {
                n: 2,
                c_in,
                c_out,
                h,
                w,
                k: [3, 3],
                pad,
            };
            assert!(d.tile().is_some(), "{d:?}");
            let x = round(values(d.n * c_in * h * w, 3));
            let wt = round(values(c_out * c_in * 9, 4));
            let ours = conv_bf16(&d, &x, &wt, false);
            assert_close(&ours, &reference(&d, &x, &wt), &format!("bf16 {d:?}"));
            let mut turned = vec![0f32; wt.len()];
            for o in 0..c_out {
                for i in 0..c_in {
                    for t in 0..9 {
                        turned[(o * c_in + i) * 9 + t] = wt[(i * c_out + o) * 9 + 8 - t];
                    }
                }
            }
            let flipped = conv_bf16(&d, &x, &wt, true);
            assert_close(
                &flipped,
                &reference(&d, &x, &turned),
                &format!("bf16 flipped {d:?}"),
            );
        }
    }

    /// Within 1e-5 of the largest value.
    fn assert_close(ours: &[f32], want: &[f32], what: &str) {
        let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in ours.iter().zip(want) {
            assert!((a - b).abs() <= 1e-5 * max, "{what}: {a} vs {b}");
        }
    }
}
