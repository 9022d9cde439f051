//! Top-k accuracy over rows of logits or probabilities.

/// Whether `label` is among the `k` largest of `row` by strict rank: fewer than `k` other
/// values are at least as large (a tie is never a win), and a NaN is never correct and
/// outranks everything. Why: with lower-index tie-breaking (`torch.topk`'s), a checkpoint
/// whose logits are all NaN or all equal scored every label 0 as correct.
pub fn in_top_k(row: &[f32], label: usize, k: usize) -> bool {
    let Some(&target) = row.get(label) else {
        return false;
    };
    if target.is_nan() {
        return false;
    }
    let rivals = row
        .iter()
        .enumerate()
        .filter(|&(i, &v)| i != label && (v >= target || v.is_nan()))
        .count();
    rivals < k
}

/// What [`argmax`] predicts when no class is strictly the largest; it equals no label.
pub const NO_CLASS: usize = usize::MAX;

/// Index of the strictly largest value; [`NO_CLASS`] when the largest is shared (a tie), a
/// value is NaN, or the row is empty. Why: the committees count a prediction as correct when
/// it equals the label, and a tie or a NaN must never count (as in [`in_top_k`]).
pub fn argmax<T: PartialOrd + Copy>(row: &[T]) -> usize {
    if row.is_empty() {
        return NO_CLASS;
    }
    let (mut best, mut tie) = (0, false);
    for (i, &v) in row.iter().enumerate() {
        // NaN is the one value not comparable with itself.
        if v.partial_cmp(&v).is_none() {
            return NO_CLASS;
        }
        if i == 0 {
            continue;
        }
        if v > row[best] {
            (best, tie) = (i, false);
        } else if v == row[best] {
            tie = true;
        }
    }
    if tie { NO_CLASS } else { best }
}

/// Running top-1/top-5 counts.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Accuracy {
    pub n: usize,
    pub top1: usize,
    pub top5: usize,
}

impl Accuracy {
    pub fn add(&mut self, row: &[f32], label: usize) {
        self.n += 1;
        self.top1 += in_top_k(row, label, 1) as usize;
        self.top5 += in_top_k(row, label, 5) as usize;
    }

    pub fn top1_pct(&self) -> f64 {
        pct(self.top1, self.n)
    }

    pub fn top5_pct(&self) -> f64 {
        pct(self.top5, self.n)
    }
}

fn pct(a: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        100.0 * a as f64 / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_by_hand() {
        let row = [0.1, 0.5, 0.2, 0.9, 0.3, 0.0, 0.8];
        assert!(in_top_k(&row, 3, 1));
        assert!(!in_top_k(&row, 6, 1));
        assert!(in_top_k(&row, 6, 2));
        assert!(in_top_k(&row, 4, 5)); // 0.9 0.8 0.5 0.3 -> 4th
        assert!(!in_top_k(&row, 5, 5));
        assert_eq!(argmax(&row), 3);
        assert_eq!(argmax(&[0.2, 0.7, 0.7, 0.1]), NO_CLASS); // a tie at the top
        assert_eq!(argmax(&[0.7, 0.7, 0.9]), 2); // a tie below the top is fine
        assert_eq!(argmax(&[0.2, f32::NAN, 0.9]), NO_CLASS);
        assert_eq!(argmax::<f32>(&[]), NO_CLASS);
        let mut a = Accuracy::default();
        a.add(&row, 3);
        a.add(&row, 1);
        assert_eq!((a.top1_pct(), a.top5_pct()), (50.0, 100.0));
    }

    /// Ties and NaN never count as correct (by hand: the cases a broken checkpoint gives).
    #[test]
    fn ties_and_nan_are_wrong() {
        let nan = f32::NAN;
        assert!(!in_top_k(&[nan; 4], 0, 1) && !in_top_k(&[nan; 4], 0, 5));
        assert!(!in_top_k(&[0.0; 4], 0, 1)); // all equal: no winner
        assert!(in_top_k(&[0.0; 4], 0, 5)); // three rivals < 5
        assert!(!in_top_k(&[0.5, 0.5, 0.1], 1, 1) && in_top_k(&[0.5, 0.5, 0.1], 1, 2));
        assert!(!in_top_k(&[0.9, nan, 0.1], 0, 1)); // a NaN elsewhere outranks
        assert!(in_top_k(&[0.9, nan, 0.1], 0, 2));
        assert!(!in_top_k(&[0.9, f32::INFINITY], 0, 1) && in_top_k(&[0.9, f32::INFINITY], 1, 1));
        let mut a = Accuracy::default();
        for label in 0..4 {
            a.add(&[nan; 4], label);
        }
        assert_eq!((a.top1_pct(), a.top5_pct()), (0.0, 0.0));
    }
}
