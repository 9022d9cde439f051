//! Antialiased resampling with PIL's (and PyTorch's `antialias=True`) coefficients.
//!
//! timm resizes ViT position embeddings with `F.interpolate(mode="bicubic", antialias=True)`
//! and evaluates images resized by PIL; both compute separable filter taps the same way:
//! the filter is stretched by the scale when downsampling, taps outside the input are
//! dropped and the remaining weights renormalised.

/// Python's `round` (half to even), which timm uses for squeeze-excite widths and
/// torchvision for crop offsets.
pub fn py_round(v: f64) -> i64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - v.signum()) as i64
    } else {
        r as i64
    }
}

/// [`py_round`] of a non-negative value.
pub fn round_half_even(v: f64) -> usize {
    py_round(v).max(0) as usize
}

/// Resampling filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter, support 1.
    Bilinear,
    /// Cubic convolution with a = -0.5, support 2.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => (1.0 - x).max(0.0),
            Filter::Bicubic => {
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
        }
    }
}

/// Taps of one output sample: first input index and normalised weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Taps {
    pub start: usize,
    pub weights: Vec<f64>,
}

/// Coefficients for resampling `input` samples to `output` samples over the same extent,
/// optionally from a sub-range `[lo, hi)` of the input (PIL's box argument, used by crops).
pub fn coefficients(input: usize, output: usize, filter: Filter, lo: f64, hi: f64) -> Vec<Taps> {
    let scale = (hi - lo) / output as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    // Multiplying by the reciprocal (not dividing) keeps every double as PIL computes it.
    let ss = 1.0 / filterscale;
    (0..output)
        .map(|i| {
            let center = lo + (i as f64 + 0.5) * scale;
            // Python's int() truncates toward zero; the clamp makes that the same as floor.
            let xmin = ((center - support + 0.5).trunc()).max(0.0) as usize;
            let xmax = ((center + support + 0.5).trunc() as usize).min(input);
            let mut w: Vec<f64> = (xmin..xmax)
                .map(|x| filter.eval((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            Taps {
                start: xmin,
                weights: w,
            }
        })
        .collect()
}

/// Bits of PIL's fixed-point coefficients for 8-bit images (`32 - 8 - 2`).
pub const PIL_PRECISION_BITS: u32 = 22;

/// Taps of one output sample as PIL's 8-bit fixed-point coefficients.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedTaps {
    pub start: usize,
    pub weights: Vec<i32>,
}

/// PIL's `normalize_coeffs_8bpc`: each weight rounded half away from zero to 22 bits.
pub fn fixed_point(taps: &[Taps]) -> Vec<FixedTaps> {
    let one = (1u32 << PIL_PRECISION_BITS) as f64;
    taps.iter()
        .map(|t| FixedTaps {
            start: t.start,
            weights: t
                .weights
                .iter()
                .map(|&w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect(),
        })
        .collect()
}

/// One 8-bit output sample as PIL computes it: fixed-point sum, rounded, clipped.
pub fn pil_sample(t: &FixedTaps, px: impl Fn(usize) -> u8) -> u8 {
    let mut ss: i64 = 1 << (PIL_PRECISION_BITS - 1);
    for (i, &w) in t.weights.iter().enumerate() {
        ss += px(t.start + i) as i64 * w as i64;
    }
    (ss >> PIL_PRECISION_BITS).clamp(0, 255) as u8
}

/// Resamples `c` planes of `h` x `w` f32 values (channel-major) to `oh` x `ow`.
pub fn resize_planes(
    data: &[f32],
    c: usize,
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    filter: Filter,
) -> Vec<f32> {
    let cw = coefficients(w, ow, filter, 0.0, w as f64);
    let ch = coefficients(h, oh, filter, 0.0, h as f64);
    let mut out = vec![0f32; c * oh * ow];
    let mut tmp = vec![0f64; h * ow];
    for p in 0..c {
        let plane = &data[p * h * w..(p + 1) * h * w];
        for y in 0..h {
            for (x, t) in cw.iter().enumerate() {
                tmp[y * ow + x] = t
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(i, wt)| wt * plane[y * w + t.start + i] as f64)
                    .sum();
            }
        }
        for (y, t) in ch.iter().enumerate() {
            for x in 0..ow {
                let v: f64 = t
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(i, wt)| wt * tmp[(t.start + i) * ow + x])
                    .sum();
                out[p * oh * ow + y * ow + x] = v as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_round() {
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
        assert_eq!(round_half_even(4.4), 4);
        assert_eq!(round_half_even(4.6), 5);
        assert_eq!(py_round(-2.5), -2);
        assert_eq!(py_round(-3.5), -4);
    }

    #[test]
    fn identity_when_sizes_match() {
        let data: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = resize_planes(&data, 1, [4, 4], [4, 4], Filter::Bicubic);
        for (a, b) in data.iter().zip(&out) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn bicubic_upsample_taps_hand_computed() {
        // 2 -> 4: output 0 has center 0.25 and support 2, so taps 0..2 (the rest fall outside):
        // distances 0.25 and 1.25, cubic weights 0.8671875 and -0.0703125, then renormalised.
        let t = coefficients(2, 4, Filter::Bicubic, 0.0, 2.0);
        let a = Filter::Bicubic.eval(0.25);
        let b = Filter::Bicubic.eval(1.25);
        assert_eq!(t[0].start, 0);
        assert!((t[0].weights[0] - a / (a + b)).abs() < 1e-12);
        assert!((a - 0.8671875).abs() < 1e-12);
        assert!((b + 0.0703125).abs() < 1e-12);
    }

    #[test]
    fn constant_is_preserved_downsampling() {
        let data = vec![3.0f32; 7 * 5];
        let out = resize_planes(&data, 1, [7, 5], [3, 2], Filter::Bicubic);
        assert!(out.iter().all(|v| (v - 3.0).abs() < 1e-5));
    }
}
