//! Pooling.

use burn::nn::pool::MaxPool2d;
use burn::tensor::{DType, FloatDType, Tensor};

use crate::{cpu, profile};

/// Max pooling (ResNet's stem), committee's kernels on flex (inference, and training with its
/// own backward), else Burn's.
pub fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    profile::layer("pool max", x, |x| {
        let x = match cpu::train::max_pool(pool, x) {
            Ok(y) => return y,
            Err(x) => x,
        };
        match cpu::max_pool(pool, x) {
            Ok(y) => y,
            Err(x) => pool.forward(x),
        }
    })
}

/// Global average pooling of an NCHW map to `[N, C]`, in f32 (a map kept in bf16, see
/// [`crate::bf16_activations`], is widened first: the features and logits are f32).
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, _, _] = x.dims();
    profile::layer("pool global avg", x, |x| {
        let x = match x.dtype() {
            DType::BF16 => x.cast(FloatDType::F32),
            _ => x,
        };
        x.mean_dim(3).mean_dim(2).reshape([n, c])
    })
}
