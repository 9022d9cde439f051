//! `conv2d_add_act` (a residual block's last convolution with its shortcut and ReLU fused)
//! against the same convolution, addition and ReLU done one after another: Burn's own
//! convolution in f32, and committee's unfused bf16 convolution on each bf16 kernel this CPU
//! has (AMX, AVX512-BF16, emulated). Covers 1x1 products, stride-1 3x3 convolutions (read at
//! tap offsets on AMX, and in f32 on AVX-512 from 14x14 up), unfolded stride-2 ones, and
//! batches whose images start at offsets.
//!
//! Its own test binary: the precision is process-wide.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};
use committee_ops::cpu::bf16::Bf16Kernel;
use committee_ops::{Act, conv2d_act, conv2d_add_act, precision};

fn max_rel_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

#[test]
fn fused_residual_matches_convolution_then_addition_then_relu() {
    let device = Device::flex();
    let kernels = Bf16Kernel::ALL.into_iter().filter(|k| k.available());
    for kernel in std::iter::once(None).chain(kernels.map(Some)) {
        precision::use_kernel(kernel).expect("available");
        // (c_in, c_out, k, stride, padding, batch, h, w)
        for (cin, cout, k, s, p, n, h, w) in [
            (16, 24, 1, 1, 0, 1, 9, 11),
            (16, 24, 1, 1, 0, 3, 9, 11),
            (40, 33, 3, 1, 1, 1, 10, 7),
            (40, 33, 3, 1, 1, 2, 14, 14),
            (8, 12, 3, 2, 1, 3, 9, 10),
            // 14x14 and up: f32 read at tap offsets on AVX-512.
            (9, 13, 3, 1, 1, 2, 28, 29),
        ] {
            for bias in [true, false] {
                let conv = Conv2dConfig::new([cin, cout], [k, k])
                    .with_stride([s, s])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .with_bias(bias)
                    .init(&device);
                let x =
                    Tensor::<4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
                let [oh, ow] = [(h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1];
                let r =
                    Tensor::<4>::random([n, cout, oh, ow], Distribution::Normal(0.0, 1.0), &device);
                let unfused = match kernel {
                    None => conv.forward(x.clone()),
                    Some(_) => conv2d_act(&conv, x.clone(), None),
                };
                let want = relu(unfused + r.clone());
                let got = conv2d_add_act(&conv, x, r, Some(Act::Relu));
                assert_eq!(got.dims(), want.dims());
                let off = max_rel_diff(got, want);
                let case = format!("{kernel:?} {cin}->{cout} k{k} s{s} n{n} {h}x{w} bias {bias}");
                assert!(off < 1e-5, "{case}: off by {off}");
            }
        }
    }
    precision::use_kernel(None).expect("f32");
}
