//! The training ops against Burn's autodiff.

use super::*;
use crate::act::Act;
use crate::cpu::bf16::{Bf16Kernel, from_bf16, to_bf16};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::Distribution;

use crate::testing::{
    assert_batch_norm_matches_burn, assert_conv_matches_burn, batch_norm_case, max_rel_diff,
};

type ConvOp = fn(&Conv2d, Tensor<4>) -> Result<Tensor<4>, Tensor<4>>;

/// `op`'s output, input gradient and weight gradient on a random input of `shape` equal
/// Burn's conv's within 1e-5 of the largest value.
fn assert_matches_burn(op: ConvOp, conv: &Conv2d, shape: [usize; 4], what: &str) {
    assert_conv_matches_burn(&op, conv, shape, 1e-5, what);
}

/// Output, input gradient and weight gradient equal Burn's conv's (its generic grouped
/// backward), for the strides, kernels and paddings timm's models use, including TF's
/// asymmetric SAME and maps smaller than the kernel.
#[test]
fn depthwise_training_matches_burns_conv() {
    let dev = Device::flex().autodiff();
    let cases = [
        // (channels, k, stride, padding, h, w)
        (8, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 7),
        (8, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 8),
        (6, 5, 1, PaddingConfig2d::Explicit(2, 2, 2, 2), 7, 7),
        (6, 5, 2, PaddingConfig2d::Explicit(2, 2, 2, 2), 11, 10),
        (5, 3, 2, PaddingConfig2d::Same, 8, 9),
        (5, 5, 2, PaddingConfig2d::Same, 7, 6),
        // More channels and columns than a 16x16 transpose tile, partial tiles both ways.
        (20, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 18, 19),
        (18, 3, 2, PaddingConfig2d::Same, 17, 34),
        (4, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 1, 1),
        (4, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 2, 2),
        (4, 5, 1, PaddingConfig2d::Explicit(2, 2, 2, 2), 2, 3),
        (4, 3, 2, PaddingConfig2d::Valid, 8, 9),
        // Stride 1 on rows of 48 or more outputs: plane by plane (`depthwise::planes`),
        // kernels 3, 5 and 7, no padding, TF's SAME, a row of exactly 48.
        (6, 5, 1, PaddingConfig2d::Explicit(2, 2, 2, 2), 5, 50),
        (4, 3, 1, PaddingConfig2d::Valid, 4, 51),
        (5, 3, 1, PaddingConfig2d::Same, 3, 48),
        (3, 7, 1, PaddingConfig2d::Explicit(3, 3, 3, 3), 4, 53),
        // Stride 2 on rows of 48 or more outputs: plane by plane, the gradients by phases
        // (`depthwise_s2`): kernels 3, 5 and 7, odd and even rows and columns, TF's SAME
        // (no padding before), none.
        (4, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 5, 100),
        (3, 5, 2, PaddingConfig2d::Same, 6, 101),
        (4, 3, 2, PaddingConfig2d::Same, 4, 104),
        (4, 3, 2, PaddingConfig2d::Valid, 5, 101),
        (3, 7, 2, PaddingConfig2d::Explicit(3, 3, 3, 3), 7, 103),
        (2, 5, 2, PaddingConfig2d::Explicit(2, 2, 2, 2), 6, 99),
        (3, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 7, 97),
    ];
    for (c, k, s, pad, h, w) in cases {
        let conv = Conv2dConfig::new([c, c], [k, k])
            .with_stride([s, s])
            .with_groups(c)
            .with_padding(pad.clone())
            .with_bias(false)
            .init(&dev);
        let what = format!("c {c} k {k} s {s} {pad:?} {h}x{w}");
        assert_matches_burn(depthwise, &conv, [3, c, h, w], &what);
    }
}

/// An empty batch gives an empty output and a zero weight gradient of the weight's shape, on
/// both depthwise paths (channels-last, and plane by plane on wide rows).
#[test]
fn depthwise_training_takes_an_empty_batch() {
    let dev = Device::flex().autodiff();
    for w in [9, 50] {
        let conv = Conv2dConfig::new([4, 4], [3, 3])
            .with_groups(4)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&dev);
        let x = Tensor::<4>::zeros([0, 4, 5, w], &dev).require_grad();
        let y = depthwise(&conv, x.clone()).expect("applies");
        assert_eq!(y.dims(), [0, 4, 5, w]);
        let g = y.sum().backward();
        let dw = conv.weight.val().grad(&g).expect("dw");
        assert_eq!(dw.dims(), [4, 1, 3, 3]);
        assert!(dw.into_data().iter::<f32>().all(|v| v == 0.0), "w {w}");
    }
}

/// The 1x1 op's output and gradients equal Burn's conv's, on maps down to 1x1 and up to
/// the weight gradient's dot products (`wgrad`).
#[test]
fn pointwise_training_matches_burns_conv() {
    let dev = Device::flex().autodiff();
    for (c_in, c_out, h, w, pad) in [
        (8, 24, 5, 7, PaddingConfig2d::Valid),
        (24, 8, 1, 1, PaddingConfig2d::Same),
        (16, 16, 3, 2, PaddingConfig2d::Explicit(0, 0, 0, 0)),
        // 28x28 pixels or more: the f32 weight gradient as dot products on AVX-512.
        (13, 37, 28, 29, PaddingConfig2d::Valid),
        // Outputs in blocks of 64 on a small map: the weight gradient as outer products over
        // the batch's pixels on AVX-512 (`direct_wgrad`).
        (70, 64, 7, 7, PaddingConfig2d::Valid),
    ] {
        let conv = Conv2dConfig::new([c_in, c_out], [1, 1])
            .with_padding(pad)
            .with_bias(false)
            .init(&dev);
        assert_matches_burn(
            pointwise,
            &conv,
            [3, c_in, h, w],
            &format!("{c_in}->{c_out} {h}x{w}"),
        );
    }
}

