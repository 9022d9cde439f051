//! Building blocks shared by the families: layer constructors, conv + BatchNorm (+ act)
//! blocks, BN folding, stochastic depth, channel rounding. What runs each op is
//! `committee_ops`' choice, not the zoo's.

use burn::module::{Flag, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, Linear, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor};
use committee_ops as ops;
use serde::{Deserialize, Serialize};

pub use committee_data::resample::round_half_even;
pub use committee_ops::{Act, global_avg_pool, linear, mlp, residual_add};

/// timm's `make_divisible`: round `v` to a multiple of `divisor`, never dropping more than 10%.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut n = ((v + d / 2.0) / d).floor() as usize * divisor;
    n = n.max(divisor);
    if (n as f64) < 0.9 * v {
        n += divisor;
    }
    n
}

/// How a convolution pads, decided per family variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadMode {
    /// PyTorch-style static `(k - 1) / 2` on every side.
    Symmetric,
    /// TensorFlow "SAME": input-size dependent, extra pixel at the bottom/right.
    Same,
    /// No padding (ViT's patch embedding).
    Valid,
}

/// A convolution layer as the families describe it (kernel, stride, groups, padding mode,
/// bias); [`Conv::init`] builds Burn's `Conv2d`. Stride 1, one group and no bias (a BatchNorm
/// follows) unless set.
#[derive(Debug, Clone, Copy)]
pub struct Conv {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    pad: PadMode,
    bias: bool,
}

impl Conv {
    /// A `k` x `k` convolution from `cin` to `cout` channels, padded by the family's mode.
    pub fn new(cin: usize, cout: usize, k: usize, pad: PadMode) -> Self {
        Self {
            cin,
            cout,
            k,
            stride: 1,
            groups: 1,
            pad,
            bias: false,
        }
    }

    /// Downsampling convolutions (stems, first blocks of a stage).
    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    /// Depthwise convolutions (`groups` = channels).
    pub fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    /// A bias, where no BatchNorm follows (squeeze-excite, ViT's patch embedding).
    pub fn bias(self, bias: bool) -> Self {
        Self { bias, ..self }
    }

    /// [`Conv::bias`]`(true)`.
    pub fn with_bias(self) -> Self {
        self.bias(true)
    }

    /// Burn's layer, parameters lazy (nothing is allocated until loaded or used).
    pub fn init(self, device: &Device) -> Conv2d {
        let (k, stride) = (self.k, self.stride);
        let padding = match self.pad {
            PadMode::Same if k > 1 || stride > 1 => PaddingConfig2d::Same,
            PadMode::Valid => PaddingConfig2d::Valid,
            _ => {
                let p = (k - 1) / 2;
                PaddingConfig2d::Explicit(p, p, p, p)
            }
        };
        Conv2dConfig::new([self.cin, self.cout], [k, k])
            .with_stride([stride, stride])
            .with_groups(self.groups)
            .with_padding(padding)
            .with_bias(self.bias)
            .init(device)
    }
}

/// A BatchNorm of `c` channels with the family's eps (timm's differ per family and port).
pub fn bn(c: usize, eps: f64, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c).with_epsilon(eps).init(device)
}

/// Folds an inference-mode BatchNorm into the convolution before it (exactly equivalent:
/// `bn(conv(x)) = conv'(x)` with `w' = w * s`, `b' = (b - mean) * s + beta`,
/// `s = gamma / sqrt(var + eps)`), saving the BN's passes over the activation map.
pub fn fold_bn(conv: Conv2d, bn: &BatchNorm) -> Conv2d {
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let out = scale.dims()[0];
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => scale.zeros_like(),
    };
    let bias = (bias - bn.running_mean.value()) * scale.clone() + bn.beta.val();
    let s4 = scale.reshape([out, 1, 1, 1]);
    Conv2d {
        weight: conv.weight.map(|w| w * s4),
        bias: Some(Param::from_tensor(bias)),
        ..conv
    }
}

