//! The GPU paths against Burn's ops: forward values and every gradient. The im2col forms run
//! on flex too (they are plain tensor ops), where Burn's convolution is an exact reference; on
//! wgpu (lavapipe in CI) they and the BatchNorm node are compared with Burn's ops on the same
//! device.

use super::im2col::{Im2col, conv_im2col_with};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Distribution, Tensor};

use crate::testing::{
    assert_batch_norm_matches_burn, assert_conv_matches_burn, batch_norm_case, max_rel_diff,
};

/// One case: (c_in, c_out, k, stride, padding, h, w, bias).
type Case = (
    usize,
    usize,
    usize,
    usize,
    PaddingConfig2d,
    usize,
    usize,
    bool,
);

/// ResNet's 3x3 and 7x7 stem, strided 3x3 and 1x1 (shortcuts), 1x1 stride 1 (no unfolding),
/// TF's asymmetric SAME, maps as small as the kernel's reach, a single input channel.
fn cases() -> Vec<Case> {
    vec![
        (
            4,
            6,
            3,
            1,
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            7,
            6,
            false,
        ),
        (
            5,
            8,
            3,
            2,
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            9,
            8,
            true,
        ),
        (
            3,
            4,
            7,
            2,
            PaddingConfig2d::Explicit(3, 3, 3, 3),
            12,
            11,
            false,
        ),
        (6, 10, 1, 2, PaddingConfig2d::Valid, 7, 8, false),
        (6, 10, 1, 1, PaddingConfig2d::Valid, 5, 3, true),
        (3, 5, 3, 2, PaddingConfig2d::Same, 10, 9, false),
        (
            1,
            8,
            3,
            1,
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            2,
            2,
            true,
        ),
        (
            4,
            4,
            3,
            2,
            PaddingConfig2d::Explicit(1, 1, 1, 1),
            1,
            1,
            false,
        ),
    ]
}

fn conv(
    (c_in, c_out, k, s, pad, bias): (usize, usize, usize, usize, PaddingConfig2d, bool),
    dev: &Device,
) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([s, s])
        .with_padding(pad)
        .with_bias(bias)
        .init(dev)
}

/// `op` against Burn's convolution on `dev` (an autodiff device) within `tol`, for every case,
/// batch 1 and 2.
fn assert_conv_matches_burn_all(
    dev: &Device,
    tol: f32,
    op: &dyn Fn(&Conv2d, Tensor<4>) -> Result<Tensor<4>, Tensor<4>>,
) {
    for (c_in, c_out, k, s, pad, h, w, bias) in cases() {
        for b in [1, 2] {
            let what = format!("{c_in}->{c_out} k{k} s{s} {pad:?} {h}x{w} bias {bias} batch {b}");
            let conv = conv((c_in, c_out, k, s, pad.clone(), bias), dev);
            assert_conv_matches_burn(op, &conv, [b, c_in, h, w], tol, &what);
        }
    }
}

/// Both layouts of the unfolded product equal Burn's convolution on flex: same sums, so within
/// f32 rounding; `Off` hands the input back.
#[test]
fn im2col_matches_burns_conv_on_flex() {
    let dev = Device::flex().autodiff();
    for mode in [Im2col::Batched, Im2col::Channel] {
        assert_conv_matches_burn_all(&dev, 1e-5, &|c, x| conv_im2col_with(c, x, mode));
    }
    let c = conv((3, 4, 3, 1, PaddingConfig2d::Valid, false), &dev);
    let x = Tensor::<4>::zeros([1, 3, 5, 5], &dev);
    assert!(conv_im2col_with(&c, x, Im2col::Off).is_err());
}

/// Grouped convolutions keep Burn's path; so do CPU devices through the dispatching entry.
#[test]
fn im2col_declines_grouped_and_cpu() {
    let dev = Device::flex();
    let grouped = Conv2dConfig::new([4, 4], [3, 3]).with_groups(4).init(&dev);
    let x = Tensor::<4>::zeros([1, 4, 5, 5], &dev);
    assert!(conv_im2col_with(&grouped, x.clone(), Im2col::Batched).is_err());
    let dense = Conv2dConfig::new([4, 4], [3, 3]).init(&dev);
    assert!(super::conv_im2col(&dense, x).is_err());
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Device {
    crate::backend::select(crate::backend::BackendKind::Wgpu)
        .expect("wgpu (lavapipe in CI)")
        .device
}

/// On wgpu, the dispatching entry (the default layout) and the channel layout equal Burn's
/// convolution on the same device, forward and every gradient.
#[test]
#[cfg(feature = "wgpu")]
fn im2col_matches_burns_conv_on_wgpu() {
    let dev = wgpu().autodiff();
    assert_conv_matches_burn_all(&dev, 1e-4, &super::conv_im2col);
    assert_conv_matches_burn_all(&dev, 1e-4, &|c, x| conv_im2col_with(c, x, Im2col::Channel));
}

/// The measured inference rule on wgpu: batches under 8 and stems (at most 4 input channels)
/// keep Burn's convolution, batch 8 of a wider layer is unfolded (and equals Burn's); in
/// training everything dense is unfolded (tested above with batch 1 and 2).
#[test]
#[cfg(feature = "wgpu")]
fn im2col_inference_rule_on_wgpu() {
    let dev = wgpu();
    let wide = conv(
        (8, 6, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), false),
        &dev,
    );
    let stem = conv(
        (3, 6, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), false),
        &dev,
    );
    let x = |b, c| Tensor::<4>::random([b, c, 6, 5], Distribution::Normal(0.0, 1.0), &dev);
    assert!(super::conv_im2col(&wide, x(1, 8)).is_err(), "batch 1");
    assert!(super::conv_im2col(&wide, x(7, 8)).is_err(), "batch 7");
    assert!(super::conv_im2col(&stem, x(8, 3)).is_err(), "stem");
    let input = x(8, 8);
    let ours = super::conv_im2col(&wide, input.clone()).expect("batch 8 is unfolded");
    let d = max_rel_diff(ours, wide.forward(input));
    assert!(d < 1e-4, "{d}");
}

/// Training BatchNorm on wgpu: output, batch statistics and the gradients of x, gamma and beta
/// equal Burn's `batch_norm_train` on the same device, down to 1x1 maps and batch 1.
#[test]
#[cfg(feature = "wgpu")]
fn gpu_batch_norm_matches_burn_on_wgpu() {
    use burn::nn::BatchNormConfig;
    let dev = wgpu().autodiff();
    for shape in [[4, 6, 5, 3], [8, 5, 1, 1], [1, 3, 7, 7], [2, 16, 9, 11]] {
        let (bn, x) = batch_norm_case(shape, &dev);
        let ours = super::batch_norm(&bn, x.clone()).expect("applies");
        assert_batch_norm_matches_burn(&bn, x, ours, |y| y, 1e-4, &format!("{shape:?}"));
    }
    // Not on CPU devices, nor outside training.
    let cpu = Device::flex().autodiff();
    let bn = BatchNormConfig::new(2).init(&cpu);
    assert!(super::batch_norm(&bn, Tensor::<4>::zeros([2, 2, 3, 3], &cpu)).is_err());
    let bn = BatchNormConfig::new(2).init(&wgpu());
    assert!(super::batch_norm(&bn, Tensor::<4>::zeros([2, 2, 3, 3], &wgpu())).is_err());
}