/// Training BatchNorm: output, batch statistics and the gradients of x, gamma and beta
/// equal Burn's `batch_norm_train`'s (differentiated op by op), down to 1x1 maps; with an
/// activation fused in, equal Burn's BatchNorm followed by Burn's activation.
#[test]
fn batch_norm_training_matches_burn() {
    let dev = Device::flex().autodiff();
    use burn::tensor::activation::{relu, relu6, silu};
    type BurnAct = fn(Tensor<4>) -> Tensor<4>;
    let acts: [(Option<Act>, BurnAct); 4] = [
        (None, |x| x),
        (Some(Act::Relu), relu),
        (Some(Act::Relu6), relu6),
        (Some(Act::Silu), silu),
    ];
    for ((n, c, h, w), (act, burn_act)) in [(4, 6, 5, 3), (8, 5, 1, 1), (2, 3, 7, 7)]
        .into_iter()
        .flat_map(|s| acts.map(|a| (s, a)))
    {
        let (bn, x) = batch_norm_case([n, c, h, w], &dev);
        let ours = batch_norm(&bn, x.clone(), act).expect("kernel applies");
        let what = format!("{n}x{c}x{h}x{w} {act:?}");
        assert_batch_norm_matches_burn(&bn, x, ours, burn_act, 1e-5, &what);
    }
}

/// BatchNorm with its passes per channel in one task (forward: statistics and output;
/// backward: sums and input gradient) gives the bits of each pass over all channels one after
/// the other, with and without a fused ReLU6.
#[test]
fn batch_norm_per_channel_keeps_the_bits() {
    let dev = Device::flex().autodiff();
    let (bn, x) = batch_norm_case([3, 5, 9, 7], &dev);
    let wts = Tensor::<4>::random([3, 5, 9, 7], Distribution::Normal(0.0, 1.0), &dev);
    for act in [None, Some(Act::Relu6)] {
        let grads = |fused: bool| {
            norm::set_per_channel(fused);
            let (y, mean, var) = batch_norm(&bn, x.clone(), act).expect("kernel applies");
            let stats = (mean.into_data(), var.into_data(), y.clone().into_data());
            let g = (y * wts.clone()).sum().backward();
            let d = |t: Option<Tensor<1>>| t.expect("grad").into_data();
            let dx = x.grad(&g).expect("dx").into_data();
            (
                stats,
                dx,
                d(bn.gamma.val().grad(&g)),
                d(bn.beta.val().grad(&g)),
            )
        };
        let (unfused, fused) = (grads(false), grads(true));
        assert_eq!(unfused, fused, "{act:?}");
    }
}

/// ReLU's and ReLU6's slopes found again from BatchNorm's input give the bits of the slopes
/// kept from the forward, with the passes per channel or not, on random channels and on
/// channels that sit exactly on a kink (gamma 0, beta 0 or 6: z is beta itself); there the
/// slope is PyTorch's 0, so beta's gradient (the sum of `dy * slope`) is 0.
#[test]
fn batch_norm_slopes_from_the_input_keep_the_bits() {
    let dev = Device::flex().autodiff();
    let (bn, x) = batch_norm_case([3, 6, 5, 7], &dev);
    let leaf = |v: [f32; 6]| {
        burn::module::Param::from_tensor(Tensor::<1>::from_data(TensorData::from(v), &dev))
    };
    let bn = BatchNorm {
        gamma: leaf([1.3, 0.0, 0.7, 0.0, 0.0, 1.1]),
        beta: leaf([0.2, 0.0, -0.4, 6.0, 6.0, 5.0]),
        ..bn
    };
    let wts = Tensor::<4>::random([3, 6, 5, 7], Distribution::Normal(0.0, 1.0), &dev);
    for (act, per_channel) in [Act::Relu, Act::Relu6]
        .into_iter()
        .flat_map(|a| [(a, true), (a, false)])
    {
        let run = |from_input: bool| {
            norm::set_slope_from_input(from_input);
            norm::set_per_channel(per_channel);
            let (y, mean, var) = batch_norm(&bn, x.clone(), Some(act)).expect("kernel applies");
            let stats = (mean.into_data(), var.into_data(), y.clone().into_data());
            let g = (y * wts.clone()).sum().backward();
            let d = |t: Option<Tensor<1>>| t.expect("grad").into_data();
            let dx = x.grad(&g).expect("dx").into_data();
            let beta = d(bn.beta.val().grad(&g));
            (stats, dx, d(bn.gamma.val().grad(&g)), beta)
        };
        let (kept, found) = (run(false), run(true));
        norm::set_slope_from_input(true);
        norm::set_per_channel(true);
        assert_eq!(kept, found, "{act:?}, per channel {per_channel}");
        let dbeta = found.3.try_to_vec::<f32>().expect("f32");
        // Channel 1 (z = 0) for both; channels 3 and 4 (z = 6) for ReLU6 only.
        assert_eq!(dbeta[1], 0.0, "{act:?}: slope at 0");
        if act == Act::Relu6 {
            assert_eq!((dbeta[3], dbeta[4]), (0.0, 0.0), "slope at 6");
        } else {
            assert_ne!(dbeta[3], 0.0, "ReLU's slope at 6");
        }
    }
}

