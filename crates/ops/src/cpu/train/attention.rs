//! Multi-head self-attention from the qkv projection, with its own backward.

use super::*;

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
    let dims = Dims {
        b,
        n,
        heads,
        dh: d3 / 3 / heads,
    };
    let Ok(qkv) = qkv.try_into_primitive::<Ad>() else {
        unreachable!("device and checkpointing strategy were checked")
    };
    let xc = contiguous(qkv.primitive().clone());
    let src = slice(&xc);
    let isa = Isa::get();
    let (n, dh, d) = (dims.n, dims.dh, dims.d());
    let per_task: Vec<(Vec<f32>, Vec<f32>)> = (0..b * heads)
        .into_par_iter()
        .map(|task| {
            let (q, k, v) = dims.qkv(src, task);
            let mut p = vec![0f32; n * n];
            product(
                &mut p,
                [n, n, dh],
                (q, dims.d3(), 1),
                (k, 1, dims.d3()),
                dims.scale(),
            );
            for row in p.chunks_exact_mut(n) {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                row.iter_mut().for_each(|x| *x -= max);
                isa.epilogue(row, Epilogue::Exp);
                let inv = 1.0 / row.iter().sum::<f32>();
                row.iter_mut().for_each(|x| *x *= inv);
            }
            let mut o = vec![0f32; n * dh];
            product(&mut o, [n, dh, n], (&p, n, 1), (v, dims.d3(), 1), 1.0);
            (p, o)
        })
        .collect();
    let mut out = vec![0f32; b * n * d];
    out.par_chunks_mut(n * d)
        .enumerate()
        .for_each(|(img, dst)| {
            for (h, (_, o)) in per_task[img * heads..][..heads].iter().enumerate() {
                for (row, src) in dst.chunks_exact_mut(d).zip(o.chunks_exact(dh)) {
                    row[h * dh..][..dh].copy_from_slice(src);
                }
            }
        });
    let y = FlexTensor::from_data(TensorData::new(out, [b, n, d]));
    let probs = per_task.into_iter().map(|(p, _)| p).collect();
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

#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    n: usize,
    heads: usize,
    dh: usize,
}

impl Dims {
    fn d(&self) -> usize {
        self.heads * self.dh
    }

    fn d3(&self) -> usize {
        3 * self.d()
    }

    fn scale(&self) -> f32 {
        1.0 / (self.dh as f32).sqrt()
    }

    /// Task `task`'s (image, head) Q, K and V: slices starting at the head's first column
    /// of image's rows (row stride `d3`).
    fn qkv<'a>(&self, src: &'a [f32], task: usize) -> (&'a [f32], &'a [f32], &'a [f32]) {
        let (img, h) = (task / self.heads, task % self.heads);
        let base = &src[img * self.n * self.d3()..][..self.n * self.d3()];
        let d = self.d();
        (
            &base[h * self.dh..],
            &base[d + h * self.dh..],
            &base[2 * d + h * self.dh..],
        )
    }
}

/// `dst [m, n] (row-major, overwritten) = scale * lhs [m, k] x rhs [k, n]`, each operand given
/// as (slice, row stride, column stride), on the calling thread (one task per head).
fn product(
    dst: &mut [f32],
    mnk: [usize; 3],
    (data, rs, cs): (&[f32], usize, usize),
    (rdata, rrs, rcs): (&[f32], usize, usize),
    scale: f32,
) {
    let lhs = Mat { data, rs, cs };
    let rhs = Mat {
        data: rdata,
        rs: rrs,
        cs: rcs,
    };
    gemm_scaled(mnk, dst, lhs, rhs, false, scale, gemm::Parallelism::None);
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    /// The qkv input, each task's probabilities `[n, n]`, the sizes.
    type State = (FlexTensor, Vec<Vec<f32>>, Dims);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
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
                    let dot: f32 = ds.iter().zip(p).map(|(a, b)| a * b).sum();
                    for (ds, &p) in ds.iter_mut().zip(p) {
                        *ds = p * (*ds - dot);
                    }
                }
                product(dq, [n, dh, n], (&ds, n, 1), (k, d3, 1), scale);
                product(dk, [n, dh, n], (&ds, 1, n), (q, d3, 1), scale);
                g
            })
            .collect();
        let mut dx = vec![0f32; dims.b * n * d3];
        dx.par_chunks_mut(n * d3)
            .enumerate()
            .for_each(|(img, dst)| {
                for (h, g) in per_task[img * dims.heads..][..dims.heads]
                    .iter()
                    .enumerate()
                {
                    for (part, g) in g.chunks_exact(n * dh).enumerate() {
                        for (row, src) in dst.chunks_exact_mut(d3).zip(g.chunks_exact(dh)) {
                            row[part * d + h * dh..][..dh].copy_from_slice(src);
                        }
                    }
                }
            });
        grads.register::<Flex>(
            node.id,
            FlexTensor::from_data(TensorData::new(dx, [dims.b, n, d3])),
        );
    }
}
