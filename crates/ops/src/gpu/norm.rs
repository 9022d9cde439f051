//! Training-mode BatchNorm on GPU devices: one autodiff node with the closed-form backward,
//! its per-channel reductions laid out for the GPU.
//!
//! Why: Burn 0.22's `batch_norm_train` swaps the batch and channel axes and reduces each
//! channel's `B*H*W` values as one row, so a ResNet-50 layer at batch 32 is 64-256 rows of
//! 25,000-100,000 values: too few rows to fill the GPU. CubeCL's kernel log of a ResNet-50
//! step on an H100 put 92 % of the logged kernel time in such reductions, ~1.45 ms each
//! (docs/benchmarks.md, "GPU"). Here every per-channel sum is a mean over the contiguous
//! `H*W` of each (image, channel) plane, `B*C` rows, then a mean of those `B` partial means
//! per channel: no transposed copy, and thousands of rows. Means rather than sums so f16
//! cannot overflow. The backward is the closed form
//! `dx = gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat))`, two such reductions,
//! instead of the differentiated composition. `COMMITTEE_GPU_BN=0` keeps Burn's op.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Cube, GradientCheckpointingStrategy};
use burn::nn::BatchNorm;
use burn::tensor::Tensor;

use crate::backend::is_cpu;

type Ad = Autodiff<Cube, NoCheckpointing>;

fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::act::env_switch(&ON, "COMMITTEE_GPU_BN", "0")
}

/// Per-channel mean of `x` `[B, C, H, W]` as `[1, C, 1, 1]`: the mean of each plane, then
/// the mean over the batch (equal counts, so the same value as one mean over all).
fn channel_mean(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h * w])
        .mean_dim(2)
        .mean_dim(0)
        .reshape([1, c, 1, 1])
}

/// Training-mode BatchNorm on a GPU autodiff device: the output, and the batch mean and
/// population variance for the running statistics; `Err(x)` when it does not apply (CPU
/// devices, gradient checkpointing, switched off, shapes or devices that do not match).
pub fn batch_norm(
    bn: &BatchNorm,
    x: Tensor<4>,
) -> Result<(Tensor<4>, Tensor<1>, Tensor<1>), Tensor<4>> {
    let device = x.device();
    let [b, c, h, w] = x.dims();
    let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
    let ok = enabled()
        && device.is_autodiff()
        && !is_cpu(&device)
        && b * h * w > 0
        && x.gradient_checkpointing_strategy() == Some(GradientCheckpointingStrategy::Disabled)
        && [&gamma, &beta]
            .iter()
            .all(|p| p.device() == device && p.dims() == [c] && p.dtype() == x.dtype());
    if !ok {
        return Err(x);
    }
    let (Ok(xa), Ok(ga), Ok(ba)) = (
        x.clone().try_into_primitive::<Ad>(),
        gamma.clone().try_into_primitive::<Ad>(),
        beta.clone().try_into_primitive::<Ad>(),
    ) else {
        return Err(x);
    };
    let xi = x.inner();
    let gi = gamma.inner().reshape([1, c, 1, 1]);
    let bi = beta.inner().reshape([1, c, 1, 1]);
    let mean = channel_mean(xi.clone());
    let centred = xi.clone() - mean.clone();
    let var = channel_mean(centred.clone() * centred.clone());
    let invstd = (var.clone() + bn.epsilon).sqrt().recip();
    let y = centred * (gi.clone() * invstd.clone()) + bi;
    let y = primitive(y);
    let state = NormState {
        x: xi,
        mean: mean.clone(),
        invstd,
        gamma: gi,
    };
    let out = match NormBackward
        .prepare::<NoCheckpointing>([xa.node(), ga.node(), ba.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Ok((
        Tensor::from_primitive::<Ad>(out),
        mean.reshape([c]).autodiff(),
        var.reshape([c]).autodiff(),
    ))
}

/// `t`'s primitive on the inner backend: every tensor here was computed from Cube tensors.
fn primitive<const D: usize>(t: Tensor<D>) -> FloatTensor<Cube> {
    match t.try_into_primitive::<Cube>() {
        Ok(p) => p,
        Err(_) => unreachable!("computed from a Cube tensor"),
    }
}

/// What the backward needs, as tensors on the inner (non-autodiff) device.
#[derive(Debug, Clone)]
struct NormState {
    x: Tensor<4>,
    /// `[1, C, 1, 1]` each.
    mean: Tensor<4>,
    invstd: Tensor<4>,
    gamma: Tensor<4>,
}

#[derive(Debug)]
struct NormBackward;

impl Backward<Cube, 3> for NormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let dy = Tensor::<4>::from_primitive::<Cube>(grads.consume::<Cube>(&ops.node));
        let st = ops.state;
        let [b, c, h, w] = st.x.dims();
        let n = (b * h * w) as f64;
        let xhat = (st.x - st.mean) * st.invstd.clone();
        let mdy = channel_mean(dy.clone());
        let mdyx = channel_mean(dy.clone() * xhat.clone());
        if let Some(node) = node_x {
            let dx = (dy - mdy.clone() - xhat * mdyx.clone()) * (st.gamma * st.invstd);
            grads.register::<Cube>(node.id, primitive(dx));
        }
        if let Some(node) = node_g {
            grads.register::<Cube>(node.id, primitive((mdyx * n).reshape([c])));
        }
        if let Some(node) = node_b {
            grads.register::<Cube>(node.id, primitive((mdy * n).reshape([c])));
        }
    }
}
