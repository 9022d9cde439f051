//! Linear layers as one matrix product over all rows.

use super::*;

/// A linear layer `x W + b` (then `ep`) over all leading dimensions at once: one gemm of
/// `[rows, d_in] x [d_in, d_out]` into an output preloaded with the bias, split over rayon's
/// threads by the `gemm` crate. Burn's linear multiplies each leading index apart (for ViT:
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
        None => {
            let mut out = match bias {
                Some(b) => preloaded(rows * d_out, d_out, |_, row| {
                    row.write_copy_of_slice(&b[..d_out]);
                }),
                None => vec![0f32; rows * d_out],
            };
            gemm_rows([rows, d_out, d_in], &mut out, inp, wts, bias.is_some());
            if ep != Epilogue::None {
                let isa = Isa::get();
                out.par_chunks_mut(CHUNK).for_each(|r| isa.epilogue(r, ep));
            }
            out
        }
    };
    let mut shape = dims;
    shape[D - 1] = d_out;
    Ok(from_flex(FlexTensor::from_data(TensorData::new(
        out, shape,
    ))))
}
