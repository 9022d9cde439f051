//! Small building blocks shared by the families: activations, stochastic depth, channel rounding.

use burn::module::{Flag, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, PaddingConfig2d};
use burn::tensor::activation;
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

#[cfg(feature = "flex")]
use crate::kernels;
use crate::profile;

/// Activation functions used by the zoo's families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    Relu,
    Relu6,
    Silu,
    Gelu,
}

impl Act {
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        profile::layer(self.profile_kind(), x, |x| self.forward(x))
    }

    fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        #[cfg(feature = "flex")]
        let x = match self.epilogue() {
            Some(ep) => match kernels::activation(x, ep) {
                Ok(y) => return y,
                Err(x) => x,
            },
            None => x,
        };
        match self {
            Act::Relu => activation::relu(x),
            Act::Relu6 if x.device().is_autodiff() && relu6_masked() => relu6_train(x),
            Act::Relu6 => activation::relu6(x),
            #[cfg(feature = "flex")]
            Act::Silu if x.device().is_autodiff() => silu_train(x),
            Act::Silu => activation::silu(x),
            Act::Gelu => activation::gelu(x),
        }
    }

    /// The flex kernels' in-place form of this activation, if they have one.
    #[cfg(feature = "flex")]
    fn epilogue(self) -> Option<kernels::Epilogue> {
        match self {
            Act::Relu => Some(kernels::Epilogue::Relu),
            Act::Relu6 => Some(kernels::Epilogue::Relu6),
            Act::Silu => Some(kernels::Epilogue::Silu),
            Act::Gelu => Some(kernels::Epilogue::Gelu),
        }
    }

    fn profile_kind(self) -> &'static str {
        match self {
            Act::Relu => "act relu",
            Act::Relu6 => "act relu6",
            Act::Silu => "act silu",
            Act::Gelu => "act gelu",
        }
    }
}

/// A switch read once from the environment: on unless `var` is set to `off`.
fn env_switch(cell: &'static std::sync::OnceLock<bool>, var: &str, off: &str) -> bool {
    *cell.get_or_init(|| std::env::var(var).map_or(true, |v| v != off))
}

fn relu6_masked() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    env_switch(&ON, "COMMITTEE_RELU6", "clamp")
}

/// ReLU6 for training: `x * inside + six` with `inside = (0 < x < 6)` and `six = 6 * (x >= 6)`
/// computed outside autodiff. The values are exactly `clamp(x, 0, 6)`'s (`x * 1 + 0`, or
/// `x * 0 + 0|6`), the gradient is PyTorch's, `grad * (0 < x < 6)` (Burn's clamp lets it
/// through at 0 and 6 too), and the graph holds one multiplication and one addition. Burn's
/// clamp on an autodiff tensor is two comparisons and two single-threaded mask fills forward
/// and two more backward: 15 % of a MobileNetV2 training step on flex (docs/benchmarks.md).
/// `COMMITTEE_RELU6=clamp` for Burn's.
fn relu6_train<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let (inside, six) = relu6_parts(x.clone().inner());
    x * inside + six
}

/// SiLU for training on flex: `x * g + c` with `g` SiLU's derivative and `c = silu(x) - x g`
/// computed outside autodiff by one kernel pass (`kernels::silu_parts`): SiLU's values (to an
/// ulp of `x g`) and exact gradient, one multiplication and one addition in the graph.
#[cfg(feature = "flex")]
fn silu_train<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match kernels::silu_parts(x.clone().inner()) {
        Ok((g, c)) => x * g + c,
        Err(_) => activation::silu(x),
    }
}

/// [`relu6_train`]'s two constants, by the flex kernel where it applies.
fn relu6_parts<const D: usize>(v: Tensor<D>) -> (Tensor<D>, Tensor<D>) {
    #[cfg(feature = "flex")]
    let v = match kernels::relu6_parts(v) {
        Ok(parts) => return parts,
        Err(v) => v,
    };
    relu6_parts_burn(v)
}

