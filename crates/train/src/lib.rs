//! Training committee members from scratch: the loop, optimisers with PyTorch semantics,
//! warmup + cosine schedule, augmentation, and atomic, resumable checkpoints.

pub mod augment;
pub mod config;
pub mod loss;
pub mod rng;
pub mod schedule;
pub mod trainer;

use std::io::Write;
use std::path::Path;

pub use config::{OptKind, TrainConfig};
pub use trainer::{EpochRow, Event, Outcome, train};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path}: bad configuration: {reason}")]
    Config { path: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("unknown model '{0}' (see `committee models`)")]
    UnknownModel(String),
    #[error("{0}")]
    Data(String),
    #[error("{path}: cannot use this checkpoint: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error(
        "{0} already holds a training checkpoint: pass --resume to continue it, or choose another --out"
    )]
    Exists(String),
    #[error("training diverged in epoch {epoch} (loss is not finite at lr {lr:.3e}); lower --lr")]
    Diverged { epoch: usize, lr: f64 },
}

/// Environment variable for the crash test: abort the process half-way through overwriting an
/// existing file with this name (simulates `kill -9` during a checkpoint write).
pub const ABORT_DURING_WRITE: &str = "COMMITTEE_ABORT_DURING_WRITE";

/// Writes a file atomically: a temporary file beside it (synced), then a rename. A crash at
/// any point leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let io = |p: &Path, e: std::io::Error| TrainError::Io {
        path: p.display().to_string(),
        reason: e.to_string(),
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
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    if path.exists() && std::env::var_os(ABORT_DURING_WRITE).is_some_and(|v| v == name.as_str()) {
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        let _ = f.sync_all();
        std::process::abort();
    }
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}
