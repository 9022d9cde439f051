//! One training step's convolutions of ResNet-50 (forward and both gradients) at batch 8 with
//! bf16 products (`--dtype bf16` training), several images per weight-gradient product
//! against one, alternated call by call, fastest of `REPS` (default 7) each:
//! `RAYON_NUM_THREADS=2 cargo run --release -p committee-ops --example train_conv_rate`.
//! `DTYPE=1`: MobileNetV2's stem and 1x1 layers (and ResNet-50's stem) instead, f32 products
//! against bf16; `DW=1`: stride-1
//! and stride-2 depthwise layers of MobileNetV2 and EfficientNet-B0, channels-last against plane
//! by plane; `TAPS=1`: ResNet-50's layers with the input gradient too, stride-1 dense layers
//! unfolded against read at tap offsets (`train::set_train_taps`). `F32=1` (but for `DTYPE`):
//! f32 products. `WGRAD=1`: ResNet-50's layers, weight gradients as matrix products against
//! dot products (`train::set_weight_grad_dots`; bf16, or f32 with `F32=1`); `FWD=1`: the
//! forward alone.
//! `DIRECT=1` (with `TAPS=1` or `FWD=1`, and `F32=1`): f32 stride-1 layers under 56x56 as
//! direct convolutions against what ran before (`train::set_direct`).
//! `DWGRAD=1` (`F32=1`; `DTYPE=1` for MobileNetV2's layers, in bf16 unless `F32=1`): weight
//! gradients as direct outer products against matrix or dot products
//! (`train::set_direct_weight_grad`; maps under 56x56, outputs in blocks of 64).
//! `PHASES=1` (with `DW=1`): the stride-2 layers' gradients by phases against stride-1 passes
//! over the spread output gradient (`train::set_depthwise_phases`).
//! `BNRES=1`: ResNet-50's residual ends (last BatchNorm, shortcut sum, ReLU), forward and
//! gradients, as one op against apart (`train::set_batch_norm_residual`).
//! `POOL=1`: ResNet's 3x3 stride-2 stem pool (64 channels at 112x112), forward
//! and input gradient, committee's against Burn's (`train::set_max_pool`).

use std::time::Instant;

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Distribution, Tensor};
use committee_ops::cpu::bf16::Bf16Kernel;
use committee_ops::cpu::train;
use committee_ops::precision;

