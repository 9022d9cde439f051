//! Inference kernels for the flex (CPU) backend where Burn's are slow: SiLU, ReLU/ReLU6, GELU,
//! depthwise and dense convolution and linear layers (with the activation fused in).
//!
//! Why: a profile of EfficientNet-B0 on flex (`committee bench --profile`, docs/benchmarks.md)
//! spent 60% of the forward in SiLU, which Burn composes as `x * sigmoid(x)` from two
//! single-threaded scalar passes, and ran depthwise convolutions at ~2 GMAC/s. These kernels
//! work on the flex tensor's storage directly (Burn's documented backend-extension route,
//! `Tensor::try_into_primitive`), in place when the tensor is not shared, split over rayon's
//! pool, and are compiled three times (baseline, AVX2+FMA, AVX-512) with the widest one the
//! CPU has chosen at run time.
//!
//! The entry points return `Err(input)` untouched when they do not apply, so the caller falls
//! back to Burn without a copy (hence `clippy::result_large_err` is allowed: a `Tensor` is
//! large, but it is moved, not built).
//!
//! They apply only to f32 tensors on the flex device without autodiff; everything else
//! (wgpu, ndarray, other dtypes) takes Burn's own ops. Training on flex has its own ops with
//! their backward passes in [`train`] (switched with [`Kernel::Train`]).
//!
//! One file per kernel; this file holds what they share: the eligibility check, the way in
//! and out of flex's storage, and a convolution's padding and output size.

pub mod activation;
pub(crate) mod aligned;
pub mod attention;
pub mod batch;
pub mod bf16;
pub mod conv;
#[cfg(target_arch = "x86_64")]
pub mod conv_taps;
pub mod depthwise;
pub mod isa;
pub mod linear;
pub mod linear_packed;
pub mod matmul;
pub mod optim;
pub mod pool;
pub mod se;
#[cfg(test)]
mod tests;
pub mod train;

pub use activation::{activation, relu6_parts, silu_parts};
pub use attention::attention;
pub use batch::split_batch;
pub use conv::{conv_gemm, conv_gemm_add};
pub use depthwise::depthwise;
pub use isa::Epilogue;
pub use linear::linear;
pub use pool::max_pool;
pub use se::squeeze_excite;

pub(crate) use conv::*;
pub(crate) use depthwise::*;
pub(crate) use isa::*;
pub(crate) use matmul::*;

pub(crate) use crate::kernel::{Kernel, on};

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// True when `x` can take `kernel`: it is on, and `x` is f32 on flex outside autodiff.
pub(crate) fn eligible<const D: usize>(kernel: Kernel, x: &Tensor<D>) -> bool {
    let device = x.device();
    on(kernel) && x.dtype() == DType::F32 && !device.is_autodiff() && device == Device::flex()
}

pub(crate) fn into_flex<const D: usize>(x: Tensor<D>) -> Option<FlexTensor> {
    x.try_into_primitive::<Flex>().ok()
}

/// An eligible input (see [`eligible`]) as a contiguous flex tensor.
pub(crate) fn eligible_input<const D: usize>(x: Tensor<D>) -> FlexTensor {
    match into_flex(x) {
        Some(t) => contiguous(t),
        None => unreachable!("eligible() checked the backend"),
    }
}

pub(crate) fn from_flex<const D: usize>(t: FlexTensor) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(t)
}

