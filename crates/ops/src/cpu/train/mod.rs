//! Training ops for flex with their own backward passes: depthwise, 1x1 and other dense
//! convolutions, BatchNorm (with the activation, and a residual block's shortcut sum, fused
//! in), squeeze-and-excitation and max pooling (the layers of MobileNetV2, EfficientNet and
//! ResNet), and linear layers, LayerNorm, GELU and multi-head attention (ViT's).
//!
//! Why: Burn 0.22 differentiates these generically, and on small maps that is mostly overhead.
//! A grouped convolution's weight gradient runs one convolution plus a slice and a slice-assign
//! *per channel* (960 of each in one MobileNetV2 layer); convolution input gradients go through
//! flex's transposed 3-D convolution; BatchNorm is a dozen ops with strided copies, each
//! differentiated apart. `perf` of a MobileNetV2 training step (28 px, batch 64) put ~13 % in
//! the transposed convolution and ~10 % in layout copies (docs/benchmarks.md). Here:
//! depthwise runs channels-last (every inner loop a contiguous multiply-add over channels,
//! whatever the map size), 1x1 convolutions are matrix products (`gemm`), other dense ones
//! matrix products over the unfolded image, BatchNorm is two passes each way with the closed-form gradient. Reductions are summed in a fixed order, so
//! the bits do not depend on the thread count (training stays reproducible).
//!
//! Each op is an autodiff node of Burn's own kind (`burn::backend::autodiff`'s `Backward`),
//! reached through `Tensor::try_into_primitive::<Autodiff<Flex>>`, so the rest of the graph is
//! untouched. They apply to f32 tensors on `Device::flex().autodiff()` without gradient
//! checkpointing and to layers without bias (timm's: BatchNorm follows); everything else keeps
//! Burn's ops. `--flex-kernels` without `train` turns them off, to compare.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, GradientCheckpointingStrategy};
use burn::nn::BatchNorm;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::{
    CHUNK, Geometry, Isa, Kernel, Mat, contiguous, gemm_into, gemm_strided, im2col_row,
    is_depthwise, on, preloaded, preloaded_pair, window,
};
use std::mem::MaybeUninit;

mod attention;
mod conv;
mod depthwise;
mod depthwise_s2;
pub(crate) mod direct;
#[cfg(target_arch = "x86_64")]
mod direct_wgrad;
mod half;
mod layer_norm;
mod linear;
pub(crate) mod norm;
mod pool;
pub(crate) mod se;
#[cfg(test)]
mod tests;
mod unary;
#[cfg(target_arch = "x86_64")]
mod wgrad;

pub use attention::attention;
pub use conv::{dense, pointwise, set_bf16_everywhere, set_train_taps};
#[cfg(test)]
use conv::{dense_in, pointwise_in};
pub use depthwise::{
    depthwise, set_phases as set_depthwise_phases, set_planes as set_depthwise_planes,
};
pub use direct::set_direct;
#[cfg(target_arch = "x86_64")]
pub use direct_wgrad::set_direct_weight_grad;
pub use half::set_images_per_product;
pub use layer_norm::layer_norm;
pub use linear::linear;
#[cfg(test)]
use linear::linear_in;
pub use norm::{
    BatchNormOut, batch_norm, batch_norm_add, set_per_channel as set_batch_norm_per_channel,
    set_residual as set_batch_norm_residual,
    set_slope_from_input as set_batch_norm_slope_from_input,
};
pub use pool::{max_pool, set_max_pool};
pub use se::{set_squeeze_excite, squeeze_excite};
pub use unary::activation;
#[cfg(target_arch = "x86_64")]
pub use wgrad::set_weight_grad_dots;

type Ad = Autodiff<Flex, NoCheckpointing>;

/// `conv(x)` through the op below that handles `conv` (depthwise, 1x1, other dense); `Err(x)`
/// when none does.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let x = match depthwise(conv, x) {
        Ok(y) => return Ok(y),
        Err(x) => x,
    };
    let x = match pointwise(conv, x) {
        Ok(y) => return Ok(y),
        Err(x) => x,
    };
    dense(conv, x)
}

/// True when `x` is an f32 tensor on flex's autodiff device without checkpointing, the only
/// one these ops take part in, and they are switched on.
pub(crate) fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    on(Kernel::Train)
        && x.dtype() == DType::F32
        && x.device() == Device::flex().autodiff()
        && x.gradient_checkpointing_strategy() == Some(GradientCheckpointingStrategy::Disabled)
}

/// `x` (checked by [`applies`]) and `conv`'s weight as autodiff flex primitives; `Err(x)` when
/// the weight is not an f32 tensor on `x`'s device.
pub(crate) fn operands(
    conv: &Conv2d,
    x: Tensor<4>,
) -> Result<(FloatTensor<Ad>, FloatTensor<Ad>), Tensor<4>> {
    let weight = conv.weight.val();
    if weight.device() != x.device() || weight.dtype() != DType::F32 {
        return Err(x);
    }
    Ok((primitive(x), primitive(weight)))
}

/// `t`, already checked to be an f32 tensor on flex's autodiff device without checkpointing
/// (by [`applies`], and for parameters by their device matching the input's), as an autodiff
/// flex primitive.
pub(crate) fn primitive<const D: usize>(t: Tensor<D>) -> FloatTensor<Ad> {
    match t.try_into_primitive::<Ad>() {
        Ok(t) => t,
        Err(_) => unreachable!("device and checkpointing strategy were checked"),
    }
}

pub(crate) fn slice(t: &FlexTensor) -> &[f32] {
    &t.storage::<f32>()[..t.layout().num_elements()]
}

/// A new output of `len` floats that `write` fills whole (every element written, none read
/// first). Why: zeroed first and then overwritten by their products, the convolutions'
/// outputs and input gradients took one more pass over memory each (`memset`: 4.7 % of a
/// ResNet-50 bf16 step on Zen 4). `COMMITTEE_TRAIN_UNZEROED=0` zeroes them first again.
pub(crate) fn written(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    let dst = &mut v.spare_capacity_mut()[..len];
    if !UNZEROED.on() {
        dst.fill(MaybeUninit::new(0.0));
    }
    #[cfg(test)]
    if POISON.load(std::sync::atomic::Ordering::Relaxed) {
        dst.fill(MaybeUninit::new(f32::NAN));
    }
    write(dst);
    // SAFETY: `write` wrote all `len` elements (its contract, kept by every caller: each one
    // hands the slice to kernels that store every element of it).
    unsafe { v.set_len(len) };
    v
}

/// Tests: [`written`] fills its memory with NaN before `write` (an element no kernel wrote
/// then shows in the results).
#[cfg(test)]
pub(crate) static POISON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

static UNZEROED: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_TRAIN_UNZEROED"));

/// Turns [`written`]'s unzeroed outputs on or off for the process, over
/// `COMMITTEE_TRAIN_UNZEROED` (to time the two in one process: `examples/ab_train.rs` in
/// committee-train, switch `unzeroed`).
pub fn set_unzeroed(on: bool) {
    UNZEROED.set(on)
}
