//! Convolution: which implementation runs a `Conv2d`, in one place.
//!
//! In order: committee's CPU kernels for inference on flex (depthwise, or dense as matrix
//! products, with the activation fused); on GPU devices the matrix-product form of 1x1 and
//! patch convolutions and the other dense ones as products over the unfolded image (`gpu`,
//! inference and training); in training on flex the ops with their own backward
//! (`cpu::train`); else Burn's convolution.

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use crate::act::Act;
use crate::{cpu, gpu, profile};

/// `conv(x)`, unprofiled: for convolutions inside a span of their own (squeeze-excite).
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let x = match gpu::conv_as_matmul(conv, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let x = match gpu::conv_im2col(conv, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let x = match cpu::train::conv2d(conv, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    conv.forward(x)
}

/// `act(conv(x))` as one profile span with the layer's multiply-accumulates; on flex the
/// CPU kernels apply `act` to each output row while it is still in cache.
pub fn conv2d_act(conv: &Conv2d, x: Tensor<4>, act: Option<Act>) -> Tensor<4> {
    profile::conv_with(conv, x, |x| match fused(conv, x, act) {
        Ok(y) => y,
        Err(x) => {
            let y = conv2d(conv, x);
            match act {
                Some(a) => a.apply(y),
                None => y,
            }
        }
    })
}

/// `act(conv(x) + residual)` as one profile span (a residual block's last convolution, its
/// shortcut and activation); on flex the dense kernel adds `residual` and applies `act` as it
/// writes the output, where apart they would be two more passes over it.
pub fn conv2d_add_act(
    conv: &Conv2d,
    x: Tensor<4>,
    residual: Tensor<4>,
    act: Option<Act>,
) -> Tensor<4> {
    profile::conv_with(conv, x, |x| {
        let ep = act.map_or(cpu::Epilogue::None, Act::epilogue);
        match cpu::conv_gemm_add(conv, x, Some(&residual), ep) {
            Ok(y) => y,
            Err(x) => {
                let y = crate::residual_add(conv2d(conv, x), residual);
                match act {
                    Some(a) => a.apply(y),
                    None => y,
                }
            }
        }
    })
}

/// The CPU inference kernels (depthwise, else dense as a matrix product) with `act` fused;
/// `Err(x)` hands the input back when neither applies.
fn fused(conv: &Conv2d, x: Tensor<4>, act: Option<Act>) -> Result<Tensor<4>, Tensor<4>> {
    let ep = act.map_or(cpu::Epilogue::None, Act::epilogue);
    let x = match cpu::depthwise(conv, x, ep) {
        Ok(y) => return Ok(y),
        Err(x) => x,
    };
    cpu::conv_gemm(conv, x, ep)
}
