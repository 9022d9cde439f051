//! Images for committee: decoding, timm-exact eval preprocessing, ImageNet labels. No Burn:
//! this crate builds before the tensor stack and the zoo depends on it, not the reverse.

pub mod eval_config;
pub mod fashion_mnist;
pub mod folder;
pub mod idx;
mod jpeg;
pub mod labels;
pub mod limits;
pub mod loader;
pub mod resample;
pub mod transform;

pub use transform::{DecodeError, EvalTransform, decode};
