//! Depthwise convolution (inference) with the activation fused.

use super::*;
use std::mem::MaybeUninit;

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
    if k > MAX_K {
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
    // Written plane by plane into fresh memory (every element stored by the kernel).
    let len = n * c * oh * ow;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let isa = Isa::get();
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(oh * ow)
        .enumerate()
        .for_each_init(Vec::new, |scratch, (p, o)| {
            let ch = p % c;
            let plane = &inp[p * h * w..(p + 1) * h * w];
            let taps = &wts[ch * k * k..(ch + 1) * k * k];
            let b = bias.map_or(0.0, |b| b[ch]);
            isa.depthwise_plane(plane, o, taps, b, &geo, ep, scratch);
        });
    // SAFETY: `depthwise_plane` stores every element of each plane it is given, and the
    // planes cover `len`.
    unsafe { out.set_len(len) };
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

/// Output columns computed together, in registers (one AVX-512 vector, two AVX2 ones).
pub(crate) const V: usize = 16;

/// Largest kernel side the plane kernel takes (its tap offsets live in a fixed array).
pub(crate) const MAX_K: usize = 7;

/// One output plane of a depthwise convolution.
///
/// The input plane is first copied into `scratch` with its zero padding made explicit and,
/// for stride `s > 1`, each row split into `s` phases (`x[j*s + p]` -> phase `p`, index `j`),
/// so that every tap reads `V` consecutive floats without bounds or stride. Each block of `V`
/// output columns then accumulates all `k * k` taps in registers (`LANES` wide: 16 for
/// AVX-512, 8 for AVX2, else plain code), at offsets computed once per plane (per tap, `kw % s`
/// had compiled to an integer division), and the activation is applied before the block is
/// stored.
#[inline(always)]
pub(crate) fn depthwise_plane<const FMA: bool, const LANES: usize>(
    inp: &[f32],
    out: &mut [MaybeUninit<f32>],
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
    // Input columns that land inside the padded window, and where the first one lands.
    let first = g.pl;
    let n = w.min(cols.saturating_sub(first));
    for r in 0..rows {
        let ih = r as isize - g.pt as isize;
        if ih < 0 || ih >= h as isize {
            continue;
        }
        let src = &inp[ih as usize * w..][..n];
        let row = &mut scratch[r * s * lp..][..s * lp];
        match s {
            1 => row[first..][..n].copy_from_slice(src),
            2 => split_pairs(src, first, row.split_at_mut(lp)),
            _ => {
                for (i, &v) in src.iter().enumerate() {
                    let c = first + i;
                    row[(c % s) * lp + c / s] = v;
                }
            }
        }
    }
    // Each tap's offset from the first row of an output row's window.
    let mut offs = [0usize; MAX_K * MAX_K];
    for (t, off) in offs[..k * k].iter_mut().enumerate() {
        let (kh, kw) = (t / k, t % k);
        *off = (kh * s + kw % s) * lp + kw / s;
    }
    let (offs, taps) = (&offs[..k * k], &taps[..k * k]);
    // Blocks of `V` output columns, `U` at a time (along a row, then on to the next rows):
    // one block's taps are a chain of dependent multiply-adds, so `U` independent chains
    // keep the FMA units busy; one at a time, the chain's latency bound the kernel (it ran
    // at 2-5 GMAC/s, the largest part of EfficientNet-B0's forward).
    let (ow, nb) = (g.ow, g.ow.div_ceil(V));
    let units = oh * nb;
    let start = |u: usize| (u / nb) * s * s * lp + (u % nb) * V;
    let mut u = 0;
    while u < units {
        let cnt = (units - u).min(U);
        // Past the last block: the last one again (computed, not stored).
        let starts: [usize; U] = std::array::from_fn(|i| start(u + i.min(cnt - 1)));
        let mut acc = match LANES {
            // SAFETY: `LANES` names the instruction set the caller was compiled for.
            #[cfg(target_arch = "x86_64")]
            16 => unsafe { blocks_avx512(scratch, starts, offs, taps, bias) },
            #[cfg(target_arch = "x86_64")]
            8 => unsafe { blocks_avx2(scratch, starts, offs, taps, bias) },
            _ => blocks_plain::<FMA>(scratch, starts, offs, taps, bias),
        };
        epilogue::<FMA>(acc[..cnt].as_flattened_mut(), ep);
        for (i, acc) in acc[..cnt].iter().enumerate() {
            let (o, b) = ((u + i) / nb, (u + i) % nb);
            let len = V.min(ow - b * V);
            out[o * ow + b * V..][..len].write_copy_of_slice(&acc[..len]);
        }
        u += cnt;
    }
}

/// Blocks computed together (see [`depthwise_plane`]).
const U: usize = 4;

/// `U` blocks of `V` output columns, block `i` read from `src[starts[i]..]`: `bias + sum over
/// taps of taps[t] * src[starts[i] + offs[t]..][..V]`. Written once per register width: as a
/// plain loop over a `[f32; V]`, LLVM split the 16 lanes over scalar, 4- and 8-lane FMAs
/// (perf: half of EfficientNet-B0's bf16 forward).
#[inline(always)]
fn blocks_plain<const FMA: bool>(
    src: &[f32],
    starts: [usize; U],
    offs: &[usize],
    taps: &[f32],
    bias: f32,
) -> [[f32; V]; U] {
    let mut acc = [[bias; V]; U];
    for (&off, &wv) in offs.iter().zip(taps) {
        for (acc, &st) in acc.iter_mut().zip(&starts) {
            let x = &src[st + off..][..V];
            for l in 0..V {
                acc[l] = madd::<FMA>(wv, x[l], acc[l]);
            }
        }
    }
    acc
}

/// [`blocks_plain`] in one AVX-512 register per block. Safety: the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn blocks_avx512(
    src: &[f32],
    starts: [usize; U],
    offs: &[usize],
    taps: &[f32],
    bias: f32,
) -> [[f32; V]; U] {
    use std::arch::x86_64::*;
    let mut out = [[0f32; V]; U];
    // SAFETY: every load reads the `V` floats the slice `src[st + off..][..V]` checked.
    unsafe {
        let mut acc = [_mm512_set1_ps(bias); U];
        for (&off, &wv) in offs.iter().zip(taps) {
            let w = _mm512_set1_ps(wv);
            for (acc, &st) in acc.iter_mut().zip(&starts) {
                let x = src[st + off..][..V].as_ptr();
                *acc = _mm512_fmadd_ps(w, _mm512_loadu_ps(x), *acc);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a);
        }
    }
    out
}

