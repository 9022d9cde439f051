//! Images for committee: decoding, timm-exact eval preprocessing, ImageNet labels.

pub mod labels;
pub mod transform;

pub use transform::{DecodeError, EvalTransform, decode};