fn relu6_parts_burn<const D: usize>(v: Tensor<D>) -> (Tensor<D>, Tensor<D>) {
    let inside = v
        .clone()
        .greater_elem(0.0)
        .bool_and(v.clone().lower_elem(6.0))
        .float();
    let six = v.greater_equal_elem(6.0).float().mul_scalar(6.0);
    (inside, six)
}

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

/// Python's `round` (half to even), which timm uses for squeeze-excite widths and
/// torchvision for crop offsets.
pub fn py_round(v: f64) -> i64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - v.signum()) as i64
    } else {
        r as i64
    }
}

/// [`py_round`] of a non-negative value.
pub fn round_half_even(v: f64) -> usize {
    py_round(v).max(0) as usize
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

/// A convolution without bias, as every conv followed by BatchNorm is.
pub fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    pad: PadMode,
    bias: bool,
    device: &Device,
) -> Conv2d {
    let padding = match pad {
        PadMode::Same if k > 1 || stride > 1 => PaddingConfig2d::Same,
        PadMode::Valid => PaddingConfig2d::Valid,
        _ => {
            let p = (k - 1) / 2;
            PaddingConfig2d::Explicit(p, p, p, p)
        }
    };
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(padding)
        .with_bias(bias)
        .init(device)
}

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

/// A convolution's forward through flex's kernels (depthwise, or dense as a matrix product)
/// where they apply, with `act` fused; `Err(x)` hands the input back for Burn's conv.
#[allow(clippy::result_large_err)] // Err hands the input back for Burn's conv
fn conv_forward(conv: &Conv2d, x: Tensor<4>, act: Option<Act>) -> Result<Tensor<4>, Tensor<4>> {
    #[cfg(feature = "flex")]
    {
        use kernels::Epilogue;
        let ep = match act {
            None => Some(Epilogue::None),
            Some(a) => a.epilogue(),
        };
        if let Some(ep) = ep {
            let x = match kernels::depthwise(conv, x, ep) {
                Ok(y) => return Ok(y),
                Err(x) => x,
            };
            return kernels::conv_gemm(conv, x, ep);
        }
    }
    let _ = act;
    Err(x)
}

/// Burn's convolution, except on GPU devices for the two shapes that are plain matrix
/// products: 1x1 stride-1 convolutions and non-overlapping patches (kernel = stride, ViT's
/// patch embedding). Both compute the same sums. Why: on an H100 through wgpu, Burn 0.22 ran
/// 1x1 convolutions at ~200 GMAC/s and the patch embedding at ~160, while its matmul ran ViT's
/// linear layers at 3,000-6,500 (docs/benchmarks.md, "GPU"). Inference only: in training the
/// broadcast weight's gradient is a per-image product summed over the batch, which made a
/// flex training step 2x slower (mobilenetv2_100, 28 px); CPU inference keeps its own paths
/// (flex has its kernels). `COMMITTEE_CONV_MATMUL=0` turns this off, to compare.
///
/// In training on flex, depthwise and dense layers without bias take `train_kernels` (their
/// own backward).
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let x = match conv_as_matmul(conv, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    #[cfg(feature = "flex")]
    let x = match crate::train_kernels::conv2d(conv, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    conv.forward(x)
}

fn conv_matmul_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    env_switch(&ON, "COMMITTEE_CONV_MATMUL", "0")
}

fn on_cpu(device: &Device) -> bool {
    let d = device.clone().without_autodiff();
    #[cfg(feature = "flex")]
    if d == Device::flex() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if d == Device::ndarray() {
        return true;
    }
    false
}

