//! GPU paths composed of Burn's ops where Burn's own kernel for the op is slow: 1x1 and patch
//! convolutions as plain matrix products (here), other dense convolutions as products over the
//! unfolded image ([`im2col`]), training-mode BatchNorm with GPU-shaped reductions ([`norm`]).

pub mod im2col;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod norm;

pub use im2col::{Im2col, conv_im2col};

#[cfg(test)]
mod paths_tests;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use norm::batch_norm;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use crate::backend::is_cpu;

/// Whether the GPU matmul form of convolutions is on: `COMMITTEE_CONV_MATMUL=0` turns it off,
/// to compare.
fn conv_matmul_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::act::env_switch(&ON, "COMMITTEE_CONV_MATMUL", "0")
}

/// Burn's convolution, except on GPU devices for the two shapes that are plain matrix
/// products: 1x1 stride-1 convolutions and non-overlapping patches (kernel = stride, ViT's
/// patch embedding). Both compute the same sums. Why: on an H100 through wgpu, Burn 0.22 ran
/// 1x1 convolutions at ~200 GMAC/s and the patch embedding at ~160, while its matmul ran ViT's
/// linear layers at 3,000-6,500 (docs/benchmarks.md, "GPU"). Inference only: in training the
/// broadcast weight's gradient is a per-image product summed over the batch, which made a
/// flex training step 2x slower (mobilenetv2_100, 28 px); CPU inference keeps its own paths.
/// `Err(x)` when it does not apply.
pub fn conv_as_matmul(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
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
        && !is_cpu(&x.device()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[derive(Clone, Copy)]
    enum Pad {
        Zero,
        Same,
        Valid,
    }

    /// The GPU matmul form of 1x1 and patch convolutions equals Burn's convolution (run on
    /// wgpu; lavapipe in CI), including SAME padding, a cropped remainder, bias or none; in
    /// training (autodiff) Burn's convolution is kept.
    #[test]
    #[cfg(feature = "wgpu")]
    fn conv_as_matmul_equals_burns_conv_on_gpu() {
        use crate::backend::{BackendKind, select};
        use burn::nn::PaddingConfig2d;
        use burn::nn::conv::Conv2dConfig;
        use burn::tensor::Distribution;
        let conv = |cin, cout, k: usize, pad: Pad, bias, device: &Device| {
            let padding = match pad {
                Pad::Same => PaddingConfig2d::Same,
                Pad::Valid => PaddingConfig2d::Valid,
                Pad::Zero => PaddingConfig2d::Explicit(0, 0, 0, 0),
            };
            Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([k, k])
                .with_padding(padding)
                .with_bias(bias)
                .init(device)
        };
        let gpu = select(BackendKind::Wgpu)
            .expect("wgpu (lavapipe in CI)")
            .device;
        // (cin, cout, k, pad, bias, input h, w)
        let cases = [
            (24, 40, 1, Pad::Zero, false, 9, 7),
            (24, 40, 1, Pad::Same, true, 5, 5),
            (3, 16, 4, Pad::Valid, true, 16, 12),
            (3, 16, 4, Pad::Valid, false, 18, 13), // 2 rows and 1 column left over
            (5, 8, 2, Pad::Same, true, 8, 6),
        ];
        for (i, &(cin, cout, k, pad, bias, h, w)) in cases.iter().enumerate() {
            let c = conv(cin, cout, k, pad, bias, &gpu);
            let x = Tensor::<4>::random([2, cin, h, w], Distribution::Normal(0.0, 1.0), &gpu);
            let Ok(ours) = conv_as_matmul(&c, x.clone()) else {
                panic!("case {i}: the matmul form was not taken");
            };
            let burn = c.forward(x);
            assert_eq!(ours.dims(), burn.dims(), "case {i}");
            let (a, b) = (
                ours.into_data().try_to_vec::<f32>().unwrap(),
                burn.into_data(),
            );
            let b = b.try_to_vec::<f32>().unwrap();
            let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let e = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
                / scale;
            assert!(e < 1e-5, "case {i}: rel err {e:.2e}");

            let ad = gpu.clone().autodiff();
            let c = conv(cin, cout, k, pad, bias, &ad);
            let x = Tensor::<4>::random([2, cin, h, w], Distribution::Normal(0.0, 1.0), &ad);
            assert!(
                conv_as_matmul(&c, x).is_err(),
                "case {i}: taken in training"
            );
        }
    }
}
