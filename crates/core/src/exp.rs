//! The softmax's exponentials in f64, vectorised: the search summarises every logit of every
//! member once (5 billion exponentials for 100 models x 50,000 images x 1,000 classes), and
//! libm's scalar `exp` made that the largest part of a large pool's search.
//!
//! [`exp`] uses only IEEE additions, multiplications, comparisons and bit operations, none of
//! them fused or reordered by the compiler, so the same input gives the same bits in a scalar
//! call and in any vector lane: [`crate::combine::softmax_at`] (one value) and
//! [`crate::combine::softmax_parts_into`] (a whole row, here with AVX-512 or AVX2 where the CPU
//! has them) agree bit for bit. Within 1 ulp of libm's `exp` for normal results (tested below).

const LOG2_E: f64 = std::f64::consts::LOG2_E;
/// ln 2 split so that `n * LN2_HI` is exact for every |n| < 2^11 (fdlibm's constants).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// 1.5 * 2^52: adding it rounds to an integer (to nearest, ties to even) held in the low bits.
const SHIFTER: f64 = 6_755_399_441_055_744.0;
/// 1/k! for k = 13 down to 2: the Taylor polynomial's error on |r| <= ln2/2 is below 2^-60.
const INV_FACT: [f64; 12] = [
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];

/// `e^x` in f64: 0 below -745.2, infinity above 709.8, NaN for NaN.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    // Outside [-746, 710] the result is 0 or infinity already at the bounds; the clamp keeps
    // the exponent arithmetic below in range (NaN passes through to the end).
    let xc = x.clamp(-746.0, 710.0);
    let k = xc * LOG2_E + SHIFTER;
    let n = k - SHIFTER;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = INV_FACT[0];
    for c in &INV_FACT[1..] {
        p = p * r + c;
    }
    let p = (p * r + 1.0) * r + 1.0;
    // 2^n as two factors, each a normal number, so results down to the subnormals round once.
    let ni = (k.to_bits() as i64).wrapping_sub(SHIFTER.to_bits() as i64);
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1 = f64::from_bits(((n1 + 1023) as u64) << 52);
    let s2 = f64::from_bits(((n2 + 1023) as u64) << 52);
    let y = p * s1 * s2;
    if x.is_nan() { x } else { y }
}

/// `max(v / t)` over `row` and `exp(v / t - max)` for each `v` into `out[..row.len()]`, and
/// their sum, added in 8 lanes (element j into lane j % 8, lanes summed pairwise): the same
/// bits on every CPU.
pub fn exp_row(row: &[f32], t: f64, out: &mut [f64]) -> (f64, f64) {
    let out = &mut out[..row.len()];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the features the function is compiled for were just detected.
            return unsafe { exp_row_avx512(row, t, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { exp_row_avx2(row, t, out) };
        }
    }
    exp_row_body(row, t, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn exp_row_avx512(row: &[f32], t: f64, out: &mut [f64]) -> (f64, f64) {
    exp_row_body(row, t, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_row_avx2(row: &[f32], t: f64, out: &mut [f64]) -> (f64, f64) {
    exp_row_body(row, t, out)
}

#[inline(always)]
fn exp_row_body(row: &[f32], t: f64, out: &mut [f64]) -> (f64, f64) {
    let mut m = [f64::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            m[l] = m[l].max(c[l] as f64 / t);
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        m[l] = m[l].max(v as f64 / t);
    }
    let max = m.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    for (e, &v) in out.iter_mut().zip(row) {
        *e = exp(v as f64 / t - max);
    }
    (max, lane_sum(out))
}

#[inline(always)]
fn lane_sum(v: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    for (l, &x) in chunks.remainder().iter().enumerate() {
        acc[l] += x;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 1 ulp of libm's `exp` (itself within 1 ulp of the true value) over the whole
    /// range a softmax uses, and the edges: 0, subnormals, overflow, infinities, NaN.
    #[test]
    fn exp_matches_libm_to_an_ulp() {
        let mut worst = 0u64;
        let mut x = -745.0f64;
        while x < 709.0 {
            let (a, b) = (exp(x), x.exp());
            if b > f64::MIN_POSITIVE {
                worst = worst.max(a.to_bits().abs_diff(b.to_bits()));
            } else {
                assert!((a - b).abs() <= 2.0 * 4.9e-324, "{x}: {a} vs {b}");
            }
            x += 0.000_731_3;
        }
        assert!(worst <= 1, "worst {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(1.0).to_bits().abs_diff(std::f64::consts::E.to_bits()) <= 1);
        assert_eq!(exp(-746.0), 0.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(710.0), f64::INFINITY);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert!(exp(f64::NAN).is_nan());
        assert!(exp(-745.0) > 0.0, "the smallest subnormals are reached");
    }

    /// The vector paths give the scalar function's bits, and the lanes' sum adds element j in
    /// lane j % 8 (rows of every length mod 8, a NaN and -inf among them).
    #[test]
    fn the_row_matches_the_scalar_exponentials() {
        for len in [1usize, 7, 8, 9, 31, 1000] {
            let row: Vec<f32> = (0..len)
                .map(|j| match j {
                    3 => f32::NEG_INFINITY,
                    _ => ((j * 7919) % 1000) as f32 / 37.0 - 13.0,
                })
                .collect();
            for t in [1.0, 0.7] {
                let mut out = vec![0.0; len];
                let (max, sum) = exp_row(&row, t, &mut out);
                let want_max = row
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64 / t));
                assert_eq!(max, want_max);
                for (j, (&e, &v)) in out.iter().zip(&row).enumerate() {
                    assert_eq!(e.to_bits(), exp(v as f64 / t - max).to_bits(), "{len} {j}");
                }
                let mut acc = [0.0f64; 8];
                for (j, &e) in out.iter().enumerate() {
                    acc[j % 8] += e;
                }
                let want = ((acc[0] + acc[1]) + (acc[2] + acc[3]))
                    + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
                assert_eq!(sum.to_bits(), want.to_bits());
                let naive: f64 = row.iter().map(|&v| (v as f64 / t - max).exp()).sum();
                assert!((sum - naive).abs() <= 1e-14 * naive);
            }
        }
        let mut out = [0.0; 3];
        let (_, sum) = exp_row(&[1.0, f32::NAN, 2.0], 1.0, &mut out);
        assert!(out[1].is_nan() && sum.is_nan());
    }
}
