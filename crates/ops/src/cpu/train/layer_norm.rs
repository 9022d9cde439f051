//! LayerNorm over the last dimension with its closed-form backward.

use super::norm::sum8;
use super::*;
use burn::backend::autodiff::NodeId;
use burn::nn::LayerNorm;

/// Rows per task: the unit of the parameter gradients' partial sums, fixed so that their
/// order (and the bits) do not depend on the thread count.
const ROWS: usize = 32;

/// `ln(x)` (normalised over the last dimension, `eps` being `ln`'s, which Burn keeps private)
/// on flex's autodiff device; `Err(x)` when it does not apply.
/// Why: Burn composes it from means, a subtraction, a square root, a division, a scale and a
/// shift, each differentiated apart; here it is one pass each way per row, with
/// `dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sigma`, `dxhat = dy gamma`.
pub fn layer_norm<const D: usize>(
    ln: &LayerNorm,
    eps: f64,
    x: Tensor<D>,
) -> Result<Tensor<D>, Tensor<D>> {
    let d = x.dims()[D - 1];
    let gamma = ln.gamma.val();
    let beta = ln.beta.as_ref().map(|b| b.val());
    let ok = applies(&x)
        && d > 0
        && std::iter::once(&gamma)
            .chain(beta.as_ref())
            .all(|p| p.device() == x.device() && p.dtype() == DType::F32 && p.dims() == [d]);
    if !ok {
        return Err(x);
    }
    let (x, gamma, beta) = (primitive(x), primitive(gamma), beta.map(primitive));
    let xc = contiguous(x.primitive().clone());
    let shape = xc.layout().shape().clone();
    let g = slice(&contiguous(gamma.primitive().clone())).to_vec();
    let b = match &beta {
        Some(b) => slice(&contiguous(b.primitive().clone())).to_vec(),
        None => vec![0.0; d],
    };
    let xs = slice(&xc);
    let rows = xs.len() / d;
    // The output and the normalised input written into fresh memory, row by row.
    let len = xs.len();
    let (mut y, mut xhat): (Vec<f32>, Vec<f32>) =
        (Vec::with_capacity(len), Vec::with_capacity(len));
    let mut invstd = vec![0f32; rows];
    y.spare_capacity_mut()[..len]
        .par_chunks_mut(d * ROWS)
        .zip(xhat.spare_capacity_mut()[..len].par_chunks_mut(d * ROWS))
        .zip(invstd.par_chunks_mut(ROWS))
        .zip(xs.par_chunks(d * ROWS))
        .for_each(|(((y, xh), inv), x)| norm_rows(x, y, xh, inv, [&g, &b], eps as f32));
    // SAFETY: every row of both was written above (the rows cover `len`: `d` divides it).
    unsafe {
        y.set_len(len);
        xhat.set_len(len);
    }
    let y = FlexTensor::from_data(TensorData::new(y, shape));
    let state = LnState {
        xhat,
        invstd,
        gamma: g,
        d,
    };
    let out = match beta {
        Some(beta) => match LnBackward
            .prepare::<NoCheckpointing>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        },
        None => match LnBackward
            .prepare::<NoCheckpointing>([x.node(), gamma.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        },
    };
    Ok(Tensor::from_primitive::<Ad>(out))
}

crate::cpu::isa::widest!(
    fn norm_rows(
        x: &[f32],
        y: &mut [MaybeUninit<f32>],
        xh: &mut [MaybeUninit<f32>],
        inv: &mut [f32],
        gb: [&[f32]; 2],
        eps: f32,
    ) = norm_rows_body
);

/// Rows of `x` (`inv.len()` of them, `gb`'s length each) normalised: `xh = (x - mean) / sigma`
/// and `y = xh gamma + beta`, `inv = 1 / sigma`. Compiled for the widest instruction set (as
/// the crate is built, for baseline x86-64, this ran 4 lanes wide: LayerNorm took twice
/// PyTorch's time in a ViT-B/16 training step).
#[inline(always)]
fn norm_rows_body(
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    xh: &mut [MaybeUninit<f32>],
    inv: &mut [f32],
    [g, b]: [&[f32]; 2],
    eps: f32,
) {
    let d = g.len();
    for (((y, xh), inv), x) in y
        .chunks_exact_mut(d)
        .zip(xh.chunks_exact_mut(d))
        .zip(inv.iter_mut())
        .zip(x.chunks_exact(d))
    {
        let mean = sum8(x, x, |v, _| v) / d as f32;
        let var = sum8(x, x, |v, _| (v - mean) * (v - mean)) / d as f32;
        *inv = 1.0 / (var + eps).sqrt();
        for ((((y, xh), &v), &g), &b) in y.iter_mut().zip(xh.iter_mut()).zip(x).zip(g).zip(b) {
            let h = (v - mean) * *inv;
            xh.write(h);
            y.write(h * g + b);
        }
    }
}

crate::cpu::isa::widest!(
    fn grad_rows(
        dy: &[f32],
        xh: &[f32],
        inv: &[f32],
        g: &[f32],
        dx: Option<&mut [MaybeUninit<f32>]>,
        sums: [&mut [f32]; 2],
    ) = grad_rows_body
);

