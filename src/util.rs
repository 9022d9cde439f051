//! Small helpers shared by the commands.

use std::path::Path;

use anyhow::{Context, Result};
use committee_ops::backend::{BackendKind, Selected, select};
use committee_ops::precision::Dtype;

/// Writes a file atomically ([`committee_core::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(committee_core::write_atomic(path, bytes)?)
}

/// Picks the backend and tells the user which device runs the work.
pub fn device(kind: BackendKind) -> Result<Selected> {
    let sel = select(kind)?;
    eprintln!("backend: {} ({})", sel.kind, sel.adapter);
    if sel.software {
        eprintln!(
            "warning: '{}' is a software GPU adapter; expect it to be slow",
            sel.adapter
        );
    }
    Ok(sel)
}

/// Sets the precision of the CPU products (`--dtype`) and tells the user what runs them.
pub fn precision(dtype: Dtype, sel: &Selected) -> Result<()> {
    let kernel = committee_ops::precision::set(dtype)?;
    if dtype == Dtype::F32 {
        return Ok(());
    }
    let flex = sel.device == burn::tensor::Device::flex();
    match kernel {
        Some(k) if flex => eprintln!(
            "dtype: bf16 products on {} (f32 accumulation; depthwise, norms, attention f32)",
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
