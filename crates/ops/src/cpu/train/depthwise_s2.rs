//! Both gradients of a stride-2 depthwise layer, one plane at a time, by phases (the wide
//! layers [`super::depthwise`] runs plane by plane: MobileNetV2's and EfficientNet-B0's
//! 96-channel 112x112 layer).
//!
//! Why: as a stride-1 layer over its output gradient spread on the stride's grid (zeros
//! between), each gradient ran over a plane four times the output's, three quarters of its
//! products with those zeros, and the spread plane was built value by value: that layer's
//! backward took 25-30 ms at batch 8 on two Zen 4 cores, five times its forward. In padded
//! coordinates (`jy = iy + pt`, `jx = ix + pl`) an input value meets only the taps of its own
//! parity, `ky = jy - 2 oy` and `kx = jx - 2 ox`: split by the parity of the padded row and
//! column, each gradient is a sum of contiguous runs of rows (a 3x3 kernel: 1, 2 or 4 taps
//! per input value, nine per four).

use super::Geometry;
use super::depthwise::{L, lane_dot};

/// One task's rows, reused from plane to plane.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The output gradient, each row after [`lead`] zeros and before zeros to [`Dims::row`].
    dyp: Vec<f32>,
    /// One input row's gradient in its two column phases, `[phase][q]`: padded column
    /// `2 q + phase`.
    half: Vec<f32>,
    /// One input row, padded and split into its two column phases (the same layout).
    xph: Vec<f32>,
}

/// The lengths a plane's passes use.
struct Dims {
    /// Zeros before each row of the output gradient: the most a tap reaches back, `(k - 1) / 2`.
    lead: usize,
    /// Columns per phase: enough for the input row's padded columns and for every tap's run.
    q: usize,
    /// Length of a padded output-gradient row.
    row: usize,
}

impl Dims {
    fn new(g: &Geometry) -> Dims {
        let lead = (g.k - 1) / 2;
        // Padded input columns reach `pl + w - 1`; a tap's run reads `ow` values from index
        // `kx / 2 <= lead`.
        let q = (g.pl + g.w).div_ceil(2).max(g.ow + lead);
        Dims {
            lead,
            q,
            row: lead + q.max(g.ow),
        }
    }
}

/// Whether the phases apply: stride 2 and a kernel the padding leaves inside (as
/// [`super::depthwise`]'s plane path asks).
pub(crate) fn applies(g: &Geometry) -> bool {
    g.s == 2 && g.k > 0 && g.pt < g.k && g.pl < g.k
}

crate::cpu::isa::widest!(
    pub(crate) fn input_grad(
        dy: &[f32],
        taps: &[f32],
        g: &Geometry,
        oh: usize,
        dx: &mut [std::mem::MaybeUninit<f32>],
        buf: &mut Scratch,
    ) = input_grad_body
);

/// The input gradient of one plane: `dx[iy][ix] = sum of taps[ky][kx] * dy[oy][ox]` over
/// `2 oy + ky = iy + pt`, `2 ox + kx = ix + pl`; `dy` is `oh x ow`, `dx` `h x w`, each
/// element written.
#[inline(always)]
fn input_grad_body(
    dy: &[f32],
    taps: &[f32],
    g: &Geometry,
    oh: usize,
    dx: &mut [std::mem::MaybeUninit<f32>],
    buf: &mut Scratch,
) {
    let (k, w, ow) = (g.k, g.w, g.ow);
    assert!(applies(g) && taps.len() >= k * k);
    assert!(dy.len() >= oh * ow && dx.len() >= g.h * w);
    let d = Dims::new(g);
    let Scratch { dyp, half, .. } = buf;
    dyp.clear();
    dyp.resize(oh * d.row, 0.0);
    for (src, dst) in dy.chunks_exact(ow).zip(dyp.chunks_exact_mut(d.row)) {
        dst[d.lead..d.lead + ow].copy_from_slice(src);
    }
    half.clear();
    half.resize(2 * d.q, 0.0);
    // Input column `ix = 2 b + r` is padded column `ix + pl`: phase `(r + pl) % 2`, index
    // `b + (r + pl) / 2`.
    let at = |r: usize| (r + g.pl) % 2 * d.q + (r + g.pl) / 2;
    let (even, odd) = (at(0), at(1));
    for (iy, out) in dx.chunks_exact_mut(w).take(g.h).enumerate() {
        let jy = iy + g.pt;
        half.fill(0.0);
        // Row taps of this row's parity whose output row lies inside `dy`.
        for ky in (jy % 2..k).step_by(2) {
            let Some(oy) = (jy / 2).checked_sub(ky / 2).filter(|&oy| oy < oh) else {
                continue;
            };
            let src = &dyp[oy * d.row..][..d.row];
            for (kx, &tap) in taps[ky * k..][..k].iter().enumerate() {
                // Padded column `2 q + kx % 2` meets `dy[oy][q - kx / 2]`.
                let run = &src[d.lead - kx / 2..][..d.q];
                let dst = &mut half[kx % 2 * d.q..][..d.q];
                for (o, &v) in dst.iter_mut().zip(run) {
                    *o += tap * v;
                }
            }
        }
        let pairs = w / 2;
        for (b, pair) in out.chunks_exact_mut(2).enumerate() {
            pair[0].write(half[even + b]);
            pair[1].write(half[odd + b]);
        }
        if w % 2 == 1 {
            out[w - 1].write(half[even + pairs]);
        }
    }
}

crate::cpu::isa::widest!(
    pub(crate) fn weight_grad(
        dy: &[f32],
        x: &[f32],
        g: &Geometry,
        oh: usize,
        dw: &mut [f32],
        buf: &mut Scratch,
    ) = weight_grad_body
);

