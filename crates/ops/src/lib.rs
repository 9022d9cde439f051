//! committee's ops: every op whose implementation is ours, behind one dispatch API.
//!
//! Each public function takes a Burn layer and a tensor and picks what runs it: committee's
//! CPU kernels on flex ([`cpu`]), its GPU paths ([`gpu`]), its training ops with their own
//! backward ([`cpu::train`]), or Burn's op. Callers (the zoo's layers) never choose. Every op
//! is a span of the [`profile`]r. The crate also holds what a process sets up around the ops:
//! the device choice ([`backend`]) and the allocator tuning ([`heap`]).
//!
//! Every candidate implementation returns `Err(input)` untouched when it does not apply, so
//! the next one gets the tensor without a copy; hence `clippy::result_large_err` is allowed
//! crate-wide (a `Tensor` is large, but it is moved, not built).

#![allow(clippy::result_large_err)]

pub mod act;
pub mod attention;
pub mod backend;
pub mod conv;
pub mod cpu;
pub mod gpu;
pub mod heap;
pub mod kernel;
pub mod linear;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod precision;
pub mod profile;
pub mod se;
#[cfg(test)]
mod testing;

pub use act::Act;
pub use attention::attention;
pub use conv::{conv2d, conv2d_act, conv2d_add_act};
pub use kernel::{Kernel, set_enabled};
pub use linear::{linear, mlp};
pub use norm::{batch_norm, batch_norm_act, batch_norm_add_act, layer_norm};
pub use pool::{global_avg_pool, max_pool};
pub use se::squeeze_excite;

use burn::tensor::Tensor;

/// `f` over `x`'s batch split over the threads on flex (see [`cpu::split_batch`]), except
/// while profiling, whose spans time one thread; `Err(x)` when it does not apply.
pub fn split_batch(
    x: Tensor<4>,
    f: impl Fn(Tensor<4>) -> Tensor<2> + Sync,
) -> Result<Tensor<2>, Tensor<4>> {
    if profile::enabled() {
        return Err(x);
    }
    cpu::split_batch(x, f)
}

/// `x` rounded to bf16 when the CPU products run in bf16 (`--dtype bf16` on flex, inference,
/// the dense-convolution kernel on), else `x` itself: for models whose layers all take bf16
/// activations (ResNets: dense convolutions, the stem's max pooling, global pooling), which
/// then stay in bf16 from layer to layer, as PyTorch's autocast keeps them. Why: in f32 a
/// ResNet-50 moved twice PyTorch's bytes between layers, and its 1x1 convolutions are bound by
/// those bytes (a bottleneck's 64 -> 256 layer ran at 40-60 GMAC/s where its 3x3 ran at 200).
pub fn bf16_activations(x: Tensor<4>) -> Tensor<4> {
    let applies = precision::bf16_kernel().is_some()
        && BF16_ACTIVATIONS.on()
        && cpu::eligible(Kernel::ConvGemm, &x);
    match applies {
        true => x.cast(burn::tensor::FloatDType::BF16),
        false => x,
    }
}

/// Turns [`bf16_activations`] on (the default) or off for the process, to time the two
/// against each other (`examples/ab_f32_taps.rs` in committee-zoo).
pub fn set_bf16_activations(on: bool) {
    BF16_ACTIVATIONS.set(on);
}

static BF16_ACTIVATIONS: kernel::Switch = kernel::Switch::new(true, None);

/// A residual sum, as its own profile span.
pub fn residual_add<const D: usize>(branch: Tensor<D>, shortcut: Tensor<D>) -> Tensor<D> {
    profile::layer("add residual", branch, |b| b + shortcut)
}
