//! Depthwise convolution (inference) with the activation fused.

use super::*;

/// A depthwise convolution (one input channel per group, channel multiplier 1) with `ep`
/// applied to its output; `Err(x)` when the layer or input is not one this kernel handles.
pub fn depthwise(conv: &Conv2d, x: Tensor<4>, ep: Epilogue) -> Result<Tensor<4>, Tensor<4>> {
    let [_, _, kh, _] = conv.weight.lazy_shape().dims::<4>();
    let [n, c, h, w] = x.dims();
    if !(eligible(Kernel::Depthwise, &x) && is_depthwise(conv, c)) {
        return Err(x);
    }
    let (k, s) = (kh, conv.stride[0]);
    let Some(Window { pt, pl, oh, ow, .. }) = window(conv, [h, w]) else {
        return Err(x);
    };
    if ow >= WIDE {
        return Err(x);
    }
    let ops = operands(&conv.weight, conv.bias.as_ref(), x)?;
    let (wts, bias, inp) = ops.slices();
    let geo = Geometry {
        h,
        w,
        ow,
        k,
        s,
        pt,
        pl,
    };
    let mut out = vec![0f32; n * c * oh * ow];
    let isa = Isa::get();
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each_init(Vec::new, |scratch, (p, o)| {
            let ch = p % c;
            let plane = &inp[p * h * w..(p + 1) * h * w];
            let taps = &wts[ch * k * k..(ch + 1) * k * k];
            let b = bias.map_or(0.0, |b| b[ch]);
            isa.depthwise_plane(plane, o, taps, b, &geo, ep, scratch);
        });
    let t = FlexTensor::from_data(TensorData::new(out, [n, c, oh, ow]));
    Ok(from_flex(t))
}

/// True when `conv` is the depthwise layer the kernels handle on `c` input channels: one input
/// channel per group, channel multiplier 1, square kernel, equal strides, no dilation.
pub(crate) fn is_depthwise(conv: &Conv2d, c: usize) -> bool {
    let [c_out, cin_g, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    cin_g == 1
        && conv.groups == c
        && c_out == c
        && kh == kw
        && conv.stride[0] == conv.stride[1]
        && conv.dilation == [1, 1]
}

#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub h: usize,
    pub w: usize,
    pub ow: usize,
    pub k: usize,
    pub s: usize,
    pub pt: usize,
    pub pl: usize,
}

/// From this output width on, Burn's depthwise kernel is faster (memory-bound maps, where
/// the padded copy costs more than it saves; `cargo bench --bench layers -- depthwise`).
pub(crate) const WIDE: usize = 32;

/// Output columns computed together, in registers (one AVX-512 vector, two AVX2 ones).
pub(crate) const V: usize = 16;

/// One output plane of a depthwise convolution.
///
/// The input plane is first copied into `scratch` with its zero padding made explicit and,
/// for stride `s > 1`, each row split into `s` phases (`x[j*s + p]` -> phase `p`, index `j`),
/// so that every tap reads `V` consecutive floats without bounds or stride. Each block of `V`
/// output columns then accumulates all `k * k` taps in registers, and the activation is
/// applied to each finished output row while it is in cache.
#[inline(always)]
pub(crate) fn depthwise_plane<const FMA: bool>(
    inp: &[f32],
    out: &mut [f32],
    taps: &[f32],
    bias: f32,
    g: &Geometry,
    ep: Epilogue,
    scratch: &mut Vec<f32>,
) {
    let (s, k, h, w) = (g.s, g.k, g.h, g.w);
    let oh = out.len() / g.ow;
    // Padded rows and columns the taps can reach.
    let (rows, cols) = ((oh - 1) * s + k, (g.ow - 1) * s + k);
    // Phase row length, with slack so the last block's vector read stays inside.
    let lp = cols.div_ceil(s) + V;
    scratch.clear();
    scratch.resize(rows * s * lp, 0.0);
    for r in 0..rows {
        let ih = r as isize - g.pt as isize;
        if ih < 0 || ih >= h as isize {
            continue;
        }
        let src = &inp[ih as usize * w..][..w];
        // Input columns that land inside the padded window.
        let first = g.pl;
        let n = w.min(cols.saturating_sub(first));
        if s == 1 {
            scratch[r * lp + first..][..n].copy_from_slice(&src[..n]);
        } else {
            for p in 0..s {
                // The first input column of phase p, and its index within the phase.
                let iw0 = (p + s - first % s) % s;
                if iw0 >= n {
                    continue;
                }
                let dst = &mut scratch[(r * s + p) * lp + (iw0 + first) / s..];
                for (d, v) in dst.iter_mut().zip(src[iw0..n].iter().step_by(s)) {
                    *d = *v;
                }
            }
        }
    }
    for (o, orow) in out.chunks_exact_mut(g.ow).enumerate() {
        let mut ow0 = 0;
        while ow0 < g.ow {
            let mut acc = [bias; V];
            for kh in 0..k {
                let r = o * s + kh;
                for kw in 0..k {
                    let at = (r * s + kw % s) * lp + ow0 + kw / s;
                    let Some(src) = scratch[at..].first_chunk::<V>() else {
                        continue;
                    };
                    let wv = taps[kh * k + kw];
                    for l in 0..V {
                        acc[l] = madd::<FMA>(wv, src[l], acc[l]);
                    }
                }
            }
            let n = V.min(g.ow - ow0);
            orow[ow0..ow0 + n].copy_from_slice(&acc[..n]);
            ow0 += V;
        }
        // The row is still in L1; over the whole row the activation vectorises.
        epilogue::<FMA>(orow, ep);
    }
}