/// A residual block's end as one op, `act(bn(x) + r)`, gives the bits of BatchNorm, Burn's sum
/// and the activation apart (each of which matches Burn's own), and Burn's composition within
/// rounding: output and the gradients of x, r, gamma and beta, for ReLU, ReLU6 and
/// none, passes per channel or not. Channels 1 and 3 sit on the kinks (gamma 0, so the sum is
/// beta + r exactly 0, and 6): the slope there is PyTorch's 0, so r's gradient is 0.
#[test]
fn batch_norm_with_a_residual_matches_the_ops_apart() {
    let dev = Device::flex().autodiff();
    let shape = [3, 5, 4, 6];
    let (bn, x) = batch_norm_case(shape, &dev);
    let leaf = |v: [f32; 5]| {
        burn::module::Param::from_tensor(Tensor::<1>::from_data(TensorData::from(v), &dev))
    };
    let bn = BatchNorm {
        gamma: leaf([1.3, 0.0, 0.7, 0.0, 1.1]),
        beta: leaf([0.2, 0.5, -0.4, 2.5, 5.0]),
        ..bn
    };
    let hw = shape[2] * shape[3];
    let mut r = crate::testing::values(shape.iter().product(), 7);
    for (p, plane) in r.chunks_exact_mut(hw).enumerate() {
        match p % shape[1] {
            1 => plane.fill(-0.5),
            3 => plane.fill(3.5),
            _ => {}
        }
    }
    let r = Tensor::<4>::from_data(TensorData::new(r, shape), &dev).require_grad();
    let wts = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
    let acts = [Some(Act::Relu), Some(Act::Relu6), None];
    for (act, per_channel) in acts.into_iter().flat_map(|a| [(a, true), (a, false)]) {
        let what = format!("{act:?}, per channel {per_channel}");
        let run = |fused: bool| {
            norm::set_residual(fused);
            norm::set_per_channel(per_channel);
            let y = crate::norm::batch_norm_add_act(&bn, x.clone(), r.clone(), act);
            let g = (y.clone() * wts.clone()).sum().backward();
            let d = |t: Option<Tensor<1>>| t.expect("grad").into_data();
            let grads = (
                x.grad(&g).expect("dx").into_data(),
                r.grad(&g).expect("dr").into_data(),
                d(bn.gamma.val().grad(&g)),
                d(bn.beta.val().grad(&g)),
            );
            (y.into_data(), grads)
        };
        let (apart, fused) = (run(false), run(true));
        norm::set_residual(true);
        norm::set_per_channel(true);
        assert_eq!(apart, fused, "{what}");
        // Burn's composition: batch_norm_train, the sum, Burn's ReLU, or ReLU6 with PyTorch's
        // slopes (Burn's clamp lets the gradient through at 0 and 6) from Burn's ops.
        let z = burn::tensor::module::batch_norm_train(
            x.clone(),
            bn.gamma.val(),
            bn.beta.val(),
            bn.epsilon,
        )
        .output
            + r.clone();
        let z = match act {
            Some(Act::Relu) => burn::tensor::activation::relu(z),
            Some(_) => {
                let v = z.clone().inner();
                let inside = v
                    .clone()
                    .greater_elem(0.0)
                    .bool_and(v.clone().lower_elem(6.0));
                let six = v.greater_equal_elem(6.0).float() * 6.0;
                z * Tensor::from_inner(inside.float()) + Tensor::from_inner(six)
            }
            None => z,
        };
        let burn = z.clone().into_data();
        let g = (z * wts.clone()).sum().backward();
        let close =
            |a: TensorData, b: Tensor<4>| max_rel_diff(Tensor::<4>::from_data(a, &b.device()), b);
        assert!(
            close(fused.0.clone(), Tensor::from_data(burn, &dev)) < 1e-5,
            "{what}"
        );
        let dx = close(fused.1.0.clone(), x.grad(&g).expect("dx").reshape(shape));
        let dr = close(fused.1.1.clone(), r.grad(&g).expect("dr").reshape(shape));
        assert!(dx < 1e-4 && dr < 1e-5, "{what}: dx {dx}, dr {dr}");
        if act.is_some() {
            let dr = fused.1.1.try_to_vec::<f32>().expect("f32");
            let at_kink = |ch: usize| dr.chunks_exact(hw).skip(ch).step_by(shape[1]).flatten();
            assert!(at_kink(1).all(|&v| v == 0.0), "{what}: slope at 0");
            let six = at_kink(3).all(|&v| v == 0.0);
            assert_eq!(six, act == Some(Act::Relu6), "{what}: slope at 6");
        }
    }
}

/// Squeeze-and-excitation in training (the planes' means and the gate's scaling as ops of their
/// own): output and the gradients of the input and of both gate convolutions' weights and
/// biases equal Burn's `mean_dim` and broadcast product, on a map narrower than a vector's 16
/// lanes and one wider (the lanes' tail), with an input that also flows around the block.
#[test]
fn squeeze_excite_training_matches_burn() {
    let dev = Device::flex().autodiff();
    for shape in [[2, 6, 3, 4], [3, 5, 7, 9]] {
        let [n, c, _, _] = shape;
        let conv = |i, o| {
            let conv = Conv2dConfig::new([i, o], [1, 1]).init(&dev);
            Conv2d {
                weight: burn::module::Param::from_tensor(conv.weight.val().require_grad()),
                bias: conv
                    .bias
                    .map(|b| burn::module::Param::from_tensor(b.val().require_grad())),
                ..conv
            }
        };
        let (reduce, expand) = (conv(c, 3), conv(3, c));
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.5, 1.0), &dev).require_grad();
        let wts = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        let run = |ours: bool| {
            se::set_squeeze_excite(ours);
            let gate = |m: Tensor<2>| {
                let s = crate::conv2d(&reduce, m.reshape([n, c, 1, 1]));
                let s = crate::conv2d(&expand, Act::Silu.apply(s));
                burn::tensor::activation::sigmoid(s).reshape([n, c])
            };
            let y = match ours {
                true => squeeze_excite(x.clone(), gate).expect("op applies"),
                false => {
                    let m = x.clone().mean_dim(3).mean_dim(2).reshape([n, c]);
                    x.clone() * gate(m).reshape([n, c, 1, 1])
                }
            };
            // The input also goes around the block, as into a residual sum.
            let g = ((y.clone() + x.clone()) * wts.clone()).sum().backward();
            let grads = [&reduce, &expand].map(|cv| {
                let w = cv.weight.val().grad(&g).expect("dw");
                let b = cv.bias.as_ref().expect("bias").val().grad(&g).expect("db");
                (w, b)
            });
            (y, x.grad(&g).expect("dx"), grads)
        };
        let (burn, ours) = (run(false), run(true));
        se::set_squeeze_excite(true);
        let what = format!("{shape:?}");
        let d = max_rel_diff(ours.0.inner(), burn.0.inner());
        assert!(d < 1e-5, "output {what}: {d}");
        let dx = max_rel_diff(ours.1, burn.1);
        assert!(dx < 1e-5, "dx {what}: {dx}");
        for (i, ((wo, bo), (wb, bb))) in ours.2.into_iter().zip(burn.2).enumerate() {
            let (dw, db) = (max_rel_diff(wo, wb), max_rel_diff(bo, bb));
            assert!(dw < 1e-5 && db < 1e-5, "conv {i} {what}: dw {dw}, db {db}");
        }
    }
}

