//! Max pooling with its own backward (ResNet's stem pool).

use super::*;
use crate::cpu::pool::{Geom, pool_planes};
use burn::nn::pool::MaxPool2d;

/// `pool(x)` on flex's autodiff device as one node; `Err(x)` when it does not apply (see
/// [`Geom::new`]). The forward is inference's plane kernel; the backward hands each output's
/// gradient to the input its window's maximum came from, found again by value: the first in
/// the window's row-major order equal to the output (the last NaN where the output is NaN),
/// as PyTorch's forward picks its index. Why: Burn's pooling with indices and its scatter
/// were 2.8 % of a ResNet-50 bf16 training step (`perf`, AMD EPYC).
pub fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [n, c, h, w] = x.dims();
    if !applies(&x) || !ON.on() {
        return Err(x);
    }
    let Some(geom) = Geom::new(pool, [h, w]) else {
        return Err(x);
    };
    let x = primitive(x);
    let xc = contiguous(x.primitive().clone());
    let [oh, ow] = geom.o;
    let y = FlexTensor::from_data(TensorData::new(
        pool_planes(slice(&xc), &geom),
        [n, c, oh, ow],
    ));
    let out = match MaxPoolBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((xc, y.clone(), geom), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Ok(Tensor::from_primitive::<Ad>(out))
}

static ON: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_TRAIN_MAX_POOL"));

/// Turns this op on or off for the process (off: Burn's pooling), over
/// `COMMITTEE_TRAIN_MAX_POOL`, to time the two in one process (`examples/ab_train.rs` in
/// committee-train, switch `max-pool`).
pub fn set_max_pool(on: bool) {
    ON.set(on)
}

#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    /// The input, the output and the pooling.
    type State = (FlexTensor, FlexTensor, Geom);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("pool max backward", move || {
            let [node] = ops.parents;
            let dy = contiguous(grads.consume::<Flex>(&ops.node));
            let Some(node) = node else { return };
            let (x, y, g) = ops.state;
            let shape = x.layout().shape().clone();
            let ([h, w], [oh, ow]) = (g.hw, g.o);
            let mut dx = vec![0f32; slice(&x).len()];
            dx.par_chunks_mut(h * w)
                .zip(slice(&x).par_chunks(h * w))
                .zip(
                    slice(&y)
                        .par_chunks(oh * ow)
                        .zip(slice(&dy).par_chunks(oh * ow)),
                )
                .for_each(|((dx, x), (y, dy))| plane_grad(x, y, dy, dx, &g));
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, shape)));
        })
    }
}

/// One plane's input gradient: each output's gradient added at its maximum's position, row
/// by row (a division per output to find its row was a tenth of this loop).
fn plane_grad(x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32], g: &Geom) {
    let ([h, w], [_, ow], [kh, kw], [sh, sw], [pt, pl, _]) = (g.hw, g.o, g.k, g.s, g.p);
    for (oy, (y, dy)) in y.chunks_exact(ow).zip(dy.chunks_exact(ow)).enumerate() {
        // The window's rows inside the image (never empty: padding < window).
        let (y0, y1) = ((oy * sh).saturating_sub(pt), (oy * sh + kh - pt).min(h));
        for (ox, (&m, &d)) in y.iter().zip(dy).enumerate() {
            let (x0, x1) = ((ox * sw).saturating_sub(pl), (ox * sw + kw - pl).min(w));
            let row = |iy: usize| &x[iy * w + x0..iy * w + x1];
            let at = if m.is_nan() {
                (y0..y1)
                    .rev()
                    .find_map(|iy| row(iy).iter().rposition(|v| v.is_nan()).map(|j| (iy, j)))
            } else {
                (y0..y1).find_map(|iy| row(iy).iter().position(|&v| v == m).map(|j| (iy, j)))
            };
            // The output is one of the window's inputs, so `at` is found.
            if let Some((iy, j)) = at {
                dx[iy * w + x0 + j] += d;
            }
        }
    }
}
