//! A model's eval preprocessing as data: what the zoo's registry, checkpoints and `eval` share.

use serde::{Deserialize, Serialize};

/// How images are resized (PIL's filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

impl std::fmt::Display for Interpolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        })
    }
}

impl std::str::FromStr for Interpolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bilinear" => Ok(Self::Bilinear),
            "bicubic" => Ok(Self::Bicubic),
            _ => Err(format!("unknown interpolation '{s}' (bilinear or bicubic)")),
        }
    }
}

/// timm's eval transform for a model's default pretrained tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    pub img_size: usize,
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];
pub const HALF: [f64; 3] = [0.5, 0.5, 0.5];