/// Dense convolutions (3x3, ResNet's 7x7 stem, strided 1x1 shortcut, TF's SAME stem, one
/// input channel, stride-1 maps read at tap offsets or computed directly): output and
/// gradients equal Burn's.
#[test]
fn dense_training_matches_burns_conv() {
    let dev = Device::flex().autodiff();
    for (c_in, c_out, k, s, pad, h, w) in [
        (4, 6, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 7, 6),
        (5, 8, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 8),
        (3, 4, 7, 2, PaddingConfig2d::Explicit(3, 3, 3, 3), 12, 11),
        (6, 10, 1, 2, PaddingConfig2d::Valid, 7, 8),
        (3, 5, 3, 2, PaddingConfig2d::Same, 10, 9),
        (1, 8, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 2, 2),
        (64, 64, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 16, 16),
        // Stride 1 on 28x28 outputs or more: read at tap offsets on AVX-512
        // (`Dense::tap_grids`), the input gradient through the flipped kernel.
        (6, 10, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 28, 29),
        (5, 6, 3, 1, PaddingConfig2d::Explicit(2, 0, 1, 2), 28, 29),
        (4, 5, 5, 1, PaddingConfig2d::Explicit(2, 2, 2, 2), 28, 28),
        (3, 7, 3, 1, PaddingConfig2d::Valid, 31, 30),
        // Strided, on 28x28 outputs or more: the weight gradient over the stride phases.
        (5, 6, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 56, 57),
        (3, 4, 7, 2, PaddingConfig2d::Explicit(3, 3, 3, 3), 56, 58),
        // Stride 1 on rows of 7 or of a multiple of 14 (channels in blocks of 16 and 32):
        // the direct kernel on AVX-512 (`Dense::direct`), forward and input gradient; two
        // rows per tile and a last one alone, padding on one side only.
        (32, 32, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 7, 7),
        (32, 64, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 14, 14),
        (32, 32, 3, 1, PaddingConfig2d::Explicit(2, 0, 0, 2), 14, 14),
        (16, 32, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 28, 28),
        // Stride 1 under 28x28, outputs in blocks of 64: the weight gradient as outer
        // products over the batch's pixels on AVX-512 (`direct_wgrad`; also the 64->64 and
        // 32->64 cases above); input channels not in tiles of 6, uneven padding.
        (13, 128, 3, 1, PaddingConfig2d::Explicit(2, 0, 1, 0), 5, 9),
        // The same at stride 2: ResNet's downsampling 3x3 and 1x1 shortcut.
        (16, 64, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 13, 14),
        (66, 64, 1, 2, PaddingConfig2d::Valid, 9, 10),
    ] {
        let conv = Conv2dConfig::new([c_in, c_out], [k, k])
            .with_stride([s, s])
            .with_padding(pad.clone())
            .with_bias(false)
            .init(&dev);
        let what = format!("{c_in}->{c_out} k {k} s {s} {pad:?} {h}x{w}");
        assert_matches_burn(dense, &conv, [8, c_in, h, w], &what);
    }
}

/// A ResNet basic block (conv, BN, ReLU, conv, BN, + shortcut, ReLU) built from these ops
/// has the gradients of the same block built from Burn's.
#[test]
fn basic_block_matches_burn() {
    use burn::nn::BatchNormConfig;
    let dev = Device::flex().autodiff();
    let c = 8;
    let conv = || {
        Conv2dConfig::new([c, c], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&dev)
    };
    let (c1, c2) = (conv(), conv());
    let (b1, b2) = (
        BatchNormConfig::new(c).init(&dev),
        BatchNormConfig::new(c).init(&dev),
    );
    let x0 = Tensor::<4>::random([4, c, 6, 6], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let block = |ours: bool| {
        let x = burn::tensor::activation::relu(x0.clone() * 2.0);
        let cv = |conv: &Conv2d, x: Tensor<4>| {
            if ours {
                dense(conv, x).expect("applies")
            } else {
                conv.forward(x)
            }
        };
        let bn = |b: &BatchNorm, x: Tensor<4>| {
            if ours {
                batch_norm(b, x, None).expect("applies").0
            } else {
                burn::tensor::module::batch_norm_train(x, b.gamma.val(), b.beta.val(), b.epsilon)
                    .output
            }
        };
        let y = burn::tensor::activation::relu(bn(&b1, cv(&c1, x.clone())));
        let y = burn::tensor::activation::relu(bn(&b2, cv(&c2, y)) + x);
        let wts = Tensor::<4>::ones([4, c, 6, 6], &dev);
        let g = (y * wts).sum().backward();
        (
            x0.grad(&g).expect("dx").into_data(),
            c1.weight.val().grad(&g).expect("w1").into_data(),
            b1.beta.val().grad(&g).expect("b1").into_data(),
        )
    };
    let (ours, burn) = (block(true), block(false));
    let rel = |a: &burn::tensor::TensorData, b: &burn::tensor::TensorData| {
        let (a, b) = (
            a.try_to_vec::<f32>().expect("f32"),
            b.try_to_vec::<f32>().expect("f32"),
        );
        let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(&b)
            .fold(0f32, |d, (p, q)| d.max((p - q).abs()))
            / m
    };
    let r = [
        rel(&ours.0, &burn.0),
        rel(&ours.1, &burn.1),
        rel(&ours.2, &burn.2),
    ];
    assert!(
        r.iter().all(|&r| r < 1e-5),
        "dx, conv1 dw, bn1 dbeta: {r:?}"
    );
}

/// The gradients are the same bits with 1 and 3 threads (the weight gradient is summed in
/// image order), so training stays reproducible.
#[test]
fn gradients_do_not_depend_on_threads() {
    let dev = Device::flex().autodiff();
    let conv = Conv2dConfig::new([16, 16], [3, 3])
        .with_stride([2, 2])
        .with_groups(16)
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&dev);
    // Stride 1 on 50 columns: the plane-by-plane depthwise path.
    let planes = Conv2dConfig::new([16, 16], [3, 3])
        .with_groups(16)
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&dev);
    let (pw, dn) = pointwise_and_dense(&dev);
    let cases = [
        (depthwise as ConvOp, &conv, [9, 16, 13, 13]),
        (depthwise, &planes, [9, 16, 5, 50]),
        (pointwise, &pw, [9, 16, 13, 13]),
        (dense, &dn, [9, 16, 13, 13]),
        // Read at tap offsets, weight gradients as dot products (on AVX-512).
        (dense, &dn, [3, 16, 29, 28]),
        (pointwise, &pw, [3, 16, 29, 28]),
    ];
    for (op, conv, shape) in cases {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        let (dx1, dw1) = grads_on_threads(&op, conv, &x, 1);
        let (dx3, dw3) = grads_on_threads(&op, conv, &x, 3);
        assert_eq!(dx1, dx3);
        assert_eq!(dw1, dw3);
    }
}