#[allow(clippy::result_large_err)] // Err hands the input back for Burn's conv
fn conv_as_matmul(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [o, c, kh, kw] = conv.weight.dims();
    let [b, ci, h, w] = x.dims();
    let unpadded = match conv.padding {
        PaddingConfig2d::Valid => true,
        // SAME adds nothing when the kernel equals the stride and divides the input.
        PaddingConfig2d::Same => h % kh == 0 && w % kw == 0,
        PaddingConfig2d::Explicit(t, l, bo, r) => t + l + bo + r == 0,
    };
    if !(unpadded
        && conv.stride == [kh, kw]
        && conv.groups == 1
        && conv.dilation == [1, 1]
        && ci == c
        && h >= kh
        && w >= kw
        && conv_matmul_enabled()
        && !x.device().is_autodiff()
        && !on_cpu(&x.device()))
    {
        return Err(x);
    }
    let (oh, ow) = (h / kh, w / kw);
    let weight = conv.weight.val();
    let y = if kh == 1 && kw == 1 {
        // [1, O, C] x [B, C, HW] -> [B, O, HW]: the output is already channels-first.
        weight.reshape([1, o, c]).matmul(x.reshape([b, c, h * w]))
    } else {
        // Patches as rows: [B, oh*ow, C*kh*kw] x [C*kh*kw, O], then back to channels-first.
        let x = if oh * kh != h || ow * kw != w {
            x.slice([0..b, 0..c, 0..oh * kh, 0..ow * kw])
        } else {
            x
        };
        let patches = x
            .reshape([b * c * oh, kh, ow, kw])
            .swap_dims(1, 2)
            .reshape([b, c, oh * ow, kh * kw])
            .swap_dims(1, 2)
            .reshape([b, oh * ow, c * kh * kw]);
        let wt = weight
            .reshape([o, c * kh * kw])
            .transpose()
            .unsqueeze::<3>();
        patches.matmul(wt).swap_dims(1, 2)
    };
    let y = match &conv.bias {
        Some(bias) => y + bias.val().reshape([1, o, 1]),
        None => y,
    };
    Ok(y.reshape([b, o, oh, ow]))
}

/// A linear layer then `act`, profiled as `kind`; on flex one gemm with bias and activation
/// fused ([`kernels::linear`]).
pub fn linear<const D: usize>(
    kind: &'static str,
    lin: &Linear,
    x: Tensor<D>,
    act: Option<Act>,
) -> Tensor<D> {
    profile::linear(kind, lin, x, |x| {
        #[cfg(feature = "flex")]
        let x = match act.map_or(Some(kernels::Epilogue::None), Act::epilogue) {
            Some(ep) => match kernels::linear(lin, x, ep) {
                Ok(y) => return y,
                Err(x) => x,
            },
            None => x,
        };
        let y = lin.forward(x);
        match act {
            Some(a) => a.apply(y),
            None => y,
        }
    })
}

/// A convolution followed by BatchNorm, unless the BN was folded into it.
pub fn conv_bn(conv: &Conv2d, bn: &BatchNorm, folded: bool, x: Tensor<4>) -> Tensor<4> {
    let y = profile::conv_with(conv, x, |x| {
        conv_forward(conv, x, None).unwrap_or_else(|x| conv2d(conv, x))
    });
    if folded {
        y
    } else {
        profile::layer("batchnorm", y, |y| batch_norm(bn, y))
    }
}

/// BatchNorm as PyTorch computes it. In training (an autodiff device, layer not frozen) it
/// normalises with the batch statistics like Burn, but updates `running_var` with the
/// *unbiased* batch variance (`n / (n - 1)` times the population one, `n` = values per
/// channel), as `torch.nn.BatchNorm2d` does; Burn's own update uses the population variance,
/// so its running statistics drift from what timm would learn (tested against PyTorch in
/// crates/train/tests/step_parity.rs). Otherwise Burn's inference forward.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    if !(device.is_autodiff() && bn.training.is_enabled()) {
        return bn.forward(x);
    }
    let [b, _, h, w] = x.dims();
    let n = (b * h * w) as f64;
    #[cfg(feature = "flex")]
    let x = match crate::train_kernels::batch_norm(bn, x) {
        Ok((y, mean, var)) => {
            update_running(bn, &device, n, mean, var);
            return y;
        }
        Err(x) => x,
    };
    let r = burn::tensor::module::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
    update_running(bn, &device, n, r.mean, r.variance);
    r.output
}

