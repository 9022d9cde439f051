//! Activations kept in bf16 between layers (`committee_ops::bf16_activations`, a ResNet under
//! `--dtype bf16`): each kernel that takes a bf16 input gives a bf16 output equal to the same
//! kernel's f32 result on the same (exactly widened) values, rounded once to bf16. On every
//! bf16 kernel this CPU has (AMX, AVX512-BF16, emulated), over the convolution paths a ResNet
//! uses: 1x1 products (the image read in place on AVX512-BF16, an odd channel count among
//! them), stride-1 3x3 (tap offsets on AMX), stride-2 3x3 (unfolded), the 7x7
//! stem over 3 channels (its phases on AMX), each with and without a fused residual, and the
//! stem's max pooling (exact: the maximum is one of the inputs).
//!
//! Its own test binary: the precision is process-wide.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use committee_ops::cpu::bf16::Bf16Kernel;
use committee_ops::{Act, bf16_activations, conv2d_act, conv2d_add_act, max_pool, precision};

/// The largest difference between `got` (bf16) and `want` (f32), in units of bf16's rounding
/// step at `want`'s magnitude (2^-8 of it, at least 2^-8 of `want`'s largest value / 64).
fn bf16_steps(got: Tensor<4>, want: Tensor<4>) -> f32 {
    assert_eq!(got.dtype(), DType::BF16, "a bf16 input gives a bf16 output");
    let got: Vec<f32> = got
        .cast(FloatDType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let want: Vec<f32> = want.into_data().try_to_vec::<f32>().unwrap();
    let floor = want.iter().fold(0f32, |m, v| m.max(v.abs())) / 64.0;
    got.iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() / (w.abs().max(floor) / 256.0))
        .fold(0f32, f32::max)
}

#[test]
fn bf16_inputs_give_the_f32_result_rounded_once() {
    let device = Device::flex();
    let kernels: Vec<_> = Bf16Kernel::ALL
        .into_iter()
        .filter(|k| k.available())
        .collect();
    // The f32 reference on the bf16 path too, where `--dtype bf16` would keep a small layer
    // in f32 (a bf16 input always takes the bf16 products).
    committee_ops::cpu::conv::set_bf16_everywhere(true);
    for kernel in kernels {
        precision::use_kernel(Some(kernel)).expect("available");
        // (c_in, c_out, k, stride, padding, batch, h, w)
        for (cin, cout, k, s, p, n, h, w) in [
            (16, 24, 1, 1, 0, 2, 9, 11),
            (64, 40, 1, 1, 0, 1, 7, 7),
            (33, 70, 1, 1, 0, 2, 5, 13),
            (40, 33, 3, 1, 1, 2, 10, 7),
            (8, 12, 3, 2, 1, 3, 9, 10),
            (3, 16, 7, 2, 3, 2, 20, 18),
        ] {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .init(&device);
            let x = Tensor::<4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
            let xb = bf16_activations(x);
            assert_eq!(xb.dtype(), DType::BF16, "{kernel:?}: not cast");
            let [oh, ow] = [(h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1];
            let r = Tensor::<4>::random([n, cout, oh, ow], Distribution::Normal(0.0, 1.0), &device)
                .cast(FloatDType::BF16);
            let case = format!("{kernel:?} {cin}->{cout} k{k} s{s} n{n} {h}x{w}");
            // The same products on the f32 copy of the same values, then one rounding.
            let x32 = xb.clone().cast(FloatDType::F32);
            let r32 = r.clone().cast(FloatDType::F32);
            let want = conv2d_act(&conv, x32.clone(), Some(Act::Relu));
            let got = conv2d_act(&conv, xb.clone(), Some(Act::Relu));
            let off = bf16_steps(got, want);
            assert!(off <= 1.01, "{case}: {off} rounding steps off");
            let want = conv2d_add_act(&conv, x32, r32, Some(Act::Relu));
            let got = conv2d_add_act(&conv, xb, r, Some(Act::Relu));
            let off = bf16_steps(got, want);
            assert!(off <= 1.01, "{case} + residual: {off} rounding steps off");
        }
        let pool = MaxPool2dConfig::new([3, 3])
            .with_strides([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init();
        let x = bf16_activations(Tensor::<4>::random(
            [2, 5, 13, 12],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        let want = max_pool(&pool, x.clone().cast(FloatDType::F32));
        let got = max_pool(&pool, x);
        assert_eq!(bf16_steps(got, want), 0.0, "{kernel:?}: max pooling");
    }
    committee_ops::cpu::conv::set_bf16_everywhere(false);
    precision::use_kernel(None).expect("f32");
    let x = Tensor::<4>::zeros([1, 3, 4, 4], &device);
    assert_eq!(bf16_activations(x).dtype(), DType::F32, "cast under f32");
}