/// A 1x1 convolution 16 -> 40 and a 3x3 one 16 -> 24 (padded), bias-free: the thread-count
/// tests' layers.
fn pointwise_and_dense(dev: &Device) -> (Conv2d, Conv2d) {
    let pw = Conv2dConfig::new([16, 40], [1, 1])
        .with_bias(false)
        .init(dev);
    let dn = Conv2dConfig::new([16, 24], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(dev);
    (pw, dn)
}

/// `f()` on a rayon pool of `threads` threads (the ops split their work over the pool).
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    pool.install(f)
}

/// The input and weight gradients of `sum(op(x)^2)`, computed on a pool of `threads`.
fn grads_on_threads(
    op: &(dyn Fn(&Conv2d, Tensor<4>) -> Result<Tensor<4>, Tensor<4>> + Sync),
    conv: &Conv2d,
    x: &Tensor<4>,
    threads: usize,
) -> (TensorData, TensorData) {
    on_threads(threads, || {
        let x = x.clone().require_grad();
        let y = op(conv, x.clone()).expect("kernel applies");
        let g = (y.clone() * y).sum().backward();
        let dx = x.grad(&g).expect("dx").into_data();
        let dw = conv.weight.val().grad(&g).expect("dw").into_data();
        (dx, dw)
    })
}

/// Layers the op does not handle go back untouched: with bias, dense, outside autodiff.
#[test]
fn other_convolutions_are_handed_back() {
    let ad = Device::flex().autodiff();
    let x = Tensor::<4>::ones([1, 4, 5, 5], &ad);
    let biased = Conv2dConfig::new([4, 4], [3, 3]).with_groups(4).init(&ad);
    assert!(depthwise(&biased, x.clone()).is_err());
    let dense = Conv2dConfig::new([4, 4], [3, 3]).with_bias(false).init(&ad);
    assert!(depthwise(&dense, x).is_err());
    let plain = Device::flex();
    let conv = Conv2dConfig::new([4, 4], [3, 3])
        .with_groups(4)
        .with_bias(false)
        .init(&plain);
    assert!(depthwise(&conv, Tensor::<4>::ones([1, 4, 5, 5], &plain)).is_err());
}

/// `ours` and `burn`, each a function of the same leaf `x`, agree in value and in the gradients
/// of a random weighted sum with respect to `x` and to each of `params` (within `tol` of the
/// largest value).
fn assert_grads_match<const D: usize>(
    what: &str,
    x: &Tensor<D>,
    params: &[(&str, Tensor<1>)],
    ours: Tensor<D>,
    burn: Tensor<D>,
    tol: f32,
) {
    let d = max_rel_diff(ours.clone().inner(), burn.clone().inner());
    assert!(d < tol, "output {what}: {d}");
    let wts = Tensor::<D>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &ours.device());
    let g_ours = (ours * wts.clone()).sum().backward();
    let g_burn = (burn * wts).sum().backward();
    let dx = max_rel_diff(x.grad(&g_ours).expect("dx"), x.grad(&g_burn).expect("dx"));
    assert!(dx < tol, "input grad {what}: {dx}");
    for (name, p) in params {
        let dp = max_rel_diff(p.grad(&g_ours).expect("dp"), p.grad(&g_burn).expect("dp"));
        assert!(dp < tol, "{name} grad {what}: {dp}");
    }
}

/// LayerNorm: output and the gradients of x, gamma and beta equal Burn's LayerNorm's
/// (composed of tensor ops, differentiated op by op), with and without beta, on rows shorter
/// than a vector and longer than a task's row block; parameter gradients do not depend on
/// the thread count.
#[test]
fn layer_norm_training_matches_burn() {
    use burn::nn::{LayerNorm, LayerNormConfig};
    let dev = Device::flex().autodiff();
    for (shape, bias, eps) in [
        ([2, 5, 7], true, 1e-6),
        ([3, 40, 24], true, 1e-5),
        ([1, 3, 768], false, 1e-6),
    ] {
        let d = shape[2];
        let mut ln: LayerNorm = LayerNormConfig::new(d)
            .with_epsilon(eps)
            .with_bias(bias)
            .init(&dev);
        let leaf = |dist| burn::module::Param::from_tensor(Tensor::<1>::random([d], dist, &dev));
        ln.gamma = leaf(Distribution::Uniform(0.5, 1.5));
        ln.beta = bias.then(|| leaf(Distribution::Normal(0.0, 1.0)));
        let x =
            (Tensor::<3>::random(shape, Distribution::Normal(0.0, 2.0), &dev) + 3.0).require_grad();
        let ours = layer_norm(&ln, eps, x.clone()).expect("op applies");
        let burn = ln.forward(x.clone());
        let mut params = vec![("gamma", ln.gamma.val())];
        params.extend(ln.beta.as_ref().map(|b| ("beta", b.val())));
        assert_grads_match(&format!("{shape:?}"), &x, &params, ours, burn, 1e-5);
        let dgamma = |threads| {
            on_threads(threads, || {
                let y = layer_norm(&ln, eps, x.clone()).expect("op applies");
                let g = (y.clone() * y).sum().backward();
                ln.gamma.val().grad(&g).expect("dgamma").into_data()
            })
        };
        assert_eq!(dgamma(1), dgamma(3));
    }
}

/// Max pooling: output and input gradient equal Burn's (its pooling with indices and their
/// scatter) for ResNet's 3x3 stride-2 pool, overlapping stride-1 windows (an input the
/// maximum of several: gradients summed), and 2x2 without padding on odd sizes; ties and NaN
/// as PyTorch 2.11's `max_pool2d` gives them (hand-run: the first of equal maxima, the last
/// NaN, takes the gradient).
#[test]
fn max_pool_training_matches_burn() {
    use burn::nn::pool::MaxPool2dConfig;
    let dev = Device::flex().autodiff();
    for (k, s, p, shape) in [
        (3, 2, 1, [2, 3, 13, 14]),
        (3, 1, 1, [2, 2, 7, 6]),
        (2, 2, 0, [1, 2, 9, 8]),
    ] {
        let pool = MaxPool2dConfig::new([k, k])
            .with_strides([s, s])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .init();
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let ours = max_pool(&pool, x.clone()).expect("op applies");
        let burn = pool.forward(x.clone());
        assert_grads_match(&format!("{k}x{k} s{s} p{p}"), &x, &[], ours, burn, 1e-6);
    }
    let pool = MaxPool2dConfig::new([2, 2])
        .with_strides([2, 2])
        .with_padding(PaddingConfig2d::Explicit(0, 0, 0, 0))
        .init();
    let nan = f32::NAN;
    for (v, want) in [
        ([1.0, nan, 3.0, nan], [0.0, 0.0, 0.0, 1.0]),
        ([5.0, 5.0, 1.0, 2.0], [1.0, 0.0, 0.0, 0.0]),
    ] {
        let x = Tensor::<1>::from_floats(v, &dev)
            .reshape([1, 1, 2, 2])
            .require_grad();
        let y = max_pool(&pool, x.clone()).expect("op applies");
        let dx = x.grad(&y.sum().backward()).expect("dx");
        assert_eq!(
            dx.into_data().try_to_vec::<f32>().expect("f32"),
            want,
            "{v:?}"
        );
    }
}

