//! The precision of the CPU kernels' matrix products (`--dtype`), chosen once per process.
//!
//! `bf16` runs the dense convolutions and linear layers on flex with bf16 operands and f32
//! accumulation (PyTorch's CPU autocast does the same to the same ops); everything else stays
//! f32 (depthwise convolutions, normalisation, activations, attention's softmax products).
//! Where the CPU has neither AMX nor AVX512-BF16 it stays f32 and says so.
//!
//! `f16` is for GPU devices: the whole model (weights and activations) runs in half precision
//! there, inputs cast on the way in and logits back to f32 on the way out
//! ([`gpu_float`]). CPU backends refuse it (their half-precision path is bf16).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::cpu::bf16::Bf16Kernel;

/// The precisions `--dtype` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dtype {
    #[default]
    F32,
    Bf16,
    F16,
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            _ => Err(format!("unknown dtype '{s}' (f32, bf16, f16)")),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

/// Why a precision could not be set.
#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    #[error("COMMITTEE_BF16_KERNEL='{0}' is not a bf16 kernel (amx, avx512-bf16, emulated)")]
    UnknownKernel(String),
    #[error("COMMITTEE_BF16_KERNEL='{0}': this CPU (or OS) cannot run it")]
    Unavailable(String),
}

/// Whether GPU devices run in f16 (`--dtype f16`).
static HALF: AtomicBool = AtomicBool::new(false);

/// The float type models on `device` run in: `Some(F16)` on GPU devices under `--dtype f16`,
/// `None` (f32) otherwise.
pub fn gpu_float(device: &burn::tensor::Device) -> Option<burn::tensor::FloatDType> {
    (HALF.load(Ordering::Relaxed) && !crate::backend::is_cpu(device))
        .then_some(burn::tensor::FloatDType::F16)
}

/// 0: f32; otherwise 1 + the index of the bf16 kernel in [`Bf16Kernel::ALL`].
static STATE: AtomicU8 = AtomicU8::new(0);

/// Sets the products' precision for the rest of the process and returns the bf16 kernel that
/// runs them (`None`: f32, asked for or the only one this CPU has). `COMMITTEE_BF16_KERNEL`
/// forces a kernel (`amx`, `avx512-bf16`, or `emulated`, which is slow: for checks only).
pub fn set(dtype: Dtype) -> Result<Option<Bf16Kernel>, PrecisionError> {
    HALF.store(dtype == Dtype::F16, Ordering::Relaxed);
    let kernel = match dtype {
        Dtype::F32 | Dtype::F16 => None,
        Dtype::Bf16 => match std::env::var("COMMITTEE_BF16_KERNEL") {
            Ok(name) if !name.is_empty() => {
                let k = Bf16Kernel::from_name(&name)
                    .ok_or_else(|| PrecisionError::UnknownKernel(name.clone()))?;
                if !k.available() {
                    return Err(PrecisionError::Unavailable(name));
                }
                Some(k)
            }
            _ => Bf16Kernel::detect(),
        },
    };
    use_kernel(kernel)?;
    Ok(kernel)
}

/// Runs the products on `kernel` (`None`: f32) from now on: [`set`] without the detection,
/// for benchmarks that time the kernels in turn.
pub fn use_kernel(kernel: Option<Bf16Kernel>) -> Result<(), PrecisionError> {
    if let Some(k) = kernel.filter(|k| !k.available()) {
        return Err(PrecisionError::Unavailable(k.name().into()));
    }
    let code = kernel.map_or(0, |k| {
        1 + Bf16Kernel::ALL.iter().position(|x| *x == k).unwrap_or(0)
    });
    STATE.store(code as u8, Ordering::Relaxed);
    Ok(())
}

/// The bf16 kernel the CPU products use, `None` for f32.
pub fn bf16_kernel() -> Option<Bf16Kernel> {
    match STATE.load(Ordering::Relaxed) {
        0 => None,
        c => Bf16Kernel::ALL.get(c as usize - 1).copied(),
    }
}

/// Drops the packed copies of weights (bf16 and f32), which are known by parameter id and
/// storage address and so cannot tell a weight's values apart after an optimiser step (in
/// place, or at a reused address): a trainer calls it after optimiser steps, before an
/// evaluation.
pub fn forget_packed_weights() {
    crate::cpu::bf16::cache::clear();
}

/// What runs the products, for the printouts: `f32`, `bf16 (amx)`, ...
pub fn describe() -> String {
    match bf16_kernel() {
        None if HALF.load(Ordering::Relaxed) => "f16".into(),
        None => "f32".into(),
        Some(k) => format!("bf16 ({})", k.name()),
    }
}
