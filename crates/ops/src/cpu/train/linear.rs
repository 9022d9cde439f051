//! Linear layers in training with their own backward: one product over all rows each way, in
//! f32 or with bf16 operands (`--dtype bf16`, [`half`]).
//!
//! Why: in a ViT-B/16 training step (224 px, batch 8) gemm's f32 kernel took 61 % of the time
//! in `perf`, nearly all of it the linear layers (Burn's per-image products and the per-image
//! weight gradients it then sums); only a product of our own can run them on AMX.

use burn::backend::autodiff::ops::NodeGuard;
use burn::nn::Linear;

use super::*;
use crate::cpu::bf16::{self, Bf16Kernel, PackedA, PackedB};
use crate::cpu::isa::Epilogue;

/// `lin(x)` on flex's autodiff device for an f32 layer (bias or none): `Y = X W + b` over all
/// leading dimensions at once, `dX = dY W^T`, `dW = X^T dY`, `db` the column sums of `dY`.
/// `Err(x)` when it does not apply. The products run in the process's precision (`--dtype`).
pub fn linear<const D: usize>(lin: &Linear, x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    linear_in(lin, x, crate::precision::bf16_kernel())
}

/// [`linear`] with its products in f32 (`None`) or with bf16 operands on `half`.
pub(crate) fn linear_in<const D: usize>(
    lin: &Linear,
    x: Tensor<D>,
    half: Option<Bf16Kernel>,
) -> Result<Tensor<D>, Tensor<D>> {
    let [k, n] = lin.weight.lazy_shape().dims::<2>();
    let dims = x.dims();
    let (weight, bias) = (lin.weight.val(), lin.bias.as_ref().map(|b| b.val()));
    let f32_on = |dev: Device, dtype| dev == x.device() && dtype == DType::F32;
    let ok = applies(&x)
        && dims[D - 1] == k
        && f32_on(weight.device(), weight.dtype())
        && bias
            .as_ref()
            .is_none_or(|b| f32_on(b.device(), b.dtype()) && b.dims() == [n]);
    if !ok {
        return Err(x);
    }
    let d = Lin {
        rows: dims[..D - 1].iter().product(),
        k,
        n,
        half,
    };
    let (x, w, b) = (primitive(x), primitive(weight), bias.map(primitive));
    let xc = contiguous(x.primitive().clone());
    let wc = contiguous(w.primitive().clone());
    let bias_vals = b
        .as_ref()
        .map(|b| slice(&contiguous(b.primitive().clone())).to_vec());
    let y = d.forward(slice(&xc), slice(&wc), bias_vals.as_deref());
    let mut shape = dims;
    shape[D - 1] = n;
    let y = FlexTensor::from_data(TensorData::new(y, shape));
    let state = (xc, wc, d);
    let out = match b {
        Some(b) => finish([x.node(), w.node(), b.node()], state, y),
        None => finish([x.node(), w.node()], state, y),
    };
    Ok(Tensor::from_primitive::<Ad>(out))
}