fn main() {
    let Some(kernel) = Bf16Kernel::detect() else {
        eprintln!("no bf16 kernel on this CPU");
        return;
    };
    committee_ops::heap::keep_freed_memory();
    if let Err(e) = precision::use_kernel(Some(kernel)) {
        eprintln!("{e}");
        return;
    }
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (n, reps) = (env("N", 8), env("REPS", 7));
    let dev = Device::flex().autodiff();
    if std::env::var("POOL").is_ok_and(|v| v == "1") {
        return stem_pool(&dev, n, reps);
    }
    if std::env::var("BNRES").is_ok_and(|v| v == "1") {
        return bn_residual(&dev, n, reps);
    }
    let dtype = std::env::var("DTYPE").is_ok_and(|v| v == "1");
    let dw = std::env::var("DW").is_ok_and(|v| v == "1");
    // `PHASES=1` (with `DW=1`): stride-2 gradients by phases against over the spread gradient.
    let phases = std::env::var("PHASES").is_ok_and(|v| v == "1");
    let taps = std::env::var("TAPS").is_ok_and(|v| v == "1");
    let wgrad = std::env::var("WGRAD").is_ok_and(|v| v == "1");
    // `FWD=1`: the forward alone (no backward), to tell its share from the gradients'.
    let fwd_only = std::env::var("FWD").is_ok_and(|v| v == "1");
    if std::env::var("F32").is_ok_and(|v| v == "1") {
        precision::use_kernel(None).expect("f32");
    }
    // (name, c, c, kernel, map): stride-1 depthwise layers at 224 px.
    let depthwise = [
        ("mnv2 dw", 32, 32, 3, 112),
        ("mnv2 dw", 144, 144, 3, 56),
        ("mnv2 dw", 192, 192, 3, 28),
        ("effb0 dw", 240, 240, 5, 28),
        ("mnv2 dw", 384, 384, 3, 14),
        ("mnv2 dw s2", 96, 96, 3, 112),
        ("mnv2 dw s2", 144, 144, 3, 56),
        ("effb0 dw s2", 144, 144, 5, 56),
        ("mnv2 dw s2", 192, 192, 3, 28),
    ];
    // (name, c_in, c_out, kernel, map): MobileNetV2's 1x1 layers at 224 px.
    let mobile = [
        ("stem s2", 3, 32, 3, 224),
        ("r50 stem s2", 3, 64, 7, 224),
        ("pw", 32, 16, 1, 112),
        ("exp", 16, 96, 1, 112),
        ("proj", 96, 24, 1, 56),
        ("exp", 24, 144, 1, 56),
        ("proj", 144, 24, 1, 56),
        ("proj", 144, 32, 1, 28),
        ("exp", 32, 192, 1, 28),
        ("proj", 192, 32, 1, 28),
        ("proj", 192, 64, 1, 14),
        ("exp", 64, 384, 1, 14),
        ("proj", 384, 64, 1, 14),
        ("proj", 384, 96, 1, 14),
        ("exp", 96, 576, 1, 14),
        ("proj", 576, 96, 1, 14),
        ("proj", 576, 160, 1, 7),
        ("exp", 160, 960, 1, 7),
        ("proj", 960, 160, 1, 7),
        ("proj", 960, 320, 1, 7),
        ("head", 320, 1280, 1, 7),
    ];
    // (name, c_in, c_out, kernel, map): ResNet-50's layers at 224 px.
    let resnet = [
        ("stem s2", 3, 64, 7, 224),
        ("l1 3x3", 64, 64, 3, 56),
        ("l1 1x1 in", 256, 64, 1, 56),
        ("l1 1x1 out", 64, 256, 1, 56),
        ("l2 1x1 out", 128, 512, 1, 28),
        ("l3 1x1 out", 256, 1024, 1, 14),
        ("l2 3x3 s2", 128, 128, 3, 56),
        ("l2 3x3", 128, 128, 3, 28),
        ("l2 1x1 in", 512, 128, 1, 28),
        ("l3 3x3", 256, 256, 3, 14),
        ("l3 1x1 in", 1024, 256, 1, 14),
        ("l4 3x3", 512, 512, 3, 7),
        ("l4 1x1 in", 2048, 512, 1, 7),
        ("l4 1x1 out", 512, 2048, 1, 7),
        ("l3 3x3 s2", 256, 256, 3, 28),
        ("l3 1x1 s2", 512, 1024, 1, 28),
        ("l4 3x3 s2", 512, 512, 3, 14),
        ("l4 1x1 s2", 1024, 2048, 1, 14),
    ];
    for (name, c_in, c_out, k, hw) in if dw {
        &depthwise[..]
    } else if dtype {
        &mobile[..]
    } else {
        &resnet[..]
    }
    .iter()
    .copied()
    {
        // `ONLY=c_in,c_out` (or `c_in,c_out,map`): that layer alone.
        let only = std::env::var("ONLY");
        if only.is_ok_and(|o| o != format!("{c_in},{c_out}") && o != format!("{c_in},{c_out},{hw}"))
        {
            continue;
        }
        let pad = k / 2;
        let conv: Conv2d = Conv2dConfig::new([c_in, c_out], [k, k])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            // The stems: stride 2.
            .with_stride(if c_in == 3 || name.ends_with("s2") {
                [2, 2]
            } else {
                [1, 1]
            })
            .with_groups(if dw { c_in } else { 1 })
            .with_bias(false)
            .init(&dev);
        let conv = Conv2d {
            weight: Param::from_tensor(conv.weight.val().require_grad()),
            ..conv
        };
        let x = Tensor::<4>::random([n, c_in, hw, hw], Distribution::Normal(0.0, 1.0), &dev);
        let x = if taps { x.require_grad() } else { x };
        let mut best = [f64::MAX; 2];
        for rep in 0..2 * reps {
            let on = rep % 2 == 1;
            match (dw, dtype) {
                (true, _) if phases => train::set_depthwise_phases(on),
                (true, _) => train::set_depthwise_planes(on),
                _ if std::env::var("DWGRAD").is_ok_and(|v| v == "1") => {
                    train::set_direct_weight_grad(on)
                }
                (_, true) => precision::use_kernel(on.then_some(kernel)).expect("kernel"),
                _ if std::env::var("DIRECT").is_ok_and(|v| v == "1") => train::set_direct(on),
                _ if taps => train::set_train_taps(on),
                _ if wgrad => train::set_weight_grad_dots(on),
                _ => train::set_images_per_product(on),
            }
            let s = Instant::now();
            let y = train::conv2d(&conv, x.clone()).expect("applies");
            if fwd_only {
                std::hint::black_box(y.into_data());
            } else {
                let g = y.sum().backward();
                let dw = conv.weight.val().grad(&g).expect("dw");
                std::hint::black_box(dw);
            }
            best[on as usize] = best[on as usize].min(s.elapsed().as_secs_f64());
        }
        // The two sides' names, off then on, in the order the modes are chosen above.
        let [off, on] = if std::env::var("DWGRAD").is_ok_and(|v| v == "1") {
            ["products", "direct dW"]
        } else if std::env::var("DIRECT").is_ok_and(|v| v == "1") {
            ["before", "direct"]
        } else if dw && phases {
            ["spread", "phases"]
        } else if dw {
            ["channels-last", "planes"]
        } else if dtype {
            ["f32", "bf16"]
        } else if taps {
            ["unfolded", "taps"]
        } else if wgrad {
            ["gemm", "dots"]
        } else {
            ["one image", "several"]
        };
        println!(
            "{name:11} {c_in}->{c_out} {hw}x{hw}: {off} {:.2} ms, {on} {:.2} ms ({:.2}x)",
            best[0] * 1e3,
            best[1] * 1e3,
            best[0] / best[1]
        );
    }
}