/// One task's rows of the backward: `sums` `[dg, db]` gather `dy xhat` and `dy` over the
/// rows, and (when asked) `dx = (dy g - mean(dy g) - xhat mean(dy g xhat)) / sigma`, each
/// row's means in 8 lanes (a fixed order); compiled for the widest instruction set, as
/// [`norm_rows_body`].
#[inline(always)]
fn grad_rows_body(
    dy: &[f32],
    xh: &[f32],
    inv: &[f32],
    g: &[f32],
    mut dx: Option<&mut [MaybeUninit<f32>]>,
    [dg, db]: [&mut [f32]; 2],
) {
    let d = g.len();
    for (r, (dy, xh)) in dy.chunks_exact(d).zip(xh.chunks_exact(d)).enumerate() {
        for (((dg, db), &dy), &xh) in dg.iter_mut().zip(db.iter_mut()).zip(dy).zip(xh) {
            *dg += dy * xh;
            *db += dy;
        }
        if let Some(dx) = dx.as_deref_mut() {
            let dx = &mut dx[r * d..(r + 1) * d];
            let a = sum8(dy, g, |dy, g| dy * g) / d as f32;
            let mut acc = [0f32; 8];
            let (dyc, dyt) = dy.as_chunks::<8>();
            let (gc, gt) = g.as_chunks::<8>();
            let (xc, xt) = xh.as_chunks::<8>();
            for ((dy, g), xh) in dyc.iter().zip(gc).zip(xc) {
                for l in 0..8 {
                    acc[l] += dy[l] * g[l] * xh[l];
                }
            }
            for (l, ((&dy, &g), &xh)) in dyt.iter().zip(gt).zip(xt).enumerate() {
                acc[l] += dy * g * xh;
            }
            let b = acc.iter().sum::<f32>() / d as f32;
            for (((o, &dy), &g), &xh) in dx.iter_mut().zip(dy).zip(g).zip(xh) {
                o.write((dy * g - a - xh * b) * inv[r]);
            }
        }
    }
}

#[derive(Debug, Clone)]
struct LnState {
    /// The normalised input, `(x - mean) / sigma` per row.
    xhat: Vec<f32>,
    invstd: Vec<f32>,
    gamma: Vec<f32>,
    d: usize,
}

/// One task's rows: `dy`, `xhat`, `1 / sigma` and where `dx` goes (when wanted).
type RowBlock<'a> = (
    &'a [f32],
    &'a [f32],
    &'a [f32],
    Option<&'a mut [MaybeUninit<f32>]>,
);

#[derive(Debug)]
struct LnBackward;

impl LnBackward {
    /// The input gradient (when `want_dx`) and the sums over rows of `dy xhat` and `dy`.
    fn grads(st: &LnState, dy: &[f32], want_dx: bool) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
        let d = st.d;
        // Written row by row into fresh memory.
        let mut dx: Vec<f32> = Vec::with_capacity(if want_dx { dy.len() } else { 0 });
        let run = |(dy, xh, inv, dx): RowBlock| {
            let mut dg = vec![0f32; d];
            let mut db = vec![0f32; d];
            grad_rows(dy, xh, inv, &st.gamma, dx, [&mut dg, &mut db]);
            (dg, db)
        };
        let chunks = dy
            .par_chunks(d * ROWS)
            .zip(st.xhat.par_chunks(d * ROWS))
            .zip(st.invstd.par_chunks(ROWS));
        let partial: Vec<(Vec<f32>, Vec<f32>)> = if want_dx {
            chunks
                .zip(dx.spare_capacity_mut()[..dy.len()].par_chunks_mut(d * ROWS))
                .map(|(((dy, xh), inv), dx)| run((dy, xh, inv, Some(dx))))
                .collect()
        } else {
            chunks
                .map(|((dy, xh), inv)| run((dy, xh, inv, None)))
                .collect()
        };
        if want_dx {
            // SAFETY: every row was written above (the rows cover `dy.len()`).
            unsafe { dx.set_len(dy.len()) };
        }
        // Partial sums added in row order: the same bits for any thread count.
        let mut dg = vec![0f32; d];
        let mut db = vec![0f32; d];
        for (pg, pb) in &partial {
            dg.iter_mut().zip(pg).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
        }
        (want_dx.then_some(dx), dg, db)
    }
}

fn register(grads: &mut Gradients, id: Option<NodeId>, v: Vec<f32>, shape: Vec<usize>) {
    if let Some(id) = id {
        grads.register::<Flex>(id, FlexTensor::from_data(TensorData::new(v, shape)));
    }
}

/// The backward of either form (with beta: 3 parents, without: 2): gradients of x, gamma
/// and, when there, beta.
fn backward<const N: usize>(ops: Ops<LnState, N>, grads: &mut Gradients) {
    let dy = contiguous(grads.consume::<Flex>(&ops.node));
    let shape: Vec<usize> = dy.layout().shape().to_vec();
    let id = |i: usize| ops.parents.get(i).and_then(|p| p.as_ref().map(|n| n.id));
    let (dx, dg, db) = LnBackward::grads(&ops.state, slice(&dy), id(0).is_some());
    let d = ops.state.d;
    register(grads, id(0), dx.unwrap_or_default(), shape);
    register(grads, id(1), dg, vec![d]);
    register(grads, id(2), db, vec![d]);
}

impl Backward<Flex, 3> for LnBackward {
    type State = LnState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("layer norm backward", move || {
            backward(ops, grads);
        })
    }
}

impl Backward<Flex, 2> for LnBackward {
    type State = LnState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("layer norm backward", move || {
            backward(ops, grads);
        })
    }
}