/// The autodiff node of a linear layer with `N` parents: input, weight and, when `N` is 3,
/// bias.
fn finish<const N: usize>(
    nodes: [NodeGuard; N],
    state: (FlexTensor, FlexTensor, Lin),
    y: FlexTensor,
) -> FloatTensor<Ad> {
    match LinearBackward::<N>
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// A linear layer's product sizes: `X [rows, k] x W [k, n]`.
#[derive(Debug, Clone)]
pub(crate) struct Lin {
    rows: usize,
    k: usize,
    n: usize,
    /// The products' bf16 kernel (`None`: f32).
    half: Option<Bf16Kernel>,
}

impl Lin {
    /// `X W (+ b)`.
    fn forward(&self, xs: &[f32], ws: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let Lin { rows, k, n, half } = *self;
        if let Some(kern) = half {
            let (a, w) = (PackedA::pack(xs, rows, k), PackedB::pack(ws, k, n));
            let bias = bias.map_or(bf16::Bias::None, |b| bf16::Bias::Columns(&b[..n]));
            return bf16::gemm_new(kern, &a, &w, bias, Epilogue::None);
        }
        let (x, w) = (Mat::rows(xs, k), Mat::rows(ws, n));
        let Some(b) = bias else {
            return written(rows * n, |y| {
                gemm_into([rows, n, k], y, x, w, gemm::Parallelism::Rayon(0))
            });
        };
        let mut y = preloaded(rows * n, n, |_, row| {
            row.write_copy_of_slice(&b[..n]);
        });
        gemm_strided(
            [rows, n, k],
            &mut y,
            x,
            w,
            true,
            gemm::Parallelism::Rayon(0),
        );
        y
    }

    /// `dX = dY W^T`.
    fn input_grad(&self, dy: &[f32], ws: &[f32]) -> Vec<f32> {
        let Lin { rows, k, n, half } = *self;
        written(rows * k, |dx| match half {
            Some(kern) => {
                let a = PackedA::pack(dy, rows, n);
                let wt = PackedB::pack_transposed(ws, n, k, n);
                bf16::gemm_into(kern, &a, &wt, dx, bf16::Bias::None, Epilogue::None);
            }
            None => gemm_into(
                [rows, k, n],
                dx,
                Mat::rows(dy, n),
                Mat::cols(ws, n),
                gemm::Parallelism::Rayon(0),
            ),
        })
    }

    /// `dW = X^T dY`.
    fn weight_grad(&self, xs: &[f32], dy: &[f32]) -> Vec<f32> {
        let Lin { rows, k, n, half } = *self;
        written(k * n, |dw| match half {
            Some(kern) => {
                let xt = PackedA::pack_transposed(xs, k, rows);
                let b = PackedB::pack(dy, rows, n);
                bf16::gemm_into(kern, &xt, &b, dw, bf16::Bias::None, Epilogue::None);
            }
            None => gemm_into(
                [k, n, rows],
                dw,
                Mat::cols(xs, k),
                Mat::rows(dy, n),
                gemm::Parallelism::Rayon(0),
            ),
        })
    }

    /// `db`: the column sums of `dY`, rows added in order (the same bits for any number of
    /// threads), columns split over the threads.
    fn bias_grad(&self, dy: &[f32]) -> Vec<f32> {
        const COLS: usize = 64;
        let mut db = vec![0f32; self.n];
        db.par_chunks_mut(COLS).enumerate().for_each(|(j, acc)| {
            for row in dy.chunks_exact(self.n) {
                for (a, v) in acc.iter_mut().zip(&row[j * COLS..]) {
                    *a += v;
                }
            }
        });
        db
    }
}

#[derive(Debug)]
pub(crate) struct LinearBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for LinearBackward<N> {
    type State = (FlexTensor, FlexTensor, Lin);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("linear backward", move || {
            let dy = contiguous(grads.consume::<Flex>(&ops.node));
            let (x, w, d) = ops.state;
            let (dys, xs, ws) = (slice(&dy), slice(&x), slice(&w));
            let [x_shape, w_shape] = [x.layout().shape().clone(), w.layout().shape().clone()];
            let mut parents = ops.parents.into_iter();
            let (node_x, node_w, node_b) = (
                parents.next().flatten(),
                parents.next().flatten(),
                parents.next().flatten(),
            );
            if let Some(node) = node_w {
                let dw = TensorData::new(d.weight_grad(xs, dys), w_shape);
                grads.register::<Flex>(node.id, FlexTensor::from_data(dw));
            }
            if let Some(node) = node_b {
                let db = TensorData::new(d.bias_grad(dys), [d.n]);
                grads.register::<Flex>(node.id, FlexTensor::from_data(db));
            }
            if let Some(node) = node_x {
                let dx = TensorData::new(d.input_grad(dys, ws), x_shape);
                grads.register::<Flex>(node.id, FlexTensor::from_data(dx));
            }
        })
    }
}