/// ResNet's stem pool, forward and input gradient, Burn's against committee's, alternated.
fn stem_pool(dev: &Device, n: usize, reps: usize) {
    use burn::nn::pool::MaxPool2dConfig;
    let pool = MaxPool2dConfig::new([3, 3])
        .with_strides([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init();
    let x = Tensor::<4>::random([n, 64, 112, 112], Distribution::Normal(0.0, 1.0), dev);
    let x = x.require_grad();
    let mut best = [f64::MAX; 2];
    for rep in 0..2 * reps {
        let on = rep % 2 == 1;
        train::set_max_pool(on);
        let s = Instant::now();
        let y = committee_ops::pool::max_pool(&pool, x.clone());
        let g = y.sum().backward();
        std::hint::black_box(x.grad(&g).expect("dx"));
        best[on as usize] = best[on as usize].min(s.elapsed().as_secs_f64());
    }
    println!(
        "stem pool 64x112x112 b{n}: Burn's {:.2} ms, committee's {:.2} ms ({:.2}x)",
        best[0] * 1e3,
        best[1] * 1e3,
        best[0] / best[1]
    );
}

/// ResNet-50's residual ends at each stage's map, forward and gradients (of the input and the
/// shortcut), one op against BatchNorm, the sum and the ReLU apart, alternated.
fn bn_residual(dev: &Device, n: usize, reps: usize) {
    use burn::nn::BatchNormConfig;
    use committee_ops::Act;
    for (c, hw) in [(256, 56), (512, 28), (1024, 14), (2048, 7)] {
        let bn = BatchNormConfig::new(c).init(dev);
        let x = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.0, 1.0), dev);
        let r = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.0, 1.0), dev);
        let (x, r) = (x.require_grad(), r.require_grad());
        let mut best = [[f64::MAX; 2]; 2];
        for rep in 0..2 * reps {
            let on = rep % 2 == 1;
            train::set_batch_norm_residual(on);
            let s = Instant::now();
            let y = committee_ops::batch_norm_add_act(&bn, x.clone(), r.clone(), Some(Act::Relu));
            let y = std::hint::black_box(y);
            let f = s.elapsed().as_secs_f64();
            let g = y.sum().backward();
            std::hint::black_box((x.grad(&g), r.grad(&g)));
            let t = s.elapsed().as_secs_f64();
            best[on as usize][0] = best[on as usize][0].min(f);
            best[on as usize][1] = best[on as usize][1].min(t - f);
        }
        println!(
            "{c}x{hw}x{hw} b{n}: forward apart {:.2} ms, one op {:.2} ms; backward apart {:.2} ms, one op {:.2} ms",
            best[0][0] * 1e3,
            best[1][0] * 1e3,
            best[0][1] * 1e3,
            best[1][1] * 1e3
        );
    }
}
