//! The CPU kernels against Burn's ops and f64 references.

use super::*;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::Distribution;

fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn exp_within_two_ulp_of_f64() {
    let mut worst = 0f64;
    let mut x = -87.0f32;
    while x <= 87.0 {
        let want = (x as f64).exp();
        // Both variants: plain mul + add, and fused (software `fmaf` where no FMA).
        for got in [exp::<false>(x), exp::<true>(x)] {
            worst = worst.max(((got as f64 - want) / want).abs());
        }
        x += 0.0137;
    }
    assert!(worst < 2.5e-7, "worst relative error {worst}");
}

/// 1 + erf(y) in f64: the Taylor series for |y| <= 3, the continued fraction of erfc
/// beyond (directly for y < -3, where 1 + erf would cancel).
fn one_plus_erf(y: f64) -> f64 {
    let erfc = |z: f64| {
        let mut cf = 0.0;
        for k in (1..80).rev() {
            cf = (k as f64 / 2.0) / (z + cf);
        }
        (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + cf)
    };
    if y < -3.0 {
        return erfc(-y);
    }
    if y > 3.0 {
        return 2.0 - erfc(y);
    }
    let (mut term, mut sum) = (y, y);
    for n in 1..200 {
        term *= -y * y / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    1.0 + sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn gelu_matches_f64_erf() {
    // In the far negative tail f32 rounding of z = |x|/sqrt 2 shifts exp(-z^2) by up to
    // ~1e-5 relative (z^2 reaches 72), on values below 1e-30; absolute error stays < 1e-6.
    let (mut worst_rel, mut worst_abs) = (0f64, 0f64);
    let mut x = -12.0f32;
    while x <= 12.0 {
        let want = 0.5 * x as f64 * one_plus_erf(x as f64 / 2f64.sqrt());
        for got in [gelu::<false>(x) as f64, gelu::<true>(x) as f64] {
            worst_abs = worst_abs.max((got - want).abs());
            if want.abs() > 1e-30 {
                worst_rel = worst_rel.max(((got - want) / want).abs());
            }
        }
        x += 0.0173;
    }
    assert!(
        worst_rel < 2e-5 && worst_abs < 1e-6,
        "rel {worst_rel} abs {worst_abs}"
    );
}

#[test]
fn activations_match_burn() {
    let device = Device::flex();
    let x = Tensor::<4>::random([2, 3, 17, 19], Distribution::Normal(0.0, 4.0), &device);
    // Extremes, where a careless exp overflows.
    let x = Tensor::cat(vec![x, Tensor::full([2, 3, 1, 19], -100.0, &device)], 2);
    let x = Tensor::cat(vec![x, Tensor::full([2, 3, 1, 19], 100.0, &device)], 2);
    let want = burn::tensor::activation::silu(x.clone());
    let got = activation(x.clone(), Epilogue::Silu).unwrap_or_else(|_| panic!("fallback"));
    assert!(max_abs_diff(got, want) < 1e-5);
    let want = burn::tensor::activation::gelu(x.clone());
    let got = activation(x.clone(), Epilogue::Gelu).unwrap_or_else(|_| panic!("fallback"));
    assert!(max_abs_diff(got, want) < 1e-5);
    let want = burn::tensor::activation::relu6(x.clone());
    let got = activation(x.clone(), Epilogue::Relu6).unwrap_or_else(|_| panic!("fallback"));
    assert_eq!(max_abs_diff(got, want), 0.0);
    // A shared tensor is copied, not changed under its other owner.
    let keep = x.clone();
    let before = keep.clone().into_data();
    let _ = activation(x, Epilogue::Relu);
    assert_eq!(keep.into_data(), before);
}

#[test]
fn linear_matches_burn_linear() {
    use burn::nn::LinearConfig;
    let device = Device::flex();
    for (d_in, d_out, bias) in [(24, 40, true), (7, 3, false), (64, 96, true)] {
        let lin = LinearConfig::new(d_in, d_out).with_bias(bias).init(&device);
        // A sliced (non-contiguous) 3-D input: the kernel must read it as Burn does.
        let x = Tensor::<3>::random([3, 9, d_in + 2], Distribution::Normal(0.0, 1.0), &device)
            .narrow(2, 1, d_in);
        let want = lin.forward(x.clone());
        let got = linear(&lin, x.clone(), Epilogue::None).unwrap_or_else(|_| panic!("fallback"));
        assert_eq!(got.dims(), [3, 9, d_out]);
        let d: f32 = (got - want.clone()).abs().max().into_scalar();
        assert!(d < 1e-5, "{d_in}x{d_out}: {d}");
        let want = burn::tensor::activation::gelu(want);
        let got = linear(&lin, x, Epilogue::Gelu).unwrap_or_else(|_| panic!("fallback"));
        let d: f32 = (got - want).abs().max().into_scalar();
        assert!(d < 1e-5, "{d_in}x{d_out} gelu: {d}");
        // 2-D input (a classifier on pooled features).
        let x = Tensor::<2>::random([5, d_in], Distribution::Normal(0.0, 1.0), &device);
        let want = lin.forward(x.clone());
        let got = linear(&lin, x, Epilogue::None).unwrap_or_else(|_| panic!("fallback"));
        let d: f32 = (got - want).abs().max().into_scalar();
        assert!(d < 1e-5, "{d_in}x{d_out} 2-D: {d}");
    }
    // A wrong width is left to Burn.
    let lin = LinearConfig::new(8, 4).init(&device);
    assert!(linear(&lin, Tensor::<2>::zeros([2, 5], &device), Epilogue::None).is_err());
}

/// The packed f32 linear (`linear_packed`) against f64 sums: rows past a block and a tile,
/// `k` past a part ([`KC`](super::linear_packed) is 64) and past a panel group (`k = 2100`
/// puts one panel per group), columns past a panel and its half, every epilogue (the clamps
/// stored from the registers, GELU and SiLU through the block write-back), with and without
/// a bias; every output written (the buffer starts as NaN), NaN propagated.
#[test]
fn packed_linear_matches_an_f64_reference() {
    use crate::cpu::bf16::Bias;
    use crate::testing::values;
    if !linear_packed::available() {
        eprintln!("no AVX-512 on this CPU: the packed f32 linear is not run");
        return;
    }
    let eps = [
        Epilogue::None,
        Epilogue::Relu,
        Epilogue::Relu6,
        Epilogue::Gelu,
        Epilogue::Silu,
    ];
    for (i, (m, k, n)) in [
        (24, 1, 1),
        (25, 7, 33),
        (31, 64, 64),
        (50, 65, 100),
        (197, 130, 130),
        (30, 2100, 130),
    ]
    .into_iter()
    .enumerate()
    {
        let x = values(m * k, i as u64);
        let w = values(k * n, 100 + i as u64);
        let b = values(n, 200 + i as u64);
        let packed = linear_packed::PackedW::new(&w, k, n);
        for (e, ep) in eps.into_iter().enumerate() {
            let with_bias = e % 2 == 0;
            let bias = if with_bias {
                Bias::Columns(&b)
            } else {
                Bias::None
            };
            let mut out = vec![MaybeUninit::new(f32::NAN); m * n];
            linear_packed::linear_into(&x, m, &packed, bias, ep, &mut out);
            for (at, got) in out.iter().enumerate() {
                let (r, c) = (at / n, at % n);
                let mut sum = if with_bias { b[c] as f64 } else { 0.0 };
                for p in 0..k {
                    sum += x[r * k + p] as f64 * w[p * n + c] as f64;
                }
                let want = match ep {
                    Epilogue::None => sum,
                    Epilogue::Relu => sum.max(0.0),
                    Epilogue::Relu6 => sum.clamp(0.0, 6.0),
                    Epilogue::Gelu => 0.5 * sum * one_plus_erf(sum / 2f64.sqrt()),
                    Epilogue::Silu => sum / (1.0 + (-sum).exp()),
                    Epilogue::Exp => unreachable!("not a layer's activation"),
                };
                // SAFETY: initialised (to NaN, which fails below, where not written).
                let got = unsafe { got.assume_init() } as f64;
                // f32 sums of k products of values in [-2, 2]: rounding grows with sqrt(k).
                let tol = 1e-6 * (k as f64).sqrt() * 4.0 * (1.0 + want.abs());
                assert!(
                    (got - want).abs() < tol,
                    "{m}x{k}x{n} {ep:?} bias {with_bias} at ({r}, {c}): {got} vs {want}"
                );
            }
        }
    }
    // A NaN in row 3 reaches that row's outputs only, through every epilogue.
    let (m, k, n) = (30, 70, 40);
    let mut x = values(m * k, 9);
    x[3 * k + 5] = f32::NAN;
    let packed = linear_packed::PackedW::new(&values(k * n, 10), k, n);
    for ep in eps {
        let mut out = vec![MaybeUninit::new(0f32); m * n];
        linear_packed::linear_into(&x, m, &packed, Bias::None, ep, &mut out);
        for (at, v) in out.iter().enumerate() {
            // SAFETY: initialised above.
            let v = unsafe { v.assume_init() };
            assert_eq!(v.is_nan(), at / n == 3, "{ep:?} at {at}: {v}");
        }
    }
}

#[test]
fn attention_matches_burn_attention() {
    use burn::tensor::module::attention as burn_attention;
    use burn::tensor::ops::AttentionModuleOptions;
    let device = Device::flex();
    for (b, n, heads, dh) in [(2, 197, 3, 64), (1, 5, 2, 8), (3, 50, 4, 16)] {
        let d = heads * dh;
        let qkv = Tensor::<3>::random([b, n, 3 * d], Distribution::Normal(0.0, 2.0), &device);
        let parts = qkv
            .clone()
            .reshape([b, n, 3, heads, dh])
            .permute([2, 0, 3, 1, 4]);
        let part = |i| parts.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
        let opts = AttentionModuleOptions::default();
        let want = burn_attention(part(0), part(1), part(2), None, None, opts)
            .swap_dims(1, 2)
            .reshape([b, n, d]);
        let got = attention(qkv, heads).unwrap_or_else(|_| panic!("fallback"));
        assert_eq!(got.dims(), [b, n, d]);
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 2e-5, "b {b} n {n} heads {heads}: {diff}");
    }
    // Widths that do not split into q, k, v of `heads` heads are left to Burn.
    assert!(attention(Tensor::<3>::zeros([1, 4, 10], &device), 3).is_err());
}

#[test]
fn max_pool_matches_burn() {
    use burn::nn::pool::MaxPool2dConfig;
    let device = Device::flex();
    let cases = [
        ([3, 3], [2, 2], (1, 1, 1, 1), [2, 3, 112, 112]),
        ([3, 3], [2, 2], (1, 1, 1, 1), [1, 2, 7, 9]),
        ([2, 2], [2, 2], (0, 0, 0, 0), [1, 2, 8, 6]),
        ([3, 2], [1, 2], (2, 0, 1, 1), [2, 1, 5, 8]),
    ];
    for (k, s, (t, l, b, r), shape) in cases {
        let pool = MaxPool2dConfig::new(k)
            .with_strides(s)
            .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
            .init();
        // Negative inputs: a pool that let padding (0) win would be caught.
        let x = Tensor::<4>::random(shape, Distribution::Normal(-3.0, 1.0), &device);
        let want = pool.forward(x.clone());
        let got = max_pool(&pool, x).unwrap_or_else(|_| panic!("fallback"));
        assert_eq!(got.dims(), want.dims(), "{k:?} {s:?}");
        assert_eq!(max_abs_diff(got, want), 0.0, "{k:?} {s:?} {shape:?}");
    }
}

type ConvKernel = fn(&Conv2d, Tensor<4>, Epilogue) -> Result<Tensor<4>, Tensor<4>>;

/// `kernel` equals Burn's `conv.forward` (then `act`), with and without bias.
fn check_conv(
    kernel: ConvKernel,
    [cin, cout, groups]: [usize; 3],
    (k, s, pad): (usize, usize, PaddingConfig2d),
    [n, h, w]: [usize; 3],
    (ep, act): (Epilogue, fn(Tensor<4>) -> Tensor<4>),
    tol: f32,
) {
    let device = Device::flex();
    for bias in [true, false] {
        let conv = Conv2dConfig::new([cin, cout], [k, k])
            .with_stride([s, s])
            .with_groups(groups)
            .with_padding(pad.clone())
            .with_bias(bias)
            .init(&device);
        let x = Tensor::<4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
        let want = conv.forward(x.clone());
        let got = kernel(&conv, x.clone(), Epilogue::None).unwrap_or_else(|_| panic!("fallback"));
        assert_eq!(got.dims(), want.dims(), "k{k} s{s} {pad:?}");
        assert!(max_abs_diff(got, want.clone()) < tol, "k{k} s{s} {pad:?}");
        let got = kernel(&conv, x, ep).unwrap_or_else(|_| panic!("fallback"));
        assert!(
            max_abs_diff(got, act(want)) < tol,
            "k{k} s{s} {pad:?} {ep:?}"
        );
    }
}

#[test]
fn conv_gemm_matches_burn_conv() {
    let device = Device::flex();
    for (cin, cout, k, s, pad, h, w) in [
        (5, 7, 1, 1, PaddingConfig2d::Explicit(0, 0, 0, 0), 6, 9),
        (5, 7, 1, 2, PaddingConfig2d::Explicit(0, 0, 0, 0), 7, 9),
        (4, 6, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 11),
        (4, 6, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 10),
        (3, 8, 7, 2, PaddingConfig2d::Explicit(3, 3, 3, 3), 17, 15),
        (3, 5, 3, 2, PaddingConfig2d::Same, 11, 8),
        (4, 4, 3, 1, PaddingConfig2d::Valid, 6, 7),
        // From 14x14 outputs up, read at tap offsets on AVX-512 (`conv_taps`).
        (5, 7, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 28, 30),
        (3, 4, 5, 1, PaddingConfig2d::Explicit(2, 2, 1, 1), 30, 29),
        (4, 4, 3, 3, PaddingConfig2d::Explicit(0, 2, 1, 0), 10, 10),
        (2, 3, 4, 4, PaddingConfig2d::Valid, 16, 12),
    ] {
        let relu = (
            Epilogue::Relu,
            burn::tensor::activation::relu::<4> as fn(_) -> _,
        );
        // Batches of one, of three, and a multiple of the threads (1x1 stride-1
        // convolutions: one image per thread, see `images_apart`).
        let threads = rayon::current_num_threads();
        for n in [1, 3, 2 * threads] {
            check_conv(
                conv_gemm,
                [cin, cout, 1],
                (k, s, pad.clone()),
                [n, h, w],
                relu,
                1e-4,
            );
        }
    }
    assert!(images_apart(8, 2) && images_apart(2, 2) && images_apart(9, 2));
    assert!(!images_apart(1, 2) && !images_apart(3, 2) && !images_apart(6, 4));
    // Grouped convolutions are not this kernel's.
    let grouped = Conv2dConfig::new([4, 4], [3, 3])
        .with_groups(2)
        .init(&device);
    let x = Tensor::<4>::zeros([1, 4, 5, 5], &device);
    assert!(conv_gemm(&grouped, x, Epilogue::None).is_err());
}

/// Stride-1 layers on small maps with channels in blocks of 16 in and 32 out run the direct
/// convolution on AVX-512 (`train::direct::conv_finished`): against Burn's convolution with
/// bias and ReLU, and with a residual added before the ReLU (`conv_gemm_add`, as a ResNet
/// block's last convolution), on 7-wide maps (tiles of two rows, an odd row count), 14- and
/// 28-wide ones, a 5x5 kernel, uneven padding, and batches of one and three.
#[test]
fn direct_conv_matches_burn_conv() {
    let device = Device::flex();
    let relu = (
        Epilogue::Relu,
        burn::tensor::activation::relu::<4> as fn(_) -> _,
    );
    for (cin, cout, k, pad, h, w) in [
        (16, 32, 3, PaddingConfig2d::Explicit(1, 1, 1, 1), 7, 7),
        (32, 64, 3, PaddingConfig2d::Explicit(1, 1, 1, 1), 14, 14),
        (16, 32, 3, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 28),
        (16, 32, 5, PaddingConfig2d::Explicit(2, 2, 2, 2), 14, 14),
        (16, 32, 3, PaddingConfig2d::Explicit(0, 2, 1, 0), 14, 14),
    ] {
        let pads = match pad {
            PaddingConfig2d::Explicit(t, l, b, r) => [t, b, l, r],
            _ => unreachable!("explicit above"),
        };
        let d = crate::cpu::train::direct::Direct {
            n: 1,
            c_in: cin,
            c_out: cout,
            h,
            w,
            k: [k, k],
            pad: pads,
        };
        // The cases are the direct kernel's wherever it runs.
        assert_eq!(d.fits().is_some(), Isa::get().avx512(), "{d:?}");
        for n in [1, 3] {
            check_conv(
                conv_gemm,
                [cin, cout, 1],
                (k, 1, pad.clone()),
                [n, h, w],
                relu,
                1e-4,
            );
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_padding(pad.clone())
                .init(&device);
            let x = Tensor::<4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
            let want = conv.forward(x.clone());
            let res = Tensor::<4>::random(want.dims(), Distribution::Normal(0.0, 1.0), &device);
            let want = burn::tensor::activation::relu(want + res.clone());
            let got = conv_gemm_add(&conv, x, Some(&res), Epilogue::Relu)
                .unwrap_or_else(|_| panic!("fallback"));
            assert!(max_abs_diff(got, want) < 1e-4, "{d:?} n {n} residual");
        }
    }
}

#[test]
fn depthwise_matches_burn_conv() {
    let device = Device::flex();
    for (k, s, pad, h, w) in [
        (3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 11),
        (3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 11),
        (5, 2, PaddingConfig2d::Explicit(2, 2, 2, 2), 14, 13),
        (5, 1, PaddingConfig2d::Same, 7, 8),
        (3, 2, PaddingConfig2d::Same, 10, 7),
        (5, 2, PaddingConfig2d::Same, 15, 16),
        (3, 1, PaddingConfig2d::Valid, 6, 5),
        (3, 3, PaddingConfig2d::Explicit(0, 2, 1, 0), 10, 10),
    ] {
        let silu = (
            Epilogue::Silu,
            burn::tensor::activation::silu::<4> as fn(_) -> _,
        );
        check_conv(depthwise, [6, 6, 6], (k, s, pad), [2, h, w], silu, 1e-5);
    }
    // Wide maps (several blocks of `V` columns and a partial one), both stride-2 phase
    // alignments, a 7x7 kernel.
    for (k, s, pad, h, w) in [
        (3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 12, 41),
        (3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 11, 70),
        (3, 2, PaddingConfig2d::Same, 9, 67),
        (7, 1, PaddingConfig2d::Explicit(3, 3, 3, 3), 10, 35),
    ] {
        let relu6 = (
            Epilogue::Relu6,
            burn::tensor::activation::relu6::<4> as fn(_) -> _,
        );
        check_conv(depthwise, [3, 3, 3], (k, s, pad), [1, h, w], relu6, 1e-5);
    }
    // Kernels wider than MAX_K are left to Burn's.
    let wide = Conv2dConfig::new([2, 2], [MAX_K + 2, MAX_K + 2])
        .with_groups(2)
        .init(&device);
    assert!(
        depthwise(
            &wide,
            Tensor::<4>::zeros([1, 2, 20, 20], &device),
            Epilogue::None
        )
        .is_err()
    );
    // Not depthwise: falls back.
    let dense = Conv2dConfig::new([4, 4], [3, 3]).init(&device);
    let x = Tensor::<4>::zeros([1, 4, 5, 5], &device);
    assert!(depthwise(&dense, x, Epilogue::None).is_err());
}

/// Every instruction set this CPU has runs the depthwise plane kernel (the model tests reach
/// only the widest) against an f64 sum written out tap by tap.
#[test]
fn depthwise_plane_matches_f64_on_every_isa() {
    let mut isas = vec![Isa::Base];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            isas.push(Isa::Avx2);
        }
        if matches!(Isa::get(), Isa::Avx512) {
            isas.push(Isa::Avx512);
        }
    }
    // (k, stride, pad top/left, h, w, oh, ow): wide and narrow, both stride-2 alignments.
    for (k, s, pt, pl, h, w, oh, ow) in [
        (3, 1, 1, 1, 5, 37, 5, 37),
        (3, 2, 1, 1, 9, 40, 5, 20),
        (3, 2, 0, 0, 8, 9, 4, 4),
        (5, 1, 2, 2, 7, 7, 7, 7),
        (5, 2, 1, 2, 13, 14, 6, 7),
        (7, 3, 3, 3, 11, 19, 4, 7),
    ] {
        let val = |i: usize| ((i * 7919 % 101) as f32 - 50.0) / 17.0;
        let inp: Vec<f32> = (0..h * w).map(val).collect();
        let taps: Vec<f32> = (0..k * k).map(|i| val(i * 13 + 5) / 3.0).collect();
        let bias = 0.25;
        let mut want = vec![0f64; oh * ow];
        for (i, y) in want.iter_mut().enumerate() {
            let (oy, ox) = (i / ow, i % ow);
            *y = bias as f64;
            for (t, &tap) in taps.iter().enumerate() {
                let iy = (oy * s + t / k) as isize - pt as isize;
                let ix = (ox * s + t % k) as isize - pl as isize;
                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                    *y += tap as f64 * inp[iy as usize * w + ix as usize] as f64;
                }
            }
        }
        let g = Geometry {
            h,
            w,
            ow,
            k,
            s,
            pt,
            pl,
        };
        for isa in &isas {
            let mut out = vec![f32::NAN; oh * ow];
            isa.depthwise_plane(
                &inp,
                super::as_uninit(&mut out),
                &taps,
                bias,
                &g,
                Epilogue::None,
                &mut Vec::new(),
            );
            let worst = out
                .iter()
                .zip(&want)
                .map(|(&a, &b)| (a as f64 - b).abs())
                .fold(0f64, f64::max);
            assert!(worst < 1e-4, "k{k} s{s} {h}x{w}: off by {worst}");
        }
    }
}

