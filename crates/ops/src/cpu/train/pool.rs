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
            let (xs, ys, dys) = (slice(&x), slice(&y), slice(&dy));
            // Each plane zeroed by its own task just before it is filled, while in cache
            // (zeroed first as a whole, one thread cleared 26 MB for ResNet-50's stem at
            // batch 8 and the planes came back from memory).
            let dx = crate::cpu::matmul::preloaded(xs.len(), h * w, |p, dx| {
                dx.fill(std::mem::MaybeUninit::new(0.0));
                // SAFETY: every element was just written.
                let dx = unsafe { crate::cpu::assume_written(dx) };
                let o = p * oh * ow..(p + 1) * oh * ow;
                plane_grad(&xs[p * h * w..][..h * w], &ys[o.clone()], &dys[o], dx, &g);
            });
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
            // The output is one of the window's inputs, so a match is found.
            if let Some(at) = argmax_at(x, m, [y0, y1], [x0, x1], w) {
                dx[at] += d;
            }
        }
    }
}

/// Where in `x` (rows `w` wide) the window `rows x cols` holds `m`: the first match in
/// row-major order, or the last NaN when `m` is NaN (as PyTorch's forward picks its index).
#[inline(always)]
fn argmax_at(
    x: &[f32],
    m: f32,
    [y0, y1]: [usize; 2],
    [x0, x1]: [usize; 2],
    w: usize,
) -> Option<usize> {
    if m.is_nan() {
        for iy in (y0..y1).rev() {
            for ix in (x0..x1).rev() {
                if x[iy * w + ix].is_nan() {
                    return Some(iy * w + ix);
                }
            }
        }
        return None;
    }
    // Every position compared, from the last, each match taking the place of the one found
    // before: no branch on where the maximum lies (a branch there missed about once per
    // output), the first in row-major order kept.
    let mut at = None;
    for iy in (y0..y1).rev() {
        for ix in (x0..x1).rev() {
            let p = iy * w + ix;
            at = if x[p] == m { Some(p) } else { at };
        }
    }
    at
}
