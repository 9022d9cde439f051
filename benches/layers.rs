//! Criterion benchmarks of representative layers and small models on flex, for regression
//! tracking: `cargo bench --bench layers` (add `-- depthwise` to run one group). Each kernel
//! committee replaces is measured next to Burn's own op on the same input. Speed against
//! PyTorch is measured by `committee bench` and `scripts/bench_pytorch.py` (docs/benchmarks.md).

#![allow(clippy::result_large_err)]

use std::hint::black_box;
use std::time::Duration;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData, activation};
use committee_ops::cpu::{self as kernels, Epilogue};
use committee_zoo::weights::random_model;
use committee_zoo::{CommonOptions, registry};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn random(shape: [usize; 4], device: &Device) -> TensorData {
    Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device).into_data()
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, groups: usize, d: &Device) -> Conv2d {
    let p = (k - 1) / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(d)
}

fn silu(c: &mut Criterion) {
    let device = Device::flex();
    let data = random([8, 144, 56, 56], &device);
    let fresh = || Tensor::<4>::from_data(data.clone(), &device);
    let mut g = c.benchmark_group("silu 8x144x56x56");
    g.bench_function("burn x*sigmoid(x)", |b| {
        b.iter_batched(
            fresh,
            |x| black_box(activation::silu(x)),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("committee in place", |b| {
        b.iter_batched(
            fresh,
            |x| black_box(kernels::activation(x, Epilogue::Silu)),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn depthwise(c: &mut Criterion) {
    let device = Device::flex();
    for (ch, hw, k, s) in [(144, 56, 3, 1), (96, 112, 3, 2), (480, 14, 5, 1)] {
        let layer = conv(ch, ch, k, s, ch, &device);
        let x = Tensor::<4>::from_data(random([8, ch, hw, hw], &device), &device);
        let mut g = c.benchmark_group(format!("depthwise {k}x{k}/{s} 8x{ch}x{hw}x{hw}"));
        g.bench_function("burn", |b| b.iter(|| black_box(layer.forward(x.clone()))));
        g.bench_function("committee", |b| {
            b.iter(|| black_box(kernels::depthwise(&layer, x.clone(), Epilogue::None)))
        });
        g.bench_function("committee + silu fused", |b| {
            b.iter(|| black_box(kernels::depthwise(&layer, x.clone(), Epilogue::Silu)))
        });
        g.finish();
    }
}

fn dense_convs(c: &mut Criterion) {
    let device = Device::flex();
    let mut g = c.benchmark_group("conv");
    for (name, cin, cout, k, hw) in [
        ("1x1 144->24 8x56x56", 144, 24, 1, 56),
        ("3x3 64->64 8x56x56", 64, 64, 3, 56),
    ] {
        let layer = conv(cin, cout, k, 1, 1, &device);
        let x = Tensor::<4>::from_data(random([8, cin, hw, hw], &device), &device);
        g.bench_function(name, |b| b.iter(|| black_box(layer.forward(x.clone()))));
    }
    g.finish();
}

/// ViT-B/16's MLP expansion (fc1 + GELU) and attention at batch 1 (flex runs eagerly, so
/// the returned tensors are finished).
fn vit_layers(c: &mut Criterion) {
    use burn::nn::LinearConfig;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    let device = Device::flex();
    let (n, d, heads) = (197, 768, 12);
    let fc1 = LinearConfig::new(d, 4 * d).init(&device);
    let x = Tensor::<3>::random([1, n, d], Distribution::Normal(0.0, 1.0), &device);
    let mut g = c.benchmark_group("vit-b/16 b=1");
    g.bench_function("fc1 + gelu: burn", |b| {
        b.iter(|| black_box(activation::gelu(fc1.forward(x.clone()))))
    });
    g.bench_function("fc1 + gelu: committee", |b| {
        b.iter(|| black_box(kernels::linear(&fc1, x.clone(), Epilogue::Gelu)))
    });
    let qkv = Tensor::<3>::random([1, n, 3 * d], Distribution::Normal(0.0, 1.0), &device);
    g.bench_function("attention: burn (with head reshapes)", |b| {
        b.iter(|| {
            let p = qkv
                .clone()
                .reshape([1, n, 3, heads, d / heads])
                .permute([2, 0, 3, 1, 4]);
            let part = |i| p.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
            let o = attention(
                part(0),
                part(1),
                part(2),
                None,
                None,
                AttentionModuleOptions::default(),
            );
            black_box(o.swap_dims(1, 2).reshape([1, n, d]))
        })
    });
    g.bench_function("attention: committee", |b| {
        b.iter(|| black_box(kernels::attention(qkv.clone(), heads)))
    });
    g.finish();
}

/// Dense convolutions and a linear layer in f32 and with bf16 products on each bf16 kernel
/// this CPU has (`--dtype bf16`), on the same inputs: what the bf16 path buys per layer.
fn bf16_layers(c: &mut Criterion) {
    use burn::nn::LinearConfig;
    use committee_ops::cpu::bf16::Bf16Kernel;
    use committee_ops::precision::use_kernel;
    let device = Device::flex();
    let mut choices = vec![None];
    choices.extend(
        [Bf16Kernel::Avx512, Bf16Kernel::Amx]
            .into_iter()
            .filter(|k| k.available())
            .map(Some),
    );
    let label = |k: Option<Bf16Kernel>| k.map_or("f32", |k| k.name());
    let mut g = c.benchmark_group("bf16");
    for (name, cin, cout, k, hw) in [
        ("conv 3x3 64->64 8x56x56", 64, 64, 3, 56),
        ("conv 3x3 256->256 8x14x14", 256, 256, 3, 14),
        ("conv 1x1 256->1024 8x14x14", 256, 1024, 1, 14),
    ] {
        let layer = conv(cin, cout, k, 1, 1, &device);
        let x = Tensor::<4>::from_data(random([8, cin, hw, hw], &device), &device);
        for &kern in &choices {
            use_kernel(kern).expect("available");
            g.bench_function(format!("{name}: {}", label(kern)), |b| {
                b.iter(|| black_box(kernels::conv_gemm(&layer, x.clone(), Epilogue::None)))
            });
        }
    }
    let fc1 = LinearConfig::new(768, 3072).init(&device);
    let x = Tensor::<3>::random([8, 197, 768], Distribution::Normal(0.0, 1.0), &device);
    for &kern in &choices {
        use_kernel(kern).expect("available");
        g.bench_function(format!("vit fc1 8x197x768->3072: {}", label(kern)), |b| {
            b.iter(|| black_box(kernels::linear(&fc1, x.clone(), Epilogue::None)))
        });
    }
    use_kernel(None).expect("f32");
    // The products alone, operands packed beforehand.
    use committee_ops::cpu::bf16::{PackedA, PackedB, gemm};
    for (m, n, k) in [(1576, 3072, 768), (1024, 196, 256), (64, 3136, 576)] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let w: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
        let (pa, pb) = (PackedA::pack(&a, m, k), PackedB::pack(&w, k, n));
        let mut dst = vec![0f32; m * n];
        for kern in choices.iter().flatten() {
            g.bench_function(format!("gemm {m}x{n}x{k}: {}", kern.name()), |b| {
                b.iter(|| gemm(*kern, &pa, &pb, &mut dst, false, Epilogue::None))
            });
        }
        g.bench_function(format!("pack {m}x{n}x{k}"), |b| {
            b.iter(|| black_box((PackedA::pack(&a, m, k), PackedB::pack(&w, k, n))))
        });
    }
    g.finish();
}

fn models(c: &mut Criterion) {
    let device = Device::flex();
    let mut g = c.benchmark_group("forward b=1 224px, BN folded");
    for name in ["resnet18", "mobilenetv2_100", "efficientnet_b0"] {
        let Some(spec) = registry::get(name) else {
            panic!("{name} is not in the registry");
        };
        let model =
            random_model(&spec, &CommonOptions::default(), [224, 224], &device).fold_batchnorm();
        let x = Tensor::<4>::from_data(random([1, 3, 224, 224], &device), &device);
        g.bench_function(name, |b| {
            b.iter(|| black_box(model.forward(x.clone()).into_data()))
        });
    }
    g.finish();
}

/// Training: forward and backward of one layer on flex's autodiff device, committee's training
/// ops (`Kernel::Train`) against Burn's.
fn train_layers(c: &mut Criterion) {
    use burn::nn::BatchNormConfig;
    use committee_ops as ops;
    use committee_ops::{Kernel, set_enabled};
    let device = Device::flex().autodiff();
    let without: Vec<Kernel> = Kernel::ALL
        .into_iter()
        .filter(|k| *k != Kernel::Train)
        .collect();
    let dw = Conv2dConfig::new([144, 144], [3, 3])
        .with_groups(144)
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&device);
    let dense = Conv2dConfig::new([64, 64], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&device);
    let bn = BatchNormConfig::new(144).init(&device);
    let x144 = Tensor::<4>::from_data(random([8, 144, 28, 28], &device), &device).require_grad();
    let x64 = Tensor::<4>::from_data(random([8, 64, 28, 28], &device), &device).require_grad();
    type Case<'a> = (&'a str, &'a Tensor<4>, &'a dyn Fn(Tensor<4>) -> Tensor<4>);
    let cases: [Case; 3] = [
        ("depthwise 3x3 8x144x28x28", &x144, &|x| ops::conv2d(&dw, x)),
        ("conv 3x3 8x64x28x28", &x64, &|x| ops::conv2d(&dense, x)),
        ("batchnorm 8x144x28x28", &x144, &|x| ops::batch_norm(&bn, x)),
    ];
    for (name, x, layer) in cases {
        let mut g = c.benchmark_group(format!("train fwd+bwd: {name}"));
        for (who, kernels) in [("burn", &without), ("committee", &Kernel::ALL.to_vec())] {
            g.bench_function(who, |b| {
                set_enabled(kernels);
                b.iter(|| black_box(layer(x.clone()).sum().backward()))
            });
        }
        set_enabled(&Kernel::ALL);
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // The allocator as the CLI runs it (committee_ops::heap).
    config = {
        committee_ops::heap::keep_freed_memory();
        Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
    };
    targets = silu, depthwise, dense_convs, vit_layers, bf16_layers, models, train_layers
}
criterion_main!(benches);