/// [`blocks_plain`] in two AVX2 registers per block. Safety: the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn blocks_avx2(
    src: &[f32],
    starts: [usize; U],
    offs: &[usize],
    taps: &[f32],
    bias: f32,
) -> [[f32; V]; U] {
    use std::arch::x86_64::*;
    let mut out = [[0f32; V]; U];
    // SAFETY: every load reads inside the `V` floats the slice `src[st + off..][..V]` checked.
    unsafe {
        let mut acc = [(_mm256_set1_ps(bias), _mm256_set1_ps(bias)); U];
        for (&off, &wv) in offs.iter().zip(taps) {
            let w = _mm256_set1_ps(wv);
            for ((lo, hi), &st) in acc.iter_mut().zip(&starts) {
                let x = src[st + off..][..V].as_ptr();
                *lo = _mm256_fmadd_ps(w, _mm256_loadu_ps(x), *lo);
                *hi = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.add(8)), *hi);
            }
        }
        for (o, (lo, hi)) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(o.as_mut_ptr(), lo);
            _mm256_storeu_ps(o.as_mut_ptr().add(8), hi);
        }
    }
    out
}

/// A padded row split into its two stride-2 phases: padded column `c = first + i` of
/// `src[i]` goes to phase `c % 2` at index `c / 2`. Pairwise, so the loop vectorises as a
/// deinterleave (the general `step_by` copy ran one element at a time).
#[inline(always)]
pub(crate) fn split_pairs(src: &[f32], first: usize, (even, odd): (&mut [f32], &mut [f32])) {
    let mut src = src;
    let mut c = first;
    if c % 2 == 1
        && let Some((&v, rest)) = src.split_first()
    {
        odd[c / 2] = v;
        src = rest;
        c += 1;
    }
    let j0 = c / 2;
    let pairs = src.chunks_exact(2);
    let tail = pairs.remainder();
    let m = src.len() / 2;
    for ((e, o), p) in even[j0..j0 + m]
        .iter_mut()
        .zip(&mut odd[j0..j0 + m])
        .zip(pairs)
    {
        *e = p[0];
        *o = p[1];
    }
    if let Some(&v) = tail.first() {
        even[j0 + m] = v;
    }
}