/// One plane's share of the weight gradient: `dw[ky][kx] = sum of dy[oy][ox] * x[iy][ix]`
/// over `iy + pt = 2 oy + ky`, `ix + pl = 2 ox + kx` inside the map; each tap summed in
/// `L` lanes input row by input row, the lanes last (a fixed order: the same bits on every
/// thread count and instruction set). Writes `dw[..k * k]`.
#[inline(always)]
fn weight_grad_body(
    dy: &[f32],
    x: &[f32],
    g: &Geometry,
    oh: usize,
    dw: &mut [f32],
    buf: &mut Scratch,
) {
    const MAX_TAPS: usize = crate::cpu::depthwise::MAX_K * crate::cpu::depthwise::MAX_K;
    let (k, w, ow) = (g.k, g.w, g.ow);
    assert!(applies(g) && k * k <= MAX_TAPS && dw.len() >= k * k);
    assert!(dy.len() >= oh * ow && x.len() >= g.h * w);
    let d = Dims::new(g);
    let xph = &mut buf.xph;
    xph.clear();
    xph.resize(2 * d.q, 0.0);
    let mut acc = [[0f32; L]; MAX_TAPS];
    let mut tail = [0f32; MAX_TAPS];
    for (iy, row) in x.chunks_exact(w).take(g.h).enumerate() {
        let jy = iy + g.pt;
        let mut split = false;
        for ky in (jy % 2..k).step_by(2) {
            let Some(oy) = (jy / 2).checked_sub(ky / 2).filter(|&oy| oy < oh) else {
                continue;
            };
            if !split {
                let (even, odd) = xph.split_at_mut(d.q);
                crate::cpu::depthwise::split_pairs(row, g.pl, (even, odd));
                split = true;
            }
            let drow = &dy[oy * ow..][..ow];
            for kx in 0..k {
                // `x` at padded column `2 ox + kx`: phase `kx % 2`, index `ox + kx / 2`.
                let xs = &xph[kx % 2 * d.q + kx / 2..][..ow];
                let t = ky * k + kx;
                lane_dot(&mut acc[t], &mut tail[t], drow, xs);
            }
        }
    }
    for (t, out) in dw[..k * k].iter_mut().enumerate() {
        *out = acc[t].iter().sum::<f32>() + tail[t];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    /// Both gradients of one stride-2 plane by their definition, in f64: every (output,
    /// tap) pair whose input lies inside the map.
    fn definition(dy: &[f32], x: &[f32], taps: &[f32], g: &Geometry, oh: usize) -> [Vec<f64>; 2] {
        let k = g.k;
        let mut dx = vec![0f64; g.h * g.w];
        let mut dw = vec![0f64; k * k];
        for (oy, ox, ky, kx) in (0..oh).flat_map(|oy| {
            (0..g.ow).flat_map(move |ox| {
                (0..k).flat_map(move |ky| (0..k).map(move |kx| (oy, ox, ky, kx)))
            })
        }) {
            let (iy, ix) = (
                (2 * oy + ky).wrapping_sub(g.pt),
                (2 * ox + kx).wrapping_sub(g.pl),
            );
            if iy < g.h && ix < g.w {
                let d = dy[oy * g.ow + ox] as f64;
                dx[iy * g.w + ix] += d * taps[ky * k + kx] as f64;
                dw[ky * k + kx] += d * x[iy * g.w + ix] as f64;
            }
        }
        [dx, dw]
    }

    /// On every kernel size up to 7, every top and left padding below it, bottom and right
    /// paddings from none to `k - 1`, odd and even maps (one row or column too): both
    /// gradients as their definition gives them, the scratch reused from plane to plane of
    /// other sizes (`scripts/test.sh` runs it again under `COMMITTEE_ISA=avx2` and `base`).
    #[test]
    fn stride_two_gradients_by_phases_match_the_definition() {
        let mut buf = Scratch::default();
        let mut cases = 0;
        for (k, h, w) in (1..=7).flat_map(|k| [(k, 9, 20), (k, 8, 17), (k, 1, 3 + k), (k, 5, 1)]) {
            for (pt, pl, pb, pr) in
                (0..k).flat_map(|a| (0..k).map(move |b| (a, b, (a + 1) % k, (k - 1 - b) % k)))
            {
                let (hp, wp) = (h + pt + pb, w + pl + pr);
                if hp < k || wp < k {
                    continue;
                }
                let (oh, ow) = ((hp - k) / 2 + 1, (wp - k) / 2 + 1);
                let g = Geometry {
                    h,
                    w,
                    ow,
                    k,
                    s: 2,
                    pt,
                    pl,
                };
                let seed = (k * 1000 + pt * 100 + pl * 10 + h) as u64;
                let (dy, x, taps) = (
                    values(oh * ow, seed),
                    values(h * w, seed + 1),
                    values(k * k, seed + 2),
                );
                let [want_dx, want_dw] = definition(&dy, &x, &taps, &g, oh);
                let mut dx = vec![f32::NAN; h * w];
                let mut dw = vec![f32::NAN; k * k];
                input_grad(&dy, &taps, &g, oh, crate::cpu::as_uninit(&mut dx), &mut buf);
                weight_grad(&dy, &x, &g, oh, &mut dw, &mut buf);
                let what = format!("k {k} {h}x{w} pad {pt} {pl} {pb} {pr}");
                for (got, want, part) in [(&dx, &want_dx, "dx"), (&dw, &want_dw, "dw")] {
                    for (i, (&a, &b)) in got.iter().zip(want.iter()).enumerate() {
                        assert!(
                            (a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{what} {part}[{i}]: {a} vs {b}"
                        );
                    }
                }
                cases += 1;
            }
        }
        assert!(cases > 100, "{cases} cases");
    }
}
