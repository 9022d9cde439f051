//! Squeeze-and-excitation in training: the planes' means and the gate's scaling as two ops
//! with their own backward, the small gate between them left to Burn.

use super::*;
use crate::cpu::se::mean;

/// `x * gate(mean(x))` on flex's autodiff device, the mean over each channel's plane and the
/// gate `[n, c] -> [n, c]`; `Err(x)` when it does not apply.
/// Why: Burn's `mean_dim` twice and a broadcast product cost EfficientNet-B0's training step
/// some fourteen passes over each gated map backward (the mean's gradient as a tensor of ones
/// scaled and multiplied, the product's two gradients each a full product before the gate's
/// is summed): here the mean is one pass forward and one write back, and the scaling one pass
/// forward and one back that gives the input's gradient and the gate's sums together.
pub fn squeeze_excite(
    x: Tensor<4>,
    gate: impl FnOnce(Tensor<2>) -> Tensor<2>,
) -> Result<Tensor<4>, Tensor<4>> {
    let [n, c, h, w] = x.dims();
    if !applies(&x) || !ON.on() || h * w == 0 {
        return Err(x);
    }
    let g = gate(plane_means(x.clone()));
    if !applies(&g) || g.dims() != [n, c] {
        // A gate of another type or shape: Burn's broadcast product.
        return Ok(x * g.reshape([n, c, 1, 1]));
    }
    Ok(scale_planes(x, g))
}

static ON: crate::kernel::Switch = crate::kernel::Switch::new(true, Some("COMMITTEE_TRAIN_SE"));

/// Turns these ops on or off for the process (off: Burn's), over `COMMITTEE_TRAIN_SE`, to time
/// the two in one process (`examples/ab_train.rs` in committee-train, switch `se`).
pub fn set_squeeze_excite(on: bool) {
    ON.set(on)
}

/// `[n, c]`: each plane's mean (inference's kernel, in 16 lanes).
fn plane_means(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    let x = primitive(x);
    let xc = contiguous(x.primitive().clone());
    let m: Vec<f32> = slice(&xc).par_chunks_exact(h * w).map(mean).collect();
    let m = FlexTensor::from_data(TensorData::new(m, [n, c]));
    let out = match MeanBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish([n, c, h, w], m),
        OpsKind::UnTracked(prep) => prep.finish(m),
    };
    Tensor::from_primitive::<Ad>(out)
}

#[derive(Debug)]
struct MeanBackward;

impl Backward<Flex, 1> for MeanBackward {
    /// The input's shape.
    type State = [usize; 4];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("squeeze-excite backward", move || {
            let [node] = ops.parents;
            let dm = contiguous(grads.consume::<Flex>(&ops.node));
            let Some(node) = node else { return };
            let shape = ops.state;
            let hw = shape[2] * shape[3];
            let dms = slice(&dm);
            let dx = preloaded(shape.iter().product(), hw, |p, plane| {
                plane.fill(MaybeUninit::new(dms[p] / hw as f32));
            });
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, shape)));
        })
    }
}

/// `y = x * g`, each plane `[i, ch]` of `x` scaled by `g[i, ch]`.
fn scale_planes(x: Tensor<4>, g: Tensor<2>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let hw = h * w;
    let (x, g) = (primitive(x), primitive(g));
    let (xc, gc) = (
        contiguous(x.primitive().clone()),
        contiguous(g.primitive().clone()),
    );
    let (xs, gs) = (slice(&xc), slice(&gc));
    let y = preloaded(xs.len(), hw, |p, plane| {
        scaled(&xs[p * hw..][..hw], gs[p], plane)
    });
    let y = FlexTensor::from_data(TensorData::new(y, [n, c, h, w]));
    let out = match ScaleBackward
        .prepare::<NoCheckpointing>([x.node(), g.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((xc, gc), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive::<Ad>(out)
}

crate::cpu::isa::widest!(fn scaled(x: &[f32], g: f32, y: &mut [MaybeUninit<f32>]) = scaled_body);
crate::cpu::isa::widest!(
    fn scale_grads(dy: &[f32], x: &[f32], g: f32, dx: Option<&mut [MaybeUninit<f32>]>) -> f32 =
        scale_grads_body
);

#[inline(always)]
fn scaled_body(x: &[f32], g: f32, y: &mut [MaybeUninit<f32>]) {
    for (y, &v) in y.iter_mut().zip(x) {
        y.write(v * g);
    }
}

/// One plane's `dx = dy g` (when asked for) and `sum(dy x)`, the gate's gradient, in 16
/// lanes, in one pass.
#[inline(always)]
fn scale_grads_body(dy: &[f32], x: &[f32], g: f32, dx: Option<&mut [MaybeUninit<f32>]>) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (dyc, dyt) = dy.as_chunks::<L>();
    let (xc, xt) = x[..dy.len()].as_chunks::<L>();
    for (d, v) in dyc.iter().zip(xc) {
        for l in 0..L {
            acc[l] += d[l] * v[l];
        }
    }
    let tail: f32 = dyt.iter().zip(xt).map(|(d, v)| d * v).sum();
    if let Some(dx) = dx {
        for (o, &d) in dx.iter_mut().zip(dy) {
            o.write(d * g);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[derive(Debug)]
struct ScaleBackward;

impl Backward<Flex, 2> for ScaleBackward {
    /// The input and the gate.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("squeeze-excite backward", move || {
            let [node_x, node_g] = ops.parents;
            let dy = contiguous(grads.consume::<Flex>(&ops.node));
            let (x, g) = ops.state;
            let shape = x.layout().shape().clone();
            let (dys, xs, gs) = (slice(&dy), slice(&x), slice(&g));
            let hw = xs.len() / gs.len().max(1);
            let mut dg = vec![0f32; gs.len()];
            match &node_x {
                Some(_) => {
                    let mut dx: Vec<f32> = Vec::with_capacity(xs.len());
                    dx.spare_capacity_mut()[..xs.len()]
                        .par_chunks_mut(hw)
                        .zip(dg.par_iter_mut())
                        .enumerate()
                        .for_each(|(p, (dx, dg))| {
                            let at = p * hw..(p + 1) * hw;
                            *dg = scale_grads(&dys[at.clone()], &xs[at], gs[p], Some(dx));
                        });
                    // SAFETY: every plane was written above (`scale_grads` writes all of
                    // `dx` when given it).
                    unsafe { dx.set_len(xs.len()) };
                    if let Some(node) = node_x {
                        let dx = FlexTensor::from_data(TensorData::new(dx, shape));
                        grads.register::<Flex>(node.id, dx);
                    }
                }
                None => dg.par_iter_mut().enumerate().for_each(|(p, dg)| {
                    let at = p * hw..(p + 1) * hw;
                    *dg = scale_grads(&dys[at.clone()], &xs[at], gs[p], None);
                }),
            }
            if let Some(node) = node_g {
                let dg = FlexTensor::from_data(TensorData::new(dg, g.layout().shape().clone()));
                grads.register::<Flex>(node.id, dg);
            }
        })
    }
}
