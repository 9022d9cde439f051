//! The one atomic file writer every output goes through (caches, checkpoints, exports,
//! specs, plots, tensor outputs): a reader never sees a torn file.

use std::path::Path;

/// A failed atomic write: the file that could not be created, written or renamed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WriteError {
    pub path: String,
    pub source: std::io::Error,
}

/// Environment variable for crash tests: abort the process half-way through overwriting an
/// existing file with this name (simulates `kill -9` during a checkpoint write).
pub const ABORT_DURING_WRITE: &str = "COMMITTEE_ABORT_DURING_WRITE";

/// Writes a file atomically: a temporary file beside it (synced), then a rename. A crash at
/// any point leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    use std::io::Write;
    let fail = |p: &Path, source| WriteError {
        path: p.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| fail(&tmp, e))?;
    if path.exists() && std::env::var_os(ABORT_DURING_WRITE).is_some_and(|v| v == name.as_str()) {
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        let _ = f.sync_all();
        std::process::abort();
    }
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| fail(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(path, e))
}
