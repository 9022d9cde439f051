//! What the ops' tests share: comparisons of an op with Burn's, forward and backward.

use burn::nn::BatchNorm;
use burn::nn::BatchNormConfig;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Distribution, Tensor};

/// Largest absolute difference over max(1, largest |b|).
pub fn max_rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

/// `op`'s output and the gradients of input, weight and bias (when there is one) on a random
/// input of `shape` equal Burn's convolution's within `tol` of the largest value.
pub fn assert_conv_matches_burn(
    op: &dyn Fn(&Conv2d, Tensor<4>) -> Result<Tensor<4>, Tensor<4>>,
    conv: &Conv2d,
    shape: [usize; 4],
    tol: f32,
    what: &str,
) {
    let dev = conv.weight.val().device();
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let ours = op(conv, x.clone()).unwrap_or_else(|_| panic!("applies: {what}"));
    let burn = conv.forward(x.clone());
    assert_eq!(ours.dims(), burn.dims(), "{what}");
    let d = max_rel_diff(ours.clone().inner(), burn.clone().inner());
    assert!(d < tol, "output {what}: {d}");
    // A weighted sum, so every output pixel's gradient differs.
    let wts = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &dev);
    let g_ours = (ours * wts.clone()).sum().backward();
    let g_burn = (burn * wts).sum().backward();
    let dx = max_rel_diff(
        x.grad(&g_ours).expect("dx").reshape(shape),
        x.grad(&g_burn).expect("dx").reshape(shape),
    );
    assert!(dx < tol, "input grad {what}: {dx}");
    let dw = max_rel_diff(
        conv.weight.val().grad(&g_ours).expect("dw"),
        conv.weight.val().grad(&g_burn).expect("dw"),
    );
    assert!(dw < tol, "weight grad {what}: {dw}");
    if let Some(bias) = &conv.bias {
        let [o] = bias.dims();
        let db = max_rel_diff(
            bias.val().grad(&g_ours).expect("db").reshape([1, 1, 1, o]),
            bias.val().grad(&g_burn).expect("db").reshape([1, 1, 1, o]),
        );
        assert!(db < tol, "bias grad {what}: {db}");
    }
}

/// A training BatchNorm with non-trivial gamma and beta (eps 1e-3) and an input of `shape`
/// offset far from zero, both on `dev` (an autodiff device).
pub fn batch_norm_case(shape: [usize; 4], dev: &Device) -> (BatchNorm, Tensor<4>) {
    let c = shape[1];
    let bn = BatchNormConfig::new(c).with_epsilon(1e-3).init(dev);
    let leaf = |d| burn::module::Param::from_tensor(Tensor::<1>::random([c], d, dev));
    let bn = BatchNorm {
        gamma: leaf(Distribution::Uniform(0.5, 1.5)),
        beta: leaf(Distribution::Normal(0.0, 1.0)),
        ..bn
    };
    let x = (Tensor::<4>::random(shape, Distribution::Normal(0.0, 2.0), dev) + 3.0).require_grad();
    (bn, x)
}

/// `ours` (output, batch mean, population variance of `bn` on `x`) equals Burn's
/// `batch_norm_train` followed by `act`: statistics and output within 1e-5, the input's
/// gradient within 1e-4, gamma's and beta's within `param_tol`.
pub fn assert_batch_norm_matches_burn(
    bn: &BatchNorm,
    x: Tensor<4>,
    (ours, mean, var): (Tensor<4>, Tensor<1>, Tensor<1>),
    act: impl Fn(Tensor<4>) -> Tensor<4>,
    param_tol: f32,
    what: &str,
) {
    let shape = x.dims();
    let c = shape[1];
    let mut r = burn::tensor::module::batch_norm_train(
        x.clone(),
        bn.gamma.val(),
        bn.beta.val(),
        bn.epsilon,
    );
    r.output = act(r.output);
    let close = |a: Tensor<1>, b: Tensor<1>| {
        max_rel_diff(
            a.reshape([1, 1, 1, c]).inner(),
            b.reshape([1, 1, 1, c]).inner(),
        )
    };
    assert!(close(mean, r.mean.clone()) < 1e-5, "mean {what}");
    assert!(close(var, r.variance.clone()) < 1e-5, "variance {what}");
    let d = max_rel_diff(ours.clone().inner(), r.output.clone().inner());
    assert!(d < 1e-5, "output {what}: {d}");
    let wts = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &x.device());
    let g_ours = (ours * wts.clone()).sum().backward();
    let g_burn = (r.output * wts).sum().backward();
    let dx = max_rel_diff(
        x.grad(&g_ours).expect("dx").reshape(shape),
        x.grad(&g_burn).expect("dx").reshape(shape),
    );
    assert!(dx < 1e-4, "input grad {what}: {dx}");
    for (name, p) in [("gamma", bn.gamma.val()), ("beta", bn.beta.val())] {
        let a = p.grad(&g_ours).expect("grad").reshape([1, 1, 1, c]);
        let b = p.grad(&g_burn).expect("grad").reshape([1, 1, 1, c]);
        let e = max_rel_diff(a, b);
        assert!(e < param_tol, "{name} grad {what}: {e}");
    }
}

/// Deterministic values in [-2, 2) with every mantissa bit in play.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// One output of a stride-1 convolution in f64: channel `o` at `(oy, ox)` of `w`
/// (`[m, c, kh, kw]`) over the image `x` (`[c, h, wd]`) padded `pt` rows above and `pl`
/// columns to the left (zeros outside), no bias.
pub fn conv_at_f64(
    x: &[f32],
    w: &[f32],
    [c, h, wd]: [usize; 3],
    [kh, kw]: [usize; 2],
    [pt, pl]: [usize; 2],
    [o, oy, ox]: [usize; 3],
) -> f64 {
    let taps = kh * kw;
    let mut sum = 0f64;
    for ch in 0..c {
        for tap in 0..taps {
            let iy = (oy + tap / kw) as isize - pt as isize;
            let ix = (ox + tap % kw) as isize - pl as isize;
            if (0..h as isize).contains(&iy) && (0..wd as isize).contains(&ix) {
                sum += w[(o * c + ch) * taps + tap] as f64
                    * x[(ch * h + iy as usize) * wd + ix as usize] as f64;
            }
        }
    }
    sum
}
