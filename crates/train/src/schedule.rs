//! Learning rate per iteration: linear warmup, then cosine decay to `min_lr` (timm's
//! `cosine` scheduler with `warmup_epochs`, stepped per iteration as Burn's schedulers are).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub base_lr: f64,
    pub min_lr: f64,
    pub warmup_iters: usize,
    pub total_iters: usize,
}

impl Schedule {
    /// The rate for iteration `it` (0-based). Warmup reaches `base_lr` at its last iteration;
    /// the cosine then runs over the remaining iterations.
    pub fn lr(&self, it: usize) -> f64 {
        if it < self.warmup_iters {
            return self.base_lr * (it + 1) as f64 / self.warmup_iters as f64;
        }
        let span = self.total_iters.saturating_sub(self.warmup_iters).max(1);
        let t = ((it - self.warmup_iters) as f64 / span as f64).min(1.0);
        self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_hand_computed() {
        let s = Schedule {
            base_lr: 0.4,
            min_lr: 0.0,
            warmup_iters: 4,
            total_iters: 12,
        };
        // Warmup: 0.1, 0.2, 0.3, 0.4.
        for (i, want) in [0.1, 0.2, 0.3, 0.4].iter().enumerate() {
            assert!((s.lr(i) - want).abs() < 1e-12, "it {i}: {}", s.lr(i));
        }
        // Cosine over 8 iterations: t = 0 -> 0.4, t = 0.5 -> 0.2, t = 0.25 -> 0.2(1+cos(pi/4)).
        assert!((s.lr(4) - 0.4).abs() < 1e-12);
        assert!((s.lr(6) - 0.2 * (1.0 + (std::f64::consts::FRAC_PI_4).cos())).abs() < 1e-12);
        assert!((s.lr(8) - 0.2).abs() < 1e-12);
        assert!(s.lr(11) > 0.0 && s.lr(11) < 0.02);
        assert!(s.lr(12).abs() < 1e-12);
    }

    #[test]
    fn no_warmup_starts_at_base() {
        let s = Schedule {
            base_lr: 1.0,
            min_lr: 0.1,
            warmup_iters: 0,
            total_iters: 10,
        };
        assert!((s.lr(0) - 1.0).abs() < 1e-12);
        assert!((s.lr(5) - 0.55).abs() < 1e-12);
    }
}
