//! Images for committee: decoding, timm-exact eval preprocessing, ImageNet labels.

pub mod fashion_mnist;
pub mod folder;
pub mod idx;
mod jpeg;
pub mod labels;
pub mod loader;
pub mod transform;

pub use transform::{DecodeError, EvalTransform, decode};
