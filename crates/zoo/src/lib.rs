//! Image classifiers for committee: architectures as data, a registry of timm names, and
//! loading of timm / torchvision checkpoints. No kernels: every op goes through
//! `committee_ops`, which picks what runs it.

pub mod checkpoint;
pub mod efficientnet;
pub mod export;
pub mod init;
pub mod keys;
pub mod layers;
pub mod manifest;
pub mod model;
pub mod options;
pub mod registry;
pub mod resnet;
pub mod torchvision;
pub mod vit;
pub mod weights;

pub use model::Model;
pub use options::CommonOptions;
pub use registry::{Arch, EvalConfig, Interpolation, ModelSpec};
pub use weights::{LoadError, LoadOptions, Loaded, load};
