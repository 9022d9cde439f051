//! Dense convolutions on each hardware bf16 kernel against the emulated one (the same bf16
//! rounding of inputs and weights in plain f32 arithmetic, over the unfolded image): on AMX,
//! stride-1 convolutions read at tap offsets and stems (stride 2 over at most 8 channels) as
//! stride-1 convolutions over the image's four phases; on AVX512-BF16, unfolded. Odd and even
//! sizes, explicit and TensorFlow-SAME padding, kernels of odd and even size.
//!
//! Its own test binary: the precision is process-wide.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Distribution, Tensor};
use committee_ops::cpu::bf16::Bf16Kernel;
use committee_ops::{Act, conv2d_act, precision};

#[test]
fn every_bf16_convolution_path_matches_the_emulated_kernel() {
    let device = Device::flex();
    let hardware: Vec<_> = [Bf16Kernel::Amx, Bf16Kernel::Avx512]
        .into_iter()
        .filter(|k| k.available())
        .collect();
    if hardware.is_empty() {
        eprintln!("no bf16 hardware on this CPU: nothing to compare");
        return;
    }
    // Every shape on the bf16 path, also those `--dtype bf16` runs in f32 (small stems).
    committee_ops::cpu::conv::set_bf16_everywhere(true);
    let pad = |p| PaddingConfig2d::Explicit(p, p, p, p);
    // (c_in, c_out, k, stride, padding, h, w)
    for (cin, cout, k, s, padding, h, w) in [
        (3, 16, 7, 2, pad(3), 17, 15),
        (3, 16, 7, 2, pad(3), 32, 32),
        (3, 8, 3, 2, pad(1), 9, 10),
        (3, 8, 3, 2, PaddingConfig2d::Same, 11, 8),
        (8, 12, 5, 2, pad(2), 13, 14),
        (2, 5, 4, 2, pad(0), 12, 9),
        (40, 33, 3, 1, pad(1), 10, 7),
        (12, 16, 3, 2, pad(1), 9, 9),
    ] {
        for bias in [true, false] {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([s, s])
                .with_padding(padding.clone())
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<4>::random([2, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
            let run = |kernel| {
                precision::use_kernel(Some(kernel)).expect("available");
                let y = conv2d_act(&conv, x.clone(), Some(Act::Relu));
                precision::use_kernel(None).expect("f32");
                y
            };
            let want = run(Bf16Kernel::Emulated);
            let f32_ref = burn::tensor::activation::relu(conv.forward(x.clone()));
            assert_eq!(want.dims(), f32_ref.dims());
            for &kernel in &hardware {
                let got = run(kernel);
                assert_eq!(got.dims(), want.dims());
                let off: f32 = (got - want.clone()).abs().max().into_scalar();
                let case = format!("{kernel:?} {cin}->{cout} k{k} s{s} {padding:?} {h}x{w}");
                assert!(
                    off < 1e-4,
                    "{case} bias {bias}: off the emulated kernel by {off}"
                );
            }
            // And the emulated kernel itself near f32 (bf16 operands: ~1 % of a unit value).
            let off: f32 = (want - f32_ref).abs().max().into_scalar();
            assert!(off < 0.1, "emulated {cin}->{cout} k{k}: off f32 by {off}");
        }
    }
}
