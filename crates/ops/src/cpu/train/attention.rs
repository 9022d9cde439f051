//! Multi-head self-attention from the qkv projection, with its own backward.

use super::*;
use crate::cpu::attention::{Heads, product};

/// `softmax(Q K^T / sqrt(d_head)) V` per image and head from timm's qkv layout `[b, n, 3 d]`
/// to `[b, n, d]` on flex's autodiff device, the gradient written straight into the qkv
/// layout; `Err(qkv)` when it does not apply.
/// Why: on an autodiff tensor Burn's attention is its generic fallback (products, a softmax of
/// several ops, each differentiated apart) after the head reshapes and permutes (copies each
/// way). Here each (image, head) is one task, forward and back, reading the strided columns
/// in place and keeping only the probabilities `P` for the backward:
/// `dV = P^T dO`, `dP = dO V^T`, `dS = P (dP - rowsum(dP P))`, `dQ = s dS K`, `dK = s dS^T Q`.
pub fn attention(qkv: Tensor<3>, heads: usize) -> Result<Tensor<3>, Tensor<3>> {
    let [b, n, d3] = qkv.dims();
    if !applies(&qkv) || heads == 0 || d3 % (3 * heads) != 0 || n == 0 {
        return Err(qkv);
    }
    let dims = Heads {
        b,
        n,
        heads,
        dh: d3 / 3 / heads,
    };
    let qkv = primitive(qkv);
    let xc = contiguous(qkv.primitive().clone());
    let src = slice(&xc);
    let (probs, outs): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (0..b * heads)
        .into_par_iter()
        .map(|task| dims.head(src, task))
        .unzip();
    let y = FlexTensor::from_data(TensorData::new(dims.join(&outs, 1), [b, n, dims.d()]));
    let out = match AttentionBackward
        .prepare::<NoCheckpointing>([qkv.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((xc, probs, dims), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Ok(Tensor::from_primitive::<Ad>(out))
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    /// The qkv input, each task's probabilities `[n, n]`, the sizes.
    type State = (FlexTensor, Vec<Vec<f32>>, Heads);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("attention backward", move || {
            let [node] = ops.parents;
            let dout = contiguous(grads.consume::<Flex>(&ops.node));
            let Some(node) = node else { return };
            let (xc, probs, dims) = ops.state;
            let (src, dos) = (slice(&xc), slice(&dout));
            let (n, dh, d, d3) = (dims.n, dims.dh, dims.d(), dims.d3());
            let scale = dims.scale();
            // Per task: dQ, dK, dV as [n, dh] each, side by side in one [3, n, dh] buffer.
            let per_task: Vec<Vec<f32>> = (0..dims.b * dims.heads)
                .into_par_iter()
                .map(|task| {
                    let (q, k, v) = dims.qkv(src, task);
                    let (img, h) = (task / dims.heads, task % dims.heads);
                    let d_o = &dos[img * n * d + h * dh..];
                    let p = &probs[task];
                    let mut g = vec![0f32; 3 * n * dh];
                    let (dq, rest) = g.split_at_mut(n * dh);
                    let (dk, dv) = rest.split_at_mut(n * dh);
                    product(dv, [n, dh, n], (p, 1, n), (d_o, d, 1), 1.0);
                    let mut ds = vec![0f32; n * n];
                    product(&mut ds, [n, n, dh], (d_o, d, 1), (v, 1, d3), 1.0);
                    for (ds, p) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                        softmax_grad_row(ds, p);
                    }
                    product(dq, [n, dh, n], (&ds, n, 1), (k, d3, 1), scale);
                    product(dk, [n, dh, n], (&ds, 1, n), (q, d3, 1), scale);
                    g
                })
                .collect();
            let dx = dims.join(&per_task, 3);
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(dx, [dims.b, n, d3])),
            );
        })
    }
}

crate::cpu::isa::widest!(fn softmax_grad_row(ds: &mut [f32], p: &[f32]) = softmax_grad_row_body);

/// One row of the softmax's backward, `ds = p (ds - sum(ds p))`, the sum in 8 lanes (a fixed
/// order). Why: summed one element after the other it could not vectorise, and ran scalar
/// over every score of every head (197 x 197 of them per head at 224 px).
#[inline(always)]
fn softmax_grad_row_body(ds: &mut [f32], p: &[f32]) {
    let dot = super::norm::sum8(ds, p, |a, b| a * b);
    for (ds, &p) in ds.iter_mut().zip(p) {
        *ds = p * (*ds - dot);
    }
}
