//! Top-k accuracy over rows of logits or probabilities.

/// Whether `label` is among the `k` largest of `row` (ties broken by lower index first, as
/// `torch.topk` on CPU does for equal values).
pub fn in_top_k(row: &[f32], label: usize, k: usize) -> bool {
    let Some(&target) = row.get(label) else {
        return false;
    };
    let better = row
        .iter()
        .enumerate()
        .filter(|&(i, &v)| v > target || (v == target && i < label))
        .count();
    better < k
}

/// Index of the largest value (first on ties).
pub fn argmax<T: PartialOrd + Copy>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
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
        let mut a = Accuracy::default();
        a.add(&row, 3);
        a.add(&row, 1);
        assert_eq!((a.top1_pct(), a.top5_pct()), (50.0, 100.0));
    }
}
