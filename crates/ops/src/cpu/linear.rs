//! Linear layers as one matrix product over all rows.

use super::*;

/// A linear layer `x W + b` (then `ep`) over all leading dimensions at once: one gemm of
/// `[rows, d_in] x [d_in, d_out]`, split over rayon's threads by the `gemm` crate, then the
/// bias and `ep` in one pass. Burn's linear multiplies each leading index apart (for ViT:
/// one 197-row product per image, batch-parallel) and adds the bias in a second pass.
pub fn linear<const D: usize>(
    lin: &Linear,
    x: Tensor<D>,
    ep: Epilogue,
) -> Result<Tensor<D>, Tensor<D>> {
    let [d_in, d_out] = lin.weight.lazy_shape().dims::<2>();
    let dims = x.dims();
    if !eligible(Kernel::Linear, &x) || dims[D - 1] != d_in {
        return Err(x);
    }
    let ops = operands(&lin.weight, lin.bias.as_ref(), x)?;
    let (wts, bias, inp) = ops.slices();
    let rows = dims[..D - 1].iter().product::<usize>();
    // `inp`: its first rows * d_in elements, contiguous from offset 0.
    let out = match crate::precision::bf16_kernel() {
        Some(kernel) => {
            let w = bf16::cache::right(&lin.weight, &wts[..d_in * d_out], d_in, d_out);
            let a = bf16::PackedA::pack(inp, rows, d_in);
            let bias = bias.map_or(bf16::Bias::None, |b| bf16::Bias::Columns(&b[..d_out]));
            bf16::gemm_new(kernel, &a, &w, bias, ep)
        }
        None if d_in > 0 && linear_packed::pays(rows) && packed_on() => {
            // The weight packed once (`linear_packed`), bias and activation applied as the
            // sums are stored.
            let w = bf16::cache::f32_right(&lin.weight, &wts[..d_in * d_out], d_in, d_out);
            let bias = bias.map_or(bf16::Bias::None, |b| bf16::Bias::Columns(&b[..d_out]));
            let len = rows * d_out;
            let mut out = Vec::with_capacity(len);
            let dst = &mut out.spare_capacity_mut()[..len];
            linear_packed::linear_into(&inp[..rows * d_in], rows, &w, bias, ep, dst);
            // SAFETY: `linear_into` wrote all `len` outputs.
            unsafe { out.set_len(len) };
            out
        }
        None => {
            // The product straight into `out`, then bias and activation in one pass over
            // it (as `conv_gemm`: no preloaded bias for the product to read back).
            let len = rows * d_out;
            let mut out = Vec::with_capacity(len);
            let (lhs, rhs) = (Mat::rows(inp, d_in), Mat::rows(wts, d_out));
            let dst = &mut out.spare_capacity_mut()[..len];
            gemm_into(
                [rows, d_out, d_in],
                dst,
                lhs,
                rhs,
                gemm::Parallelism::Rayon(0),
            );
            // SAFETY: `gemm_into` wrote all `len` outputs.
            unsafe { out.set_len(len) };
            let isa = Isa::get();
            match bias {
                Some(b) if d_out > 0 => {
                    let per = CHUNK.div_ceil(d_out);
                    out.par_chunks_mut(per * d_out).for_each(|rows| {
                        for row in rows.chunks_exact_mut(d_out) {
                            isa.add_epilogue(row, &b[..d_out], ep);
                        }
                    })
                }
                _ if ep != Epilogue::None => {
                    out.par_chunks_mut(CHUNK).for_each(|r| isa.epilogue(r, ep))
                }
                _ => {}
            }
            out
        }
    };
    let mut shape = dims;
    shape[D - 1] = d_out;
    Ok(from_vec(out, shape))
}

/// `fc2(ep(fc1(x)))` with bf16 products, the hidden activation handed from one product to
/// the next packed (`bf16::gemm_packed`): the same values as the two [`linear`] calls, bit
/// for bit, with the hidden layer written once at half the size. `Err(x)` where bf16 products
/// are off or the shapes do not chain (the caller then runs the two layers).
pub fn mlp<const D: usize>(
    fc1: &Linear,
    fc2: &Linear,
    x: Tensor<D>,
    ep: Epilogue,
) -> Result<Tensor<D>, Tensor<D>> {
    let Some(kernel) = crate::precision::bf16_kernel() else {
        return Err(x);
    };
    let [d_in, hidden] = fc1.weight.lazy_shape().dims::<2>();
    let [hidden2, d_out] = fc2.weight.lazy_shape().dims::<2>();
    let dims = x.dims();
    if !eligible(Kernel::Linear, &x) || dims[D - 1] != d_in || hidden2 != hidden {
        return Err(x);
    }
    let Some((w2, b2)) = params(&fc2.weight, fc2.bias.as_ref()) else {
        return Err(x);
    };
    let ops1 = operands(&fc1.weight, fc1.bias.as_ref(), x)?;
    let (wts1, bias1, inp) = ops1.slices();
    let rows = dims[..D - 1].iter().product::<usize>();
    let w1 = bf16::cache::right(&fc1.weight, &wts1[..d_in * hidden], d_in, hidden);
    let a = bf16::PackedA::pack(inp, rows, d_in);
    let bias1 = bias1.map_or(bf16::Bias::None, |b| bf16::Bias::Columns(&b[..hidden]));
    let h = bf16::gemm_packed(kernel, &a, &w1, bias1, ep);
    drop(a);
    let w2 = bf16::cache::right(
        &fc2.weight,
        &w2.storage::<f32>()[..hidden * d_out],
        hidden,
        d_out,
    );
    let bias2 = b2.as_ref().map_or(bf16::Bias::None, |b| {
        bf16::Bias::Columns(&b.storage::<f32>()[..d_out])
    });
    let out = bf16::gemm_new(kernel, &h, &w2, bias2, Epilogue::None);
    let mut shape = dims;
    shape[D - 1] = d_out;
    Ok(from_vec(out, shape))
}

/// Whether f32 linear layers on AVX-512 multiply with the weight packed once
/// ([`linear_packed`]) rather than through the `gemm` crate; [`set_packed`] chooses.
fn packed_on() -> bool {
    linear_packed::available() && PACKED.on()
}

static PACKED: crate::kernel::Switch = crate::kernel::Switch::new(true, None);

/// Turns [`linear_packed`] on (the default where AVX-512 exists) or off for the process: to
/// time one path against the other in one process (`examples/ab_f32_taps.rs` in
/// committee-zoo, switch `linear-packed`).
pub fn set_packed(on: bool) {
    PACKED.set(on);
}
