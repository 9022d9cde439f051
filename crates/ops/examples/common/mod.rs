//! What the convolution probes share.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Distribution, Tensor};

/// A `k x k` convolution `c -> m` at stride `s`, padded by `(k - 1) / 2` on every side, a
/// random input `[n, c, hw, hw]`, and the multiply-adds of one call.
pub fn conv_case(
    device: &Device,
    n: usize,
    [c, m, k, s, hw]: [usize; 5],
) -> (Conv2d, Tensor<4>, f64) {
    let p = (k - 1) / 2;
    let conv = Conv2dConfig::new([c, m], [k, k])
        .with_stride([s, s])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device);
    let x = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.0, 1.0), device);
    let o = (hw + 2 * p - k) / s + 1;
    (conv, x, (n * m * c * k * k * o * o) as f64)
}

/// One line: the case, then each of the two paths' fastest time (seconds in `best`) and rate
/// for `macs` multiply-adds, then how much faster the second ran.
pub fn report(case: &str, names: [&str; 2], best: [f64; 2], macs: f64) {
    let side = |i: usize| {
        format!(
            "{} {:7.3} ms ({:5.1} GMAC/s)",
            names[i],
            best[i] * 1e3,
            macs / best[i] / 1e9
        )
    };
    println!(
        "{case}: {}  {}  {}/{} speed {:.2}x",
        side(0),
        side(1),
        names[1],
        names[0],
        best[0] / best[1]
    );
}
