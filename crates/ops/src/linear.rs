//! Linear layers: one gemm with bias and activation fused on flex, in training one product
//! each way with our own backward, else Burn's.

use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::act::Act;
use crate::{cpu, profile};

/// `act(lin(x))`, profiled as `kind` with the layer's multiply-accumulates.
pub fn linear<const D: usize>(
    kind: &'static str,
    lin: &Linear,
    x: Tensor<D>,
    act: Option<Act>,
) -> Tensor<D> {
    profile::linear(kind, lin, x, |x| {
        let ep = act.map_or(cpu::Epilogue::None, Act::epilogue);
        let x = match cpu::linear(lin, x, ep) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let y = match cpu::train::linear(lin, x) {
            Ok(y) => y,
            Err(x) => lin.forward(x),
        };
        match act {
            Some(a) => a.apply(y),
            None => y,
        }
    })
}
