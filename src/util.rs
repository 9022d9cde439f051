//! Small helpers shared by the commands.

use std::path::Path;

use anyhow::{Context, Result};
use committee_ops::backend::{BackendKind, Selected, select};
use committee_ops::precision::Dtype;

/// Writes a file atomically ([`committee_core::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(committee_core::write_atomic(path, bytes)?)
}

/// Configures rayon's global pool before anything uses it: `threads` workers (default: as
/// rayon decides, `RAYON_NUM_THREADS` or one per core), each with the main thread's 8 MiB of
/// stack rather than rayon's 2 MiB, since every command now runs on a worker ([`on_pool`]).
pub fn init_pool(threads: Option<usize>) {
    let mut b = rayon::ThreadPoolBuilder::new().stack_size(8 << 20);
    if let Some(t) = threads {
        b = b.num_threads(t);
    }
    // Fails only if the pool already exists, and then it is used as it is.
    b.build_global().ok();
}

/// Runs `f` on a worker of rayon's global pool and waits for it. The kernels' parallel loops
/// then start inside the pool, where rayon runs them by work stealing, instead of each op
/// being handed from the main thread to the pool while the main thread sleeps until it is
/// done (a sleep and a wake-up per op: with one thread, 7 % of a MobileNetV2 training step's
/// samples were the kernel's task switch). Call it once the pool is configured (`--threads`).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // `scope` runs its closure on a pool worker (injected, when called from outside the pool).
    rayon::scope(|_| f())
}

/// Picks the backend and tells the user which device runs the work.
pub fn device(kind: BackendKind) -> Result<Selected> {
    let sel = select(kind)?;
    match sel.compiler() {
        Some(c) => eprintln!("backend: {} ({}; shaders: {c})", sel.kind, sel.adapter),
        None => eprintln!("backend: {} ({})", sel.kind, sel.adapter),
    }
    eprintln!("host: {}", committee_ops::backend::host());
    if sel.software {
        eprintln!(
            "warning: '{}' is a software GPU adapter; expect it to be slow",
            sel.adapter
        );
    }
    Ok(sel)
}

/// Sets the precision (`--dtype`: bf16 products on the CPU, f16 models on GPUs) and tells the
/// user what runs them (for `training`, what a training step keeps in which precision).
pub fn precision(dtype: Dtype, sel: &Selected, training: bool) -> Result<()> {
    let cpu = committee_ops::backend::is_cpu(&sel.device);
    anyhow::ensure!(
        !(dtype == Dtype::F16 && cpu),
        "--dtype f16 runs on GPU backends (wgpu) only; {} is a CPU backend (use --dtype bf16 there)",
        sel.kind
    );
    let kernel = committee_ops::precision::set(dtype)?;
    match dtype {
        Dtype::F32 => return Ok(()),
        Dtype::F16 => {
            anyhow::ensure!(
                sel.device.supports_dtype(burn::tensor::DType::F16),
                "--dtype f16: {} ({}) does not support f16 shaders",
                sel.adapter,
                sel.kind
            );
            match training {
                true => eprintln!(
                    "dtype: f16 mixed precision on {} (f32 master weights; the forward in f16, \
                     BatchNorm and LayerNorm in f32; dynamic loss scaling)",
                    sel.adapter
                ),
                false => eprintln!(
                    "dtype: f16 on {} (weights and activations; logits returned as f32)",
                    sel.adapter
                ),
            }
            return Ok(());
        }
        Dtype::Bf16 => {}
    }
    let flex = sel.device == burn::tensor::Device::flex();
    match kernel {
        Some(k) if flex && training => eprintln!(
            "dtype: bf16 products on {} (f32 accumulation; weights, activations, gradients and \
             optimiser state f32)",
            k.name()
        ),
        Some(k) if flex => eprintln!(
            "dtype: bf16 products on {} (f32 accumulation; depthwise, norms, softmax f32; \
             ResNets' activations bf16)",
            k.name()
        ),
        None if flex => eprintln!(
            "warning: --dtype bf16: this CPU has neither AMX nor AVX512-BF16; running f32"
        ),
        _ => eprintln!(
            "warning: --dtype bf16 runs on flex only so far; {} runs f32",
            sel.kind
        ),
    }
    Ok(())
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
