//! The MLP with bf16 products (`--dtype bf16`), whose hidden activation goes from one product
//! to the next packed (`bf16::gemm_packed`), against the two linear layers run apart: equal
//! bit for bit on every bf16 kernel the CPU has (the same rounding of the same floats), and
//! within bf16's distance of Burn's f32 layers.
//!
//! Its own test binary: the precision is process-wide.

use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Distribution, Tensor};
use committee_ops::cpu::bf16::Bf16Kernel;
use committee_ops::{Act, linear, mlp, precision};

fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn the_packed_hidden_layer_changes_no_bit() {
    let device = Device::flex();
    // (batch, tokens, d_in, hidden, d_out): a ViT block's shape scaled down, and odd sizes
    // that leave partial 32-row and 32-column blocks and padding in the packed hidden layer.
    for (b, n, d, hid, out) in [(2, 197, 64, 256, 64), (1, 5, 40, 33, 17), (3, 1, 32, 96, 8)] {
        let fc1: Linear = LinearConfig::new(d, hid).init(&device);
        let fc2: Linear = LinearConfig::new(hid, out).init(&device);
        let x = Tensor::<3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &device);
        let want = fc2.forward(gelu(fc1.forward(x.clone())));
        for kernel in Bf16Kernel::ALL {
            if !kernel.available() {
                continue;
            }
            precision::use_kernel(Some(kernel)).expect("available");
            let fused = mlp("mlp", &fc1, &fc2, x.clone(), Some(Act::Gelu));
            let apart = linear(
                "fc2",
                &fc2,
                linear("fc1", &fc1, x.clone(), Some(Act::Gelu)),
                None,
            );
            precision::use_kernel(None).expect("f32");
            assert_eq!(fused.dims(), [b, n, out]);
            let same = fused.clone().equal(apart).all().into_scalar::<bool>();
            assert!(same, "{kernel:?} {b}x{n}x{d}->{hid}->{out}: fused differs");
            // bf16 operands: ~2^-8 relative per product, summed over `hid` terms of unit size.
            let off = max_diff(fused, want.clone());
            assert!(
                off < 0.05 && off > 0.0,
                "{kernel:?} {b}x{n}x{d}->{hid}->{out}: {off} off f32"
            );
        }
        // Without bf16 products it is the two f32 layers.
        let f32_mlp = mlp("mlp", &fc1, &fc2, x.clone(), Some(Act::Gelu));
        assert!(max_diff(f32_mlp, want) < 1e-5);
    }
}