/// GELU: values and gradient equal Burn's erf GELU (differentiated op by op), across the
/// range where its derivative changes (and past it).
#[test]
fn gelu_training_matches_burn() {
    let dev = Device::flex().autodiff();
    let x = Tensor::<2>::random([37, 101], Distribution::Normal(0.0, 3.0), &dev).require_grad();
    let ours = activation(x.clone(), Act::Gelu).expect("op applies");
    let burn = burn::tensor::activation::gelu(x.clone());
    assert_grads_match("gelu", &x, &[], ours, burn, 1e-5);
    // Hand-computed: gelu(1) = Phi(1) = 0.841345, gelu'(1) = Phi(1) + phi(1) = 0.841345 + 0.241971 = 1.083316.
    let one = Tensor::<1>::from_floats([1.0], &dev).require_grad();
    let y = activation(one.clone(), Act::Gelu).expect("op applies");
    let v = y.clone().into_scalar::<f32>();
    let g = one
        .grad(&y.sum().backward())
        .expect("grad")
        .into_scalar::<f32>();
    assert!(
        (v - 0.841_345).abs() < 1e-6 && (g - 1.083_316).abs() < 1e-6,
        "{v} {g}"
    );
}

/// Attention from the qkv projection: output and the qkv gradient equal the same attention
/// written with Burn's differentiable ops (head split, scaled product, softmax, product),
/// for one and several heads, one token and many.
#[test]
fn attention_training_matches_burn() {
    use burn::tensor::activation::softmax;
    let dev = Device::flex().autodiff();
    // ViT-B/16's head: 197 tokens of 64.
    for (b, n, heads, dh) in [(2, 7, 2, 8), (1, 1, 3, 4), (3, 17, 3, 16), (1, 197, 2, 64)] {
        let d = heads * dh;
        let qkv =
            Tensor::<3>::random([b, n, 3 * d], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let ours = attention(qkv.clone(), heads).expect("op applies");
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * d, d)
                .reshape([b, n, heads, dh])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let p = softmax(q.matmul(k.swap_dims(2, 3)) / (dh as f32).sqrt(), 3);
        let burn = p.matmul(v).swap_dims(1, 2).reshape([b, n, d]);
        assert_grads_match(
            &format!("{b}x{n} {heads}x{dh}"),
            &qkv,
            &[],
            ours,
            burn,
            1e-5,
        );
    }
}

type HalfOp = fn(&Conv2d, Tensor<4>, Option<Bf16Kernel>) -> Result<Tensor<4>, Tensor<4>>;

/// `t` rounded to the nearest bf16 values (kept as f32).
fn round_bf16<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    let (dims, dev) = (t.dims(), t.device());
    let v: Vec<f32> = t.into_data().try_to_vec::<f32>().expect("f32");
    let v = v.into_iter().map(|x| from_bf16(to_bf16(x))).collect();
    Tensor::from_data(TensorData::new(v, dims), &dev)
}

/// Output, input gradient and weight gradient of `op` at `kernel`, for the weighted sum of
/// the output with weights `wts`.
fn half_run(
    op: HalfOp,
    conv: &Conv2d,
    x: &Tensor<4>,
    wts: &Tensor<4>,
    kernel: Option<Bf16Kernel>,
) -> [Tensor<4>; 3] {
    let x = x.clone().require_grad();
    let y = op(conv, x.clone(), kernel).expect("applies");
    let g = (y.clone() * wts.clone()).sum().backward();
    let dx = x.grad(&g).expect("dx");
    let dw = conv.weight.val().grad(&g).expect("dw");
    [y.inner(), dx, dw]
}

/// The bf16 products against the f32 ones, on every bf16 kernel this CPU has (the emulated
/// one everywhere, AVX512-BF16 and AMX where present): with input, weight and output
/// gradient already bf16 values, every product of two operands is exact in f32, so the
/// results equal the f32 op's within f32 summation order (1e-5 of the largest value), which
/// checks every packing, transpose and block; on arbitrary f32 data they stay within
/// bf16's rounding (3e-2 of the largest value: 8 significant bits per operand).
fn assert_half_matches_f32(op: HalfOp, conv: &Conv2d, shape: [usize; 4], what: &str) {
    let dev = conv.weight.val().device();
    let rounded = Conv2d {
        weight: burn::module::Param::from_tensor(round_bf16(conv.weight.val())),
        ..conv.clone()
    };
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
    let y_dims = op(conv, x.clone(), None).expect("applies").dims();
    let wts = Tensor::<4>::random(y_dims, Distribution::Normal(0.0, 1.0), &dev);
    for (conv, x, wts, tol, data) in [
        (
            &rounded,
            round_bf16(x.clone()),
            round_bf16(wts.clone()),
            1e-5,
            "bf16 values",
        ),
        (conv, x, wts, 3e-2, "f32 values"),
    ] {
        let reference = half_run(op, conv, &x, &wts, None);
        for kernel in Bf16Kernel::ALL.into_iter().filter(|k| k.available()) {
            let ours = half_run(op, conv, &x, &wts, Some(kernel));
            for ((name, a), b) in ["output", "input grad", "weight grad"]
                .iter()
                .zip(ours)
                .zip(reference.clone())
            {
                let d = max_rel_diff(a, b);
                assert!(d < tol, "{name} {what}, {data}, {}: {d}", kernel.name());
                // On f32 data the operands were rounded: the bf16 path ran, not the f32 one.
                assert!(
                    tol < 1e-3 || d > 1e-6,
                    "{name} {what}, {}: equal to f32 ({d})",
                    kernel.name()
                );
            }
        }
    }
}