/// The running statistics' update from a batch's mean and population variance, PyTorch's way.
fn update_running(bn: &BatchNorm, device: &Device, n: f64, mean: Tensor<1>, var: Tensor<1>) {
    let m = bn.momentum;
    let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
    let rm = bn.running_mean.value_sync().to_device(device);
    let rv = bn.running_var.value_sync().to_device(device);
    bn.running_mean
        .update((rm * (1.0 - m) + mean.detach() * m).detach());
    bn.running_var
        .update((rv * (1.0 - m) + var.detach() * (m * unbiased)).detach());
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
        return profile::conv_with(conv, x, |x| {
            conv_forward(conv, x, Some(act)).unwrap_or_else(|x| act.apply(conv2d(conv, x)))
        });
    }
    act.apply(conv_bn(conv, bn, folded, x))
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
    pub fn new(prob: f64) -> Self {
        Self {
            prob,
            training: Param::from_bool(true),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.prob <= 0.0 || !self.training.is_enabled() || !x.device().is_autodiff() {
            return x;
        }
        let keep = 1.0 - self.prob;
        let mut shape = [1usize; D];
        shape[0] = x.dims()[0];
        let mask = Tensor::<D>::random(shape, Distribution::Bernoulli(keep), &x.device());
        x * mask.div_scalar(keep)
    }
}

/// Global average pooling of an NCHW map to `[N, C]`.
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, _, _] = x.dims();
    profile::layer("pool global avg", x, |x| {
        x.mean_dim(3).mean_dim(2).reshape([n, c])
    })
}

