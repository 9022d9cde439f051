//! Activations in place, and the training parts of ReLU6 and SiLU, in one parallel pass.

use super::*;

/// Applies `ep` to every element of `x` in place (SiLU, ReLU, ReLU6); `None` when `x` is not
/// eligible, so the caller falls back to Burn.
pub fn activation<const D: usize>(x: Tensor<D>, ep: Epilogue) -> Result<Tensor<D>, Tensor<D>> {
    if !eligible(Kernel::Activations, &x) {
        return Err(x);
    }
    let mut t = match into_flex(x) {
        Some(t) => owned(t),
        None => unreachable!("eligible() checked the backend"),
    };
    let n = t.layout().num_elements();
    let data: &mut [f32] = &mut t.storage_mut::<f32>()[..n];
    let isa = Isa::get();
    data.par_chunks_mut(CHUNK).for_each(|c| isa.epilogue(c, ep));
    Ok(from_flex(t))
}

/// ReLU6's training parts for `x` (outside autodiff): `inside = (0 < x < 6)` as 0/1 and
/// `six = 6 * (x >= 6)`, so that `x * inside + six` is the clamp with PyTorch's gradient. One
/// parallel pass; Burn's comparisons, `bool_and` and casts are five single-threaded ones.
pub fn relu6_parts<const D: usize>(x: Tensor<D>) -> Result<(Tensor<D>, Tensor<D>), Tensor<D>> {
    parts(x, |x| {
        let inside = if x > 0.0 && x < 6.0 { 1.0 } else { 0.0 };
        (inside, if x >= 6.0 { 6.0 } else { 0.0 })
    })
}

/// SiLU's training parts for `x` (outside autodiff): the derivative `g = s (1 + x (1 - s))`
/// (`s = sigmoid(x)`) and `c = silu(x) - x g`, so that `x * g + c` is SiLU (to an ulp of
/// `x g`) with its exact gradient. One parallel pass; Burn's `x * sigmoid(x)` on an autodiff
/// tensor is two single-threaded passes forward and four backward.
pub fn silu_parts<const D: usize>(x: Tensor<D>) -> Result<(Tensor<D>, Tensor<D>), Tensor<D>> {
    parts(x, |x| {
        let s = 1.0 / (1.0 + exp::<false>(-x));
        let g = s * (1.0 + x * (1.0 - s));
        (g, x * s - x * g)
    })
}

/// Two tensors shaped like `x`, element `i` of each from `f(x[i])`, in one parallel pass; the
/// training parts of an activation (`x * a + b` in the graph). `Err(x)` when not eligible.
pub(crate) fn parts<const D: usize>(
    x: Tensor<D>,
    f: impl Fn(f32) -> (f32, f32) + Sync,
) -> Result<(Tensor<D>, Tensor<D>), Tensor<D>> {
    if !eligible(Kernel::Activations, &x) {
        return Err(x);
    }
    let shape = x.shape();
    let t = eligible_input(x);
    let n = t.layout().num_elements();
    let src: &[f32] = &t.storage::<f32>()[..n];
    let mut a = vec![0f32; n];
    let mut b = vec![0f32; n];
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks_mut(CHUNK))
        .zip(src.par_chunks(CHUNK))
        .for_each(|((a, b), x)| {
            for ((a, b), &x) in a.iter_mut().zip(b.iter_mut()).zip(x) {
                (*a, *b) = f(x);
            }
        });
    let make = |v: Vec<f32>| from_flex(FlexTensor::from_data(TensorData::new(v, shape.clone())));
    Ok((make(a), make(b)))
}
