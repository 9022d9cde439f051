//! Counter-based randomness: every random stream of a run is derived from (seed, epoch,
//! sample), so a resumed run replays exactly what an uninterrupted one would have drawn.

/// SplitMix64: small, fast, and good enough for shuffling and augmentation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream keyed by any number of integers (seed, epoch, sample, ...).
    pub fn keyed(keys: &[u64]) -> Self {
        let mut s = 0x6A09_E667_F3BC_C909u64;
        for &k in keys {
            s = mix(s ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        Self(s)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n] (inclusive, as Python's `randint(0, n)`).
    pub fn int_inclusive(&mut self, n: usize) -> usize {
        (self.next_u64() % (n as u64 + 1)) as usize
    }

    /// Standard normal (Box-Muller; one of the pair is dropped, which keeps the stream simple).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform(); // (0, 1]: ln never sees zero
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Fisher-Yates shuffle of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::keyed(&[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::keyed(&[1, 2]).next_u64(),
            Rng::keyed(&[2, 1]).next_u64()
        );
        assert_ne!(
            Rng::keyed(&[0, 1]).next_u64(),
            Rng::keyed(&[0, 2]).next_u64()
        );
    }

    #[test]
    fn permutation_is_a_permutation_and_uniform_is_in_range() {
        let mut r = Rng::keyed(&[7]);
        let mut p = r.permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            sum += u;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.02);
    }

    #[test]
    fn normal_has_zero_mean_and_unit_variance() {
        let mut r = Rng::keyed(&[11]);
        let v: Vec<f64> = (0..100_000).map(|_| r.normal()).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        // Standard errors: 0.003 for the mean, 0.0045 for the variance.
        assert!(mean.abs() < 0.015, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
        // P(|x| > 1.96) = 5 %.
        let tail = v.iter().filter(|x| x.abs() > 1.96).count() as f64 / v.len() as f64;
        assert!((tail - 0.05).abs() < 0.004, "{tail}");
    }
}
