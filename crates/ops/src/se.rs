//! Squeeze-and-excitation: which implementation runs it, in one place.

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

use crate::act::Act;
use crate::{conv2d, cpu, profile};

/// `x * sigmoid(expand(act(reduce(mean(x)))))`, the mean over each channel's plane, as one
/// profile span: committee's kernel on flex (one pass for the means, the gate applied in
/// place), in training on flex committee's ops with their own backward (`cpu::train`), else
/// Burn's ops.
pub fn squeeze_excite(x: Tensor<4>, reduce: &Conv2d, expand: &Conv2d, act: Act) -> Tensor<4> {
    profile::layer("squeeze-excite", x, |x| {
        let [n, c, _, _] = x.dims();
        // The planes' means `[n, c]` to the gate's factors `[n, c]`.
        let gate = |m: Tensor<2>| {
            let s = conv2d(reduce, m.reshape([n, c, 1, 1]));
            sigmoid(conv2d(expand, act.apply(s))).reshape([n, c])
        };
        let x = match cpu::squeeze_excite(x, gate) {
            Ok(y) => return y,
            Err(x) => x,
        };
        match cpu::train::squeeze_excite(x, gate) {
            Ok(y) => y,
            Err(x) => {
                let m = x.clone().mean_dim(3).mean_dim(2).reshape([n, c]);
                x * gate(m).reshape([n, c, 1, 1])
            }
        }
    })
}