/// 1x1 and dense convolutions with bf16 products (`--dtype bf16` training): maps wider than
/// one block of the weight gradient's pixels (512), 1x1 maps, strides, TF's SAME padding.
#[test]
fn half_products_match_f32_products() {
    let dev = Device::flex().autodiff();
    let conv = |c_in, c_out, k, s, pad: PaddingConfig2d| {
        Conv2dConfig::new([c_in, c_out], [k, k])
            .with_stride([s, s])
            .with_padding(pad)
            .with_bias(false)
            .init(&dev)
    };
    // 70->64: the weight gradient as outer products on AVX512-BF16 (`direct_wgrad`).
    for (c_in, c_out, h, w) in [
        (8, 24, 5, 7),
        (24, 8, 1, 1),
        (16, 40, 30, 25),
        (70, 64, 7, 7),
    ] {
        let what = format!("1x1 {c_in}->{c_out} {h}x{w}");
        let c = conv(c_in, c_out, 1, 1, PaddingConfig2d::Valid);
        assert_half_matches_f32(pointwise_in, &c, [3, c_in, h, w], &what);
    }
    for (c_in, c_out, k, s, pad, h, w) in [
        (4, 6, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 7, 6),
        (3, 4, 7, 2, PaddingConfig2d::Explicit(3, 3, 3, 3), 12, 11),
        (6, 10, 1, 2, PaddingConfig2d::Valid, 7, 8),
        (3, 5, 3, 2, PaddingConfig2d::Same, 10, 9),
        (1, 8, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 2, 2),
        (5, 33, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 30, 25),
        // Stride 1 on 28x28 outputs or more: read at tap offsets where a tap kernel exists
        // (`Dense::tap_grids`), the input gradient through the flipped kernel; padding of
        // k - 1 (none for the input gradient), none, 5x5, and different on each side.
        (6, 10, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 28, 29),
        (3, 7, 3, 1, PaddingConfig2d::Valid, 31, 30),
        (3, 4, 3, 1, PaddingConfig2d::Explicit(2, 2, 2, 2), 27, 27),
        (4, 5, 5, 1, PaddingConfig2d::Explicit(2, 2, 2, 2), 28, 28),
        (5, 6, 3, 1, PaddingConfig2d::Explicit(2, 0, 1, 2), 28, 29),
        (40, 36, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 29, 28),
        // Rows of 7 and 14 with channels in blocks: direct on AVX512-BF16.
        (32, 32, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 7, 7),
        (32, 64, 3, 1, PaddingConfig2d::Explicit(2, 0, 0, 2), 14, 14),
        // Outputs in blocks of 64 under 28x28: the weight gradient as outer products over
        // pairs of images (`direct_wgrad`; a batch of 3 leaves one alone; also 32->64 above).
        (13, 128, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 5, 9),
        (16, 64, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 13, 14),
        (66, 64, 1, 2, PaddingConfig2d::Valid, 9, 10),
    ] {
        let what = format!("{c_in}->{c_out} k {k} s {s} {pad:?} {h}x{w}");
        let c = conv(c_in, c_out, k, s, pad.clone());
        assert_half_matches_f32(dense_in, &c, [3, c_in, h, w], &what);
    }
}

/// The convolutions' outputs and input gradients come from memory that is not zeroed first
/// ([`written`]): filled with NaN instead, every element is still overwritten (outputs and
/// gradients match Burn's, and the bf16 products the f32 ones), on each path that writes
/// into it: 1x1 layers, unfolded dense layers (f32 and bf16 products), depthwise layers
/// channels-last (stride 1, and stride 2 without padding, whose last input row and column no
/// tap reaches) and plane by plane (stride 1, and stride 2 by phases).
#[test]
fn outputs_are_written_whole() {
    use std::sync::atomic::Ordering;
    let dev = Device::flex().autodiff();
    POISON.store(true, Ordering::Relaxed);
    let conv = |c_in, c_out, k, s| {
        Conv2dConfig::new([c_in, c_out], [k, k])
            .with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
            .with_bias(false)
            .init(&dev)
    };
    let (pw, dense_s2) = (conv(16, 40, 1, 1), conv(5, 24, 3, 2));
    assert_matches_burn(pointwise, &pw, [3, 16, 9, 7], "poisoned 1x1");
    assert_matches_burn(dense, &dense_s2, [3, 5, 11, 10], "poisoned 3x3 s2");
    assert_half_matches_f32(pointwise_in, &pw, [3, 16, 9, 7], "poisoned 1x1");
    assert_half_matches_f32(dense_in, &dense_s2, [3, 5, 11, 10], "poisoned 3x3 s2");
    for (c, k, s, p, h, w) in [
        (20, 3, 1, 1, 18, 19),
        (4, 3, 2, 0, 8, 9),
        (6, 5, 1, 2, 5, 50),
        (4, 3, 2, 1, 5, 100),
    ] {
        let conv = Conv2dConfig::new([c, c], [k, k])
            .with_stride([s, s])
            .with_groups(c)
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(false)
            .init(&dev);
        let what = format!("poisoned depthwise c {c} k {k} s {s} p {p} {h}x{w}");
        assert_matches_burn(depthwise, &conv, [3, c, h, w], &what);
    }
    POISON.store(false, Ordering::Relaxed);
}

/// With bf16 products too, the gradients are the same bits on 1 and 3 threads.
#[test]
fn half_gradients_do_not_depend_on_threads() {
    let dev = Device::flex().autodiff();
    let kernel = Bf16Kernel::detect().unwrap_or(Bf16Kernel::Emulated);
    let (pw, dn) = pointwise_and_dense(&dev);
    // 29x28: the dense layer read at tap offsets where a tap kernel exists.
    for shape in [[5, 16, 27, 23], [3, 16, 29, 28]] {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        for (op, conv) in [(pointwise_in as HalfOp, &pw), (dense_in, &dn)] {
            let half = |c: &Conv2d, x| op(c, x, Some(kernel));
            let run = |threads| grads_on_threads(&half, conv, &x, threads);
            assert_eq!(run(1), run(3), "{} {shape:?}", kernel.name());
        }
    }
    // Outputs in blocks of 64 on a small map: the weight gradient as outer products.
    let wide = Conv2dConfig::new([16, 128], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&dev);
    let x = Tensor::<4>::random([5, 16, 9, 7], Distribution::Normal(0.0, 1.0), &dev);
    let half = |c: &Conv2d, x| dense_in(c, x, Some(kernel));
    let run = |threads| grads_on_threads(&half, &wide, &x, threads);
    assert_eq!(run(1), run(3), "{} 16->128 9x7", kernel.name());
}

