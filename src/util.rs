//! Small helpers shared by the commands.

use std::path::Path;

use anyhow::{Context, Result};
use committee_ops::backend::{BackendKind, Selected, select};

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

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