/// The f32 tap-offset convolution against an f64 convolution of the same values: several
/// channel blocks and output-channel groups, every tail width of a 64-column tile, 1x1 with
/// and without padding, uneven padding, batches with a residual.
#[cfg(target_arch = "x86_64")]
#[test]
fn f32_tap_convolution_matches_an_f64_reference() {
    use super::bf16::taps::Taps;
    use crate::testing::{conv_at_f64, values};
    if !conv_taps::available() {
        eprintln!("no AVX-512 on this CPU: the f32 tap kernel is not run");
        return;
    }
    // (c, m, [kh, kw], [top, bottom, left, right], [n, h, w])
    for (c, m, [kh, kw], pads, [n, h, w]) in [
        (100, 103, [3, 3], [1, 1, 1, 1], [2, 13, 30]),
        (7, 5, [1, 1], [0, 0, 0, 0], [3, 7, 7]),
        (4, 6, [1, 1], [1, 1, 1, 1], [1, 4, 6]),
        (9, 13, [5, 5], [2, 2, 2, 2], [1, 5, 9]),
        (20, 7, [3, 3], [0, 2, 1, 0], [2, 6, 10]),
        (300, 12, [1, 1], [0, 0, 0, 0], [1, 14, 14]),
        (3, 1, [3, 3], [0, 0, 0, 0], [1, 9, 9]),
        // One pixel block, three output-channel groups: the groups split over tasks.
        (16, 200, [3, 3], [1, 1, 1, 1], [1, 4, 5]),
    ] {
        let taps = kh * kw;
        let x = values(n * c * h * w, (c * m) as u64);
        let wt = values(m * c * taps, (c + m) as u64);
        let bias = values(m, 7);
        let t = Taps::new(c, [h, w], [kh, kw], pads);
        let (oh, ow) = (t.oh, t.ow);
        let res = values(n * m * oh * ow, 11);
        let packed = conv_taps::Packed::new(&wt, m, c, taps);
        for with_res in [false, true] {
            let mut out = vec![MaybeUninit::new(f32::NAN); n * m * oh * ow];
            let r = with_res.then_some(&res[..]);
            // ReLU in registers; SiLU in a pass over the written rows.
            let ep = if with_res {
                Epilogue::Silu
            } else {
                Epilogue::Relu
            };
            conv_taps::conv(&packed, &x, n, &t, &mut out, Some(&bias), r, ep);
            let [pt, _, pl, _] = pads;
            for (i, out) in out.chunks_exact(m * oh * ow).enumerate() {
                let x = &x[i * c * h * w..][..c * h * w];
                for (at, got) in out.iter().enumerate() {
                    let (o, oy, ox) = (at / (oh * ow), at / ow % oh, at % ow);
                    let mut want = bias[o] as f64;
                    if with_res {
                        want += res[i * m * oh * ow + at] as f64;
                    }
                    want += conv_at_f64(x, &wt, [c, h, w], [kh, kw], [pt, pl], [o, oy, ox]);
                    // SAFETY: initialised (to NaN, which fails below, where not written).
                    let got = unsafe { got.assume_init() } as f64;
                    let want = match ep {
                        Epilogue::Silu => want / (1.0 + (-want).exp()),
                        _ => want.max(0.0),
                    };
                    let off = (got - want).abs();
                    assert!(
                        off < 1e-4 * (1.0 + want.abs()),
                        "c{c} m{m} {kh}x{kw} {pads:?} n{n} {h}x{w} res {with_res} \
                         at ({i}, {o}, {oy}, {ox}): {got} vs {want}"
                    );
                }
            }
        }
    }
    // A NaN in the image reaches every output whose window holds it, through ReLU, ReLU6
    // and the residual (PyTorch propagates NaN; `max(x, 0)` would turn it into 0).
    let t = Taps::new(2, [4, 5], [3, 3], [1; 4]);
    let mut x = values(2 * 4 * 5, 3);
    x[0] = f32::NAN;
    let packed = conv_taps::Packed::new(&values(3 * 2 * 9, 5), 3, 2, 9);
    for ep in [
        Epilogue::None,
        Epilogue::Relu,
        Epilogue::Relu6,
        Epilogue::Silu,
    ] {
        let mut out = vec![MaybeUninit::new(0f32); 3 * 4 * 5];
        let res = vec![1f32; 3 * 4 * 5];
        conv_taps::conv(&packed, &x, 1, &t, &mut out, None, Some(&res), ep);
        for (at, v) in out.iter().enumerate() {
            // SAFETY: initialised above.
            let v = unsafe { v.assume_init() };
            let near = at % 20 / 5 < 2 && at % 5 < 2;
            assert_eq!(v.is_nan(), near, "{ep:?} at {at}: {v}");
        }
    }
}