/// `dst` as memory a kernel that writes into fresh memory may overwrite: the kernels that
/// write every element of their output take it so, and an output already initialised goes
/// in through this view.
pub(crate) fn as_uninit(dst: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout; only initialised values are written
    // through the view, so `dst` stays initialised.
    unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// `dst` as the floats it holds.
///
/// # Safety
/// Every element of `dst` has been written.
pub(crate) unsafe fn assume_written(dst: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the caller vouches for the values.
    unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A kernel's output, `data` in row-major order, as a flex tensor of `shape`.
pub(crate) fn from_vec<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    from_elems(data, shape)
}

/// [`from_vec`] for f32 or bf16 elements (a bf16 tensor from bf16's bits), without a copy.
pub(crate) fn from_elems<T: bf16::Elem, const D: usize>(
    data: Vec<T>,
    shape: [usize; D],
) -> Tensor<D> {
    let mut data = std::mem::ManuallyDrop::new(data);
    let (ptr, len, cap) = (data.as_mut_ptr(), data.len(), data.capacity());
    // SAFETY: `Elem` is sealed: `T` is u16 when `BF16` (bf16 is a transparent u16) and f32
    // otherwise, so the allocation's size and alignment are those of the new element type.
    let data = unsafe {
        match T::BF16 {
            true => TensorData::new(
                Vec::from_raw_parts(ptr.cast::<burn::tensor::bf16>(), len, cap),
                shape,
            ),
            false => TensorData::new(Vec::from_raw_parts(ptr.cast::<f32>(), len, cap), shape),
        }
    };
    from_flex(FlexTensor::from_data(data))
}

/// A contiguous flex tensor's elements as `T`: f32, or bf16's bits. Panics when the tensor
/// holds the other type.
pub(crate) fn elems<T: bf16::Elem>(t: &FlexTensor) -> &[T] {
    let (ptr, len) = match T::BF16 {
        true => {
            let s = t.storage::<burn::tensor::bf16>();
            (s.as_ptr().cast::<T>(), s.len())
        }
        false => {
            let s = t.storage::<f32>();
            (s.as_ptr().cast::<T>(), s.len())
        }
    };
    // SAFETY: as in `from_elems`, `T` is the storage's element type or its transparent bits.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// Whether `x` is a bf16 activation `kernel` reads under `--dtype bf16` (see [`bf16::Elem`]):
/// the kernel is on, a bf16 kernel is in use, and `x` is bf16 on flex outside autodiff.
pub(crate) fn bf16_activation<const D: usize>(kernel: Kernel, x: &Tensor<D>) -> bool {
    let device = x.device();
    on(kernel)
        && x.dtype() == DType::BF16
        && crate::precision::bf16_kernel().is_some()
        && !device.is_autodiff()
        && device == Device::flex()
}

/// A contiguous, unshared flex tensor, to write in place (copies only when it has to).
pub(crate) fn owned(t: FlexTensor) -> FlexTensor {
    if t.is_unique() {
        contiguous(t)
    } else {
        t.to_contiguous()
    }
}

/// A flex tensor whose storage starts with its elements in order (copies only when needed).
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    let l = t.layout();
    if l.is_contiguous() && l.start_offset() == 0 {
        t
    } else {
        t.to_contiguous()
    }
}

/// Elements per rayon task: big enough to amortise scheduling, small enough to balance.
pub(crate) const CHUNK: usize = 1 << 14;

/// The flat f32 storages a convolution kernel reads, each contiguous.
pub(crate) struct Operands {
    pub(crate) weight: FlexTensor,
    pub(crate) bias: Option<FlexTensor>,
    pub(crate) input: FlexTensor,
}

impl Operands {
    pub(crate) fn slices(&self) -> (&[f32], Option<&[f32]>, &[f32]) {
        (
            self.weight.storage::<f32>(),
            self.bias.as_ref().map(|b| b.storage::<f32>()),
            self.input.storage::<f32>(),
        )
    }
}

/// A layer's weight and bias and the input `x` as contiguous flex storages; `Err(x)` when
/// the weight is not on flex. The caller has checked that `x` is eligible.
pub(crate) fn operands<const W: usize, const D: usize>(
    weight: &Param<Tensor<W>>,
    bias: Option<&Param<Tensor<1>>>,
    x: Tensor<D>,
) -> Result<Operands, Tensor<D>> {
    let Some((weight, bias)) = params(weight, bias) else {
        return Err(x);
    };
    let input = eligible_input(x);
    Ok(Operands {
        weight,
        bias,
        input,
    })
}

/// A layer's weight and bias as contiguous flex storages; `None` when the weight is not on
/// flex.
pub(crate) fn params<const W: usize>(
    weight: &Param<Tensor<W>>,
    bias: Option<&Param<Tensor<1>>>,
) -> Option<(FlexTensor, Option<FlexTensor>)> {
    let weight = into_flex(weight.val()).map(contiguous)?;
    let bias = bias.and_then(|b| into_flex(b.val())).map(contiguous);
    Some((weight, bias))
}

/// Padding (top, bottom, left, right) and output size of a convolution, as Burn's `Conv2d`
/// computes them.
pub(crate) struct Window {
    pub pt: usize,
    pub pb: usize,
    pub pl: usize,
    pub pr: usize,
    pub oh: usize,
    pub ow: usize,
}

/// `conv`'s [`Window`] on an `h` x `w` input; `None` when the padded input is smaller than the
/// kernel.
pub(crate) fn window(conv: &Conv2d, [h, w]: [usize; 2]) -> Option<Window> {
    let [kh, kw] = conv.kernel_size;
    let [sh, sw] = conv.stride;
    // TensorFlow's SAME: the output is ceil(len / s), the extra pixel goes after.
    let same = |len: usize, k: usize, s: usize| {
        let out = len.div_ceil(s);
        let total = if out > 0 {
            ((out - 1) * s + k).saturating_sub(len)
        } else {
            0
        };
        (total / 2, total - total / 2)
    };
    let ((pt, pb), (pl, pr)) = match conv.padding {
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        PaddingConfig2d::Same => (same(h, kh, sh), same(w, kw, sw)),
        PaddingConfig2d::Explicit(t, l, b, r) => ((t, b), (l, r)),
    };
    if h + pt + pb < kh || w + pl + pr < kw {
        return None;
    }
    Some(Window {
        pt,
        pb,
        pl,
        pr,
        oh: (h + pt + pb - kh) / sh + 1,
        ow: (w + pl + pr - kw) / sw + 1,
    })
}