/// A residual sum, as its own profile span.
pub fn residual_add<const D: usize>(branch: Tensor<D>, shortcut: Tensor<D>) -> Tensor<D> {
    profile::layer("add residual", branch, |b| b + shortcut)
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
    fn python_round() {
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
        assert_eq!(round_half_even(4.4), 4);
        assert_eq!(round_half_even(4.6), 5);
        assert_eq!(py_round(-2.5), -2);
        assert_eq!(py_round(-3.5), -4);
    }

    #[test]
    fn same_padding_output() {
        assert_eq!(conv_out(233, 3, 2, PadMode::Same), 117);
        assert_eq!(conv_out(233, 3, 2, PadMode::Symmetric), 117);
        assert_eq!(conv_out(224, 7, 2, PadMode::Symmetric), 112);
        assert_eq!(conv_out(10, 5, 2, PadMode::Symmetric), 5);
    }

    /// The GPU matmul form of 1x1 and patch convolutions equals Burn's convolution (run on
    /// wgpu; lavapipe in CI), including SAME padding, a cropped remainder, bias or none; in
    /// training (autodiff) Burn's convolution is kept.
    #[test]
    #[cfg(feature = "wgpu")]
    fn conv_as_matmul_equals_burns_conv_on_gpu() {
        use crate::backend::{BackendKind, select};
        let gpu = select(BackendKind::Wgpu)
            .expect("wgpu (lavapipe in CI)")
            .device;
        // (cin, cout, k, pad, bias, input h, w)
        let cases = [
            (24, 40, 1, PadMode::Symmetric, false, 9, 7),
            (24, 40, 1, PadMode::Same, true, 5, 5),
            (3, 16, 4, PadMode::Valid, true, 16, 12),
            (3, 16, 4, PadMode::Valid, false, 18, 13), // 2 rows and 1 column left over
            (5, 8, 2, PadMode::Same, true, 8, 6),
        ];
        for (i, &(cin, cout, k, pad, bias, h, w)) in cases.iter().enumerate() {
            let c = conv(cin, cout, k, k, 1, pad, bias, &gpu);
            let x = Tensor::<4>::random([2, cin, h, w], Distribution::Normal(0.0, 1.0), &gpu);
            let Ok(ours) = conv_as_matmul(&c, x.clone()) else {
                panic!("case {i}: the matmul form was not taken");
            };
            let burn = c.forward(x);
            assert_eq!(ours.dims(), burn.dims(), "case {i}");
            let (a, b) = (ours.into_data().to_vec::<f32>().unwrap(), burn.into_data());
            let b = b.to_vec::<f32>().unwrap();
            let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let e = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
                / scale;
            assert!(e < 1e-5, "case {i}: rel err {e:.2e}");

            let ad = gpu.clone().autodiff();
            let c = conv(cin, cout, k, k, 1, pad, bias, &ad);
            let x = Tensor::<4>::random([2, cin, h, w], Distribution::Normal(0.0, 1.0), &ad);
            assert!(
                conv_as_matmul(&c, x).is_err(),
                "case {i}: taken in training"
            );
        }
    }

    /// ReLU6 in training: clamp's values, PyTorch's gradient (hand-computed: 1 strictly
    /// inside (0, 6), 0 elsewhere, including at 0 and 6, as `torch.nn.ReLU6`).
    #[test]
    #[cfg(feature = "flex")]
    fn relu6_in_training_has_pytorchs_gradient() {
        use burn::tensor::TensorData;
        let dev = Device::flex().autodiff();
        let xs = [-1.0f32, 0.0, 3.0, 6.0, 7.5, 5.999, 1e8];
        let x =
            Tensor::<1>::from_data(TensorData::new(xs.to_vec(), [xs.len()]), &dev).require_grad();
        let y = Act::Relu6.forward(x.clone());
        let y_vals = y.clone().into_data().to_vec::<f32>().unwrap();
        assert_eq!(y_vals, vec![0.0, 0.0, 3.0, 6.0, 6.0, 5.999, 6.0]);
        let g = y.sum().backward();
        let gx = x.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
        assert_eq!(gx, vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    }

    /// SiLU in training: values and gradient as Burn's `x * sigmoid(x)` differentiated.
    #[test]
    fn silu_in_training_matches_burn() {
        use burn::tensor::Distribution;
        let dev = Device::flex().autodiff();
        let x = Tensor::<2>::random([37, 555], Distribution::Normal(0.0, 4.0), &dev).require_grad();
        let ours = Act::Silu.forward(x.clone());
        let burn = activation::silu(x.clone());
        let d = (ours.clone() - burn.clone())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(d < 1e-5, "values: {d}");
        let wts = Tensor::<2>::random([37, 555], Distribution::Normal(0.0, 1.0), &dev);
        let g_ours = x
            .grad(&(ours * wts.clone()).sum().backward())
            .expect("grad");
        let g_burn = x.grad(&(burn * wts).sum().backward()).expect("grad");
        let d = (g_ours - g_burn).abs().max().into_scalar::<f32>();
        assert!(d < 1e-5, "gradient: {d}");
    }

    /// The flex kernel's ReLU6 parts equal Burn's comparisons on a tensor of several chunks,
    /// with exact 0s and 6s among the values.
    #[test]
    fn relu6_parts_kernel_matches_burn() {
        use burn::tensor::{Distribution, TensorData};
        let dev = Device::flex();
        let x = Tensor::<4>::random([3, 40, 25, 23], Distribution::Uniform(-2.0, 8.0), &dev);
        let n = 3 * 40 * 25 * 23;
        let mut v = x.into_data().try_to_vec::<f32>().unwrap();
        for i in (0..n).step_by(97) {
            v[i] = if i % 2 == 0 { 0.0 } else { 6.0 };
        }
        let x = Tensor::<4>::from_data(TensorData::new(v, [3, 40, 25, 23]), &dev);
        let (mk, sk) = relu6_parts(x.clone());
        let (mb, sb) = relu6_parts_burn(x.clone());
        assert_eq!(
            mk.into_data().try_to_vec::<f32>().unwrap(),
            mb.into_data().try_to_vec::<f32>().unwrap()
        );
        assert_eq!(
            sk.into_data().try_to_vec::<f32>().unwrap(),
            sb.into_data().try_to_vec::<f32>().unwrap()
        );
        // And `x * inside + six` is Burn's clamp, bit for bit.
        let (m, s6) = relu6_parts(x.clone());
        let y = (x.clone() * m + s6)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let c = activation::relu6(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(y, c);
    }
}