/// Squeeze-excite's kernel (one pass for the means, the gate in place) against Burn's
/// composition: the same gate function on Burn's two means, then Burn's product.
#[test]
fn squeeze_excite_matches_burn_ops() {
    let device = Device::flex();
    // Planes of 1, 7x7 (the tail of the 16-lane sum), 16x16, 13x29.
    for [n, c, h, w] in [[1, 3, 1, 1], [2, 5, 7, 7], [1, 4, 16, 16], [3, 2, 13, 29]] {
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.5, 1.0), &device);
        let gate = |s: Tensor<2>| burn::tensor::activation::sigmoid(s * 3.0 - 1.0);
        let means = x.clone().mean_dim(3).mean_dim(2).reshape([n, c]);
        let want = x.clone() * gate(means).reshape([n, c, 1, 1]);
        let got = squeeze_excite(x, gate).unwrap_or_else(|_| panic!("fallback"));
        assert!(max_abs_diff(got, want) < 1e-5, "{n}x{c}x{h}x{w}");
    }
}

/// `COMMITTEE_ISA` caps the instruction set the kernels choose, and the bf16 kernels with it
/// (how `scripts/test.sh` tests an AVX-512 host's narrower paths: under `avx2` and `base`
/// this process must not run an AVX-512 or bf16 kernel); an unknown value is ignored.
#[test]
fn committee_isa_caps_the_instruction_set() {
    assert_eq!(Isa::cap(Some("base")), Isa::Base);
    assert_eq!(Isa::cap(None), Isa::widest());
    assert_eq!(Isa::cap(Some("avx512")), Isa::widest());
    assert_eq!(Isa::cap(Some("sse9")), Isa::widest(), "unknown: ignored");
    #[cfg(target_arch = "x86_64")]
    assert_eq!(Isa::cap(Some("avx2")), Isa::Avx2);
    let bf16 = crate::cpu::bf16::Bf16Kernel::detect();
    match std::env::var("COMMITTEE_ISA").as_deref() {
        Ok("base") => {
            assert_eq!(Isa::get(), Isa::Base);
            assert_eq!(bf16, None, "a bf16 kernel under COMMITTEE_ISA=base");
        }
        Ok("avx2") => {
            assert!(Isa::get() <= Isa::cap(Some("avx2")), "{:?}", Isa::get());
            assert_eq!(bf16, None, "a bf16 kernel under COMMITTEE_ISA=avx2");
        }
        _ => assert_eq!(Isa::get(), Isa::detect()),
    }
}
