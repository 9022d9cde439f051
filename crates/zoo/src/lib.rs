//! Image classifiers for committee: architectures as data, a registry of timm names, and
//! loading of timm / torchvision checkpoints.

pub mod backend;
pub mod checkpoint;
pub mod efficientnet;
pub mod export;
pub mod heap;
#[cfg(feature = "flex")]
pub mod kernels;
pub mod layers;
pub mod manifest;
pub mod model;
pub mod profile;
pub mod registry;
pub mod resample;
pub mod resnet;
#[cfg(feature = "flex")]
mod train_kernels;
pub mod vit;
pub mod weights;

pub use efficientnet::CommonOptions;
pub use model::Model;
pub use registry::{Arch, EvalConfig, Interpolation, ModelSpec};
pub use weights::{LoadError, LoadOptions, Loaded, load};