/// The linear op against Burn's `Linear` (per-image products, differentiated by Burn): output
/// and the gradients of input, weight and bias within 1e-5, with and without bias, one row
/// and a 3-D input of many, widths past a bias-sum block (64); in bf16 on every kernel this
/// CPU has, exact on bf16 values and within bf16's rounding on f32 data; all gradients the
/// same bits on 1 and 3 threads; every output written whole into fresh memory.
#[test]
fn linear_training_matches_burn() {
    use burn::nn::{Linear, LinearConfig};
    type Run = dyn Fn(&Linear, Tensor<3>) -> Tensor<3>;
    let dev = Device::flex().autodiff();
    // Output, dx, dw and db of the weighted sum of the output with `wts`.
    let grads = |op: &Run, lin: &Linear, x: &Tensor<3>, wts: &Tensor<3>| {
        let x = x.clone().require_grad();
        let y = op(lin, x.clone());
        let g = (y.clone() * wts.clone()).sum().backward();
        let mut out = vec![
            y.inner().flatten::<1>(0, 2),
            x.grad(&g).expect("dx").flatten::<1>(0, 2),
            lin.weight.val().grad(&g).expect("dw").flatten::<1>(0, 1),
        ];
        out.extend(lin.bias.as_ref().map(|b| b.val().grad(&g).expect("db")));
        out
    };
    let ours = |half| move |l: &Linear, x| linear_in(l, x, half).expect("op applies");
    for (lead, k, n, bias) in [
        ([2, 7], 24, 40, true),
        ([1, 1], 5, 3, false),
        ([3, 17], 48, 130, true),
    ] {
        let mut lin = LinearConfig::new(k, n).with_bias(bias).init(&dev);
        lin.bias = bias.then(|| {
            let b = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &dev);
            burn::module::Param::from_tensor(b)
        });
        let what = format!("{lead:?}x{k} -> {n}, bias {bias}");
        let x = Tensor::<3>::random([lead[0], lead[1], k], Distribution::Normal(0.0, 1.0), &dev);
        let wts = Tensor::<3>::random([lead[0], lead[1], n], Distribution::Normal(0.0, 1.0), &dev);
        let burn = grads(&|l: &Linear, x| l.forward(x), &lin, &x, &wts);
        // Twice: the second time with fresh memory filled with NaN ([`written`]), which
        // every product must overwrite.
        for poison in [false, true] {
            POISON.store(poison, std::sync::atomic::Ordering::Relaxed);
            for (i, (a, b)) in grads(&ours(None), &lin, &x, &wts)
                .into_iter()
                .zip(burn.clone())
                .enumerate()
            {
                let d = max_rel_diff(a, b);
                assert!(
                    d < 1e-5,
                    "{what} part {i}: f32 against Burn {d}, poison {poison}"
                );
            }
            if let Some(kernel) = Bf16Kernel::detect() {
                let (a, b) = (grads(&ours(Some(kernel)), &lin, &x, &wts), burn.clone());
                for (i, (a, b)) in a.into_iter().zip(b).enumerate() {
                    let d = max_rel_diff(a, b);
                    assert!(d < 3e-2, "{what} part {i}: bf16 {d}, poison {poison}");
                }
            }
        }
        POISON.store(false, std::sync::atomic::Ordering::Relaxed);
        let rounded = Linear {
            weight: burn::module::Param::from_tensor(round_bf16(lin.weight.val())),
            ..lin.clone()
        };
        for (l, x, wts, tol) in [
            (
                &rounded,
                round_bf16(x.clone()),
                round_bf16(wts.clone()),
                1e-5,
            ),
            (&lin, x.clone(), wts.clone(), 3e-2),
        ] {
            let reference = grads(&ours(None), l, &x, &wts);
            for kernel in Bf16Kernel::ALL.into_iter().filter(|k| k.available()) {
                let half = grads(&ours(Some(kernel)), l, &x, &wts);
                for (i, (a, b)) in half.into_iter().zip(reference.clone()).enumerate() {
                    let d = max_rel_diff(a, b);
                    assert!(
                        d < tol,
                        "{what} part {i}, {}: {d} (tol {tol})",
                        kernel.name()
                    );
                    // The bias gradient is f32 either way; on f32 data the products rounded.
                    assert!(tol < 1e-3 || i == 3 || d > 1e-6, "{what} part {i}: f32 ran");
                }
            }
        }
        let kernel = Bf16Kernel::detect().unwrap_or(Bf16Kernel::Emulated);
        for half in [None, Some(kernel)] {
            let on = |threads| {
                let g = on_threads(threads, || grads(&ours(half), &lin, &x, &wts));
                g.into_iter().map(|t| t.into_data()).collect::<Vec<_>>()
            };
            assert_eq!(on(1), on(3), "{what} {half:?}");
        }
    }
}

/// The tiled transpose behind the channels-last layout changes, on strided rows: full 8x8
/// tiles (in registers where the CPU has AVX2) and partial ones both ways, against the
/// definition.
#[test]
fn transpose_matches_the_definition() {
    use super::depthwise::transpose;
    for [rows, cols] in [[1, 1], [8, 8], [3, 17], [19, 8], [21, 34], [64, 5]] {
        let (src_rs, dst_rs) = (cols + 3, rows + 5);
        let src: Vec<f32> = (0..rows * src_rs).map(|i| i as f32).collect();
        let mut dst = vec![f32::NAN; cols * dst_rs];
        transpose(
            &src,
            src_rs,
            crate::cpu::as_uninit(&mut dst),
            dst_rs,
            [rows, cols],
        );
        for i in 0..rows {
            for j in 0..cols {
                assert_eq!(
                    dst[j * dst_rs + i],
                    src[i * src_rs + j],
                    "{rows}x{cols} at {i},{j}"
                );
            }
        }
        // Nothing written past the rows' ends.
        for j in 0..cols {
            assert!(
                dst[j * dst_rs + rows..][..dst_rs - rows]
                    .iter()
                    .all(|v| v.is_nan())
            );
        }
    }
}