/// A convolution followed by BatchNorm, unless the BN was folded into it.
pub fn conv_bn(conv: &Conv2d, bn: &BatchNorm, folded: bool, x: Tensor<4>) -> Tensor<4> {
    let y = ops::conv2d_act(conv, x, None);
    if folded { y } else { ops::batch_norm(bn, y) }
}

/// [`conv_bn`] then `act`; with BN folded, flex's depthwise kernel applies the activation to
/// each output row while it is still in cache, saving a pass over the map.
pub fn conv_bn_act(
    conv: &Conv2d,
    bn: &BatchNorm,
    folded: bool,
    act: Act,
    x: Tensor<4>,
) -> Tensor<4> {
    if folded {
        // Unfused, the activation is a span of its own nested in the conv's (profiled apart).
        return ops::conv2d_act(conv, x, Some(act));
    }
    ops::batch_norm_act(bn, ops::conv2d_act(conv, x, None), act)
}

/// The classifier on pooled features (dropout, then the linear head), or the features
/// themselves for a model built without a head.
pub fn classifier(fc: Option<&Linear>, dropout: &Dropout, features: Tensor<2>) -> Tensor<2> {
    match fc {
        Some(fc) => linear("linear classifier", fc, dropout.forward(features), None),
        None => features,
    }
}

/// Output size of a convolution along one axis, for both padding modes.
pub fn conv_out(input: usize, k: usize, stride: usize, pad: PadMode) -> usize {
    match pad {
        PadMode::Same => input.div_ceil(stride),
        PadMode::Symmetric => (input + 2 * ((k - 1) / 2) - k) / stride + 1,
        PadMode::Valid => (input - k) / stride + 1,
    }
}

/// Stochastic depth ("drop path"): drops whole residual branches per sample while training.
///
/// Burn has no such layer. Like burn's `Dropout`, it is active only on an autodiff device
/// and while its training flag is on.
#[derive(Module, Debug)]
pub struct DropPath {
    pub prob: f64,
    pub training: Param<Flag>,
}

impl DropPath {
    /// Drops a branch with probability `prob` (timm's per-block drop-path rate).
    pub fn new(prob: f64) -> Self {
        Self {
            prob,
            training: Param::from_bool(true),
        }
    }

    /// Whether [`forward`](Self::forward) hands `x` back as it is (inference, or no drop),
    /// so that what comes after it may fuse with what comes before.
    pub fn is_identity_for<const D: usize>(&self, x: &Tensor<D>) -> bool {
        self.prob <= 0.0 || !self.training.is_enabled() || !x.device().is_autodiff()
    }

    /// `x` itself in inference; in training each sample's branch kept with `1 - prob`, scaled.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.is_identity_for(&x) {
            return x;
        }
        let keep = 1.0 - self.prob;
        let mut shape = [1usize; D];
        shape[0] = x.dims()[0];
        let mask = Tensor::<D>::random(shape, Distribution::Bernoulli(keep), &x.device());
        // In the activations' precision (f16 in mixed-precision training; no-op in f32).
        let mask = mask.cast(burn::tensor::FloatDType::from(x.dtype()));
        x * mask.div_scalar(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_timm() {
        // Hand-computed from timm's formula.
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16); // 11.2 -> 8 < 10.08 -> 16
        assert_eq!(make_divisible(16.0 * 0.35, 8), 8);
        assert_eq!(make_divisible(32.0 * 1.4, 8), 48); // 44.8 -> 48
        assert_eq!(make_divisible(40.0 * 1.1, 8), 48); // 44 -> 48
        assert_eq!(make_divisible(1280.0 * 1.4, 8), 1792);
        assert_eq!(make_divisible(24.0 * 0.75, 8), 24); // 18 -> 16 < 16.2 -> 24
    }

    #[test]
    fn same_padding_output() {
        assert_eq!(conv_out(233, 3, 2, PadMode::Same), 117);
        assert_eq!(conv_out(233, 3, 2, PadMode::Symmetric), 117);
        assert_eq!(conv_out(224, 7, 2, PadMode::Symmetric), 112);
        assert_eq!(conv_out(10, 5, 2, PadMode::Symmetric), 5);
    }
}
