//! Multi-head self-attention from a qkv projection.

use burn::tensor::Tensor;
use burn::tensor::module::attention as sdpa;
use burn::tensor::ops::AttentionModuleOptions;

use crate::{cpu, profile};

/// `softmax(Q K^T / sqrt(d_head)) V` for every head, from timm's qkv layout `[b, n, 3 * d]`
/// to `[b, n, d]`: committee's kernel on flex (with its own backward in training), else Burn's
/// attention after the head reshapes.
pub fn attention(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    profile::layer("attention (sdpa, head reshapes)", qkv, |qkv| {
        let qkv = match cpu::attention(qkv, heads) {
            Ok(o) => return o,
            Err(qkv) => qkv,
        };
        let qkv = match cpu::train::attention(qkv, heads) {
            Ok(o) => return o,
            Err(qkv) => qkv,
        };
        let [b, n, d3] = qkv.dims();
        let (d, h) = (d3 / 3, heads);
        let qkv = qkv.reshape([b, n, 3, h, d / h]).permute([2, 0, 3, 1, 4]);
        let q = qkv.clone().narrow(0, 0, 1).squeeze_dim::<4>(0);
        let k = qkv.clone().narrow(0, 1, 1).squeeze_dim::<4>(0);
        let v = qkv.narrow(0, 2, 1).squeeze_dim::<4>(0);
        let o = sdpa(q, k, v, None, None, AttentionModuleOptions::default());
        o.swap_dims(1, 2).reshape([b, n, d])
    })
}
