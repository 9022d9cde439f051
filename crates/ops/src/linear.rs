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
    profile::linear(kind, &[lin], x, |x| unprofiled(lin, x, act))
}

/// `fc2(act(fc1(x)))`, a transformer's MLP, profiled as `kind` with both layers'
/// multiply-accumulates. With bf16 products on flex the hidden activation goes from the
/// first product to the second as packed bf16, never as f32 (see `cpu::bf16::gemm_packed`);
/// else it is the two linear layers.
pub fn mlp<const D: usize>(
    kind: &'static str,
    fc1: &Linear,
    fc2: &Linear,
    x: Tensor<D>,
    act: Option<Act>,
) -> Tensor<D> {
    profile::linear(kind, &[fc1, fc2], x, |x| {
        let ep = act.map_or(cpu::Epilogue::None, Act::epilogue);
        match cpu::linear::mlp(fc1, fc2, x, ep) {
            Ok(y) => y,
            Err(x) => unprofiled(fc2, unprofiled(fc1, x, act), None),
        }
    })
}

fn unprofiled<const D: usize>(lin: &Linear, x: Tensor<D>, act: Option<Act>) -> Tensor<D> {
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
}
