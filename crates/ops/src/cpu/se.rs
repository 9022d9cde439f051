//! Squeeze-and-excitation's two passes over the map (inference): each channel's mean, and its
//! gate applied in place.

use super::*;

/// `x * gate(mean(x))`, with `mean(x)` each `[h, w]` plane's mean as `[n, c]` and `gate` its
/// per-channel factors (`[n, c]`); `Err(x)` when `x` is not an eligible f32 map. Why: composed
/// of Burn's ops, the mean took two passes over the map and the product a third into a new
/// tensor (squeeze-excite was 15 % of EfficientNet-B0's forward at batch 8); here the mean is
/// one pass and the gate scales the map in place.
pub fn squeeze_excite(
    x: Tensor<4>,
    gate: impl FnOnce(Tensor<2>) -> Tensor<2>,
) -> Result<Tensor<4>, Tensor<4>> {
    let [n, c, h, w] = x.dims();
    if !eligible(Kernel::Activations, &x) || h * w == 0 {
        return Err(x);
    }
    let device = x.device();
    let mut t = owned(eligible_input(x));
    let means: Vec<f32> = t.storage::<f32>()[..n * c * h * w]
        .par_chunks_exact(h * w)
        .map(mean)
        .collect();
    let g = gate(Tensor::<2>::from_data(
        TensorData::new(means, [n, c]),
        &device,
    ));
    let g: Vec<f32> = match g.into_data().convert::<f32>().try_to_vec::<f32>() {
        Ok(g) if g.len() == n * c => g,
        _ => panic!("a gate of {n} x {c} factors"),
    };
    t.storage_mut::<f32>()[..n * c * h * w]
        .par_chunks_exact_mut(h * w)
        .zip(g.par_iter())
        .for_each(|(plane, &g)| scale(plane, g));
    Ok(from_flex(t))
}

isa::widest!(pub(crate) fn mean(x: &[f32]) -> f32 = mean_body);
isa::widest!(fn scale(x: &mut [f32], g: f32) = scale_body);

/// The mean, summed in 16 lanes (a sum in one accumulator does not vectorise).
#[inline(always)]
fn mean_body(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for ch in chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a += v;
        }
    }
    (acc.iter().sum::<f32>() + tail) / x.len() as f32
}

#[inline(always)]
fn scale_body(x: &mut [f32], g: f32) {
    for v in x.iter_mut() {
        *v *= g;
    }
}
