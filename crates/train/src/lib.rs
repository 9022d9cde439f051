//! Training committee members from scratch: the loop, optimisers with PyTorch semantics,
//! warmup + cosine schedule, augmentation, and atomic, resumable checkpoints.

pub mod augment;
pub mod config;
pub mod loss;
pub mod mixed;
pub mod optim;
pub mod rng;
pub mod schedule;
pub mod trainer;

use std::path::Path;

pub use config::{OptKind, TrainConfig, TrainDtype};
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
    #[error(
        "{0} already holds a trained model (model.safetensors or best.safetensors): pass --force to overwrite it, or choose another --out"
    )]
    HoldsModel(String),
    #[error(
        "training diverged in epoch {epoch}, step {step} (loss is not finite at lr {lr:.3e}); lower --lr"
    )]
    Diverged { epoch: usize, step: usize, lr: f64 },
    #[error(
        "training diverged in epoch {epoch} (after step {step}): weight '{tensor}' is not finite; the last good checkpoint is kept; lower --lr"
    )]
    NonFiniteWeights {
        epoch: usize,
        step: usize,
        tensor: String,
    },
}

/// How `train` treats a run folder that already holds files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run; refused where a checkpoint or a trained model would be overwritten.
    New,
    /// Continue from the folder's checkpoint.
    Resume,
    /// A new run over whatever the folder holds (`--force`).
    Overwrite,
}

/// Writes a file atomically (see [`committee_core::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    committee_core::write_atomic(path, bytes).map_err(|e| TrainError::Io {
        path: e.path,
        reason: e.source.to_string(),
    })
}
