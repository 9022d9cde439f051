//! Seeded, class-stratified splits of cache rows into a part that fits thresholds and a part
//! that reports them.

/// SplitMix64: small, seeded and portable, so a split is the same on every machine.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Splits `0..labels.len()` into (fit, eval): per class, a seeded shuffle puts
/// `round(fraction * count)` rows into `fit`. Both parts come back in ascending row order.
/// `fraction` 0 gives an empty fit part, 1 an empty eval part.
pub fn stratified(labels: &[i64], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut classes: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for (i, &y) in labels.iter().enumerate() {
        classes.entry(y).or_default().push(i);
    }
    let mut rng = SplitMix(seed);
    let (mut fit, mut eval) = (Vec::new(), Vec::new());
    for rows in classes.values_mut() {
        for i in (1..rows.len()).rev() {
            let j = rng.below(i + 1);
            rows.swap(i, j);
        }
        let k = (fraction.clamp(0.0, 1.0) * rows.len() as f64).round() as usize;
        fit.extend_from_slice(&rows[..k]);
        eval.extend_from_slice(&rows[k..]);
    }
    fit.sort_unstable();
    eval.sort_unstable();
    (fit, eval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_by_class_and_seeded() {
        // 30 of class 0, 10 of class 1.
        let labels: Vec<i64> = (0..40).map(|i| (i >= 30) as i64).collect();
        let (fit, eval) = stratified(&labels, 0.2, 7);
        assert_eq!(fit.iter().filter(|&&i| labels[i] == 0).count(), 6);
        assert_eq!(fit.iter().filter(|&&i| labels[i] == 1).count(), 2);
        assert_eq!(fit.len() + eval.len(), 40);
        let mut all: Vec<usize> = fit.iter().chain(&eval).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        assert_eq!(stratified(&labels, 0.2, 7), (fit.clone(), eval));
        assert_ne!(stratified(&labels, 0.2, 8).0, fit);
        assert!(stratified(&labels, 0.0, 1).0.is_empty());
        assert!(stratified(&labels, 1.0, 1).1.is_empty());
    }
}
