//! The attention kernel with bf16 products (`--dtype bf16`) against Burn's f32 attention, at
//! the distance bf16 operands allow, and each hardware bf16 kernel (AMX, AVX512-BF16) against
//! the emulated one (the same bf16 rounding in plain f32 arithmetic), which it must match up
//! to accumulation order (and the bf16 rounding of probabilities that order can flip).
//!
//! Its own test binary: the precision is process-wide.

use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Distribution, Tensor};
use committee_ops::cpu::attention;
use committee_ops::cpu::bf16::Bf16Kernel;
use committee_ops::precision;

fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn bf16_attention_matches_f32_within_bf16_rounding() {
    let device = Device::flex();
    for (b, n, heads, dh) in [
        (2, 197, 3, 64),
        (1, 5, 2, 8),
        (3, 50, 4, 16),
        (1, 33, 1, 40),
    ] {
        let d = heads * dh;
        let qkv = Tensor::<3>::random([b, n, 3 * d], Distribution::Normal(0.0, 1.0), &device);
        let parts = qkv
            .clone()
            .reshape([b, n, 3, heads, dh])
            .permute([2, 0, 3, 1, 4]);
        let part = |i| parts.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
        let opts = AttentionModuleOptions::default();
        let want = burn_attention(part(0), part(1), part(2), None, None, opts)
            .swap_dims(1, 2)
            .reshape([b, n, d]);
        let run = |kernel| {
            precision::use_kernel(Some(kernel)).expect("available");
            let out = attention(qkv.clone(), heads).unwrap_or_else(|_| panic!("fallback"));
            precision::use_kernel(None).expect("f32");
            out
        };
        let emulated = run(Bf16Kernel::Emulated);
        assert_eq!(emulated.dims(), [b, n, d]);
        // bf16 keeps 8 bits of mantissa: scores of 64 products of unit values are off by
        // ~0.03, outputs (averages of unit values) by about as much.
        let off = max_diff(emulated.clone(), want);
        assert!(
            off < 0.05,
            "b {b} n {n} heads {heads} dh {dh}: emulated off f32 by {off}"
        );
        assert!(off > 0.0, "bf16 products should round");
        // Scores summed in another order can round a probability to the neighbouring bf16
        // value before `P V`: each output moves by at most 2^-8 of the largest |v|.
        let vmax: f32 = part(2).abs().max().into_scalar();
        let tol = vmax / 256.0;
        for kernel in [Bf16Kernel::Amx, Bf16Kernel::Avx512] {
            if kernel.available() {
                let off = max_diff(run(kernel), emulated.clone());
                assert!(
                    off < tol,
                    "{kernel:?} n {n} dh {dh}: off the emulated kernel by {off}"
                );
            }
        }
    }
}
