//! Cross-entropy with label smoothing, as PyTorch's `CrossEntropyLoss(label_smoothing=e)`:
//! `(1 - e) * nll + e * mean_k(-log p_k)`.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Mean loss over the batch (a one-element tensor).
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>, smoothing: f64) -> Tensor<1> {
    let [n, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    let nll = logp.clone().gather(1, targets.reshape([n, 1])).neg();
    let loss = if smoothing > 0.0 {
        let uniform = logp.mean_dim(1).neg();
        nll * (1.0 - smoothing) + uniform * smoothing
    } else {
        nll
    };
    loss.mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn dev() -> Device {
        committee_ops::backend::cpu_device()
    }

    #[test]
    fn matches_hand_computed_values() {
        // Row 1: logits [0, ln 3] -> p = [1/4, 3/4]; target 1.
        // Row 2: logits [0, 0] -> p = [1/2, 1/2]; target 0.
        let l3 = 3f32.ln();
        let logits =
            Tensor::<2>::from_data(TensorData::new(vec![0.0, l3, 0.0, 0.0], [2, 2]), &dev());
        let t = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &dev());
        let plain: f32 = cross_entropy(logits.clone(), t.clone(), 0.0).into_scalar();
        let want = (-(0.75f64).ln() + 2f64.ln()) / 2.0;
        assert!((plain as f64 - want).abs() < 1e-6, "{plain} vs {want}");
        // Smoothing 0.2: each row adds 0.2 * (mean of -log p) instead of 0.2 * nll.
        let smooth: f32 = cross_entropy(logits, t, 0.2).into_scalar();
        let r1 = 0.8 * -(0.75f64).ln() + 0.2 * (-(0.25f64).ln() - (0.75f64).ln()) / 2.0;
        let r2 = 2f64.ln();
        assert!((smooth as f64 - (r1 + r2) / 2.0).abs() < 1e-6);
    }
}
