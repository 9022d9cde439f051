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

/// ImageNet's channel means, timm's default normalisation.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// ImageNet's channel standard deviations, with [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];
/// The (0.5, 0.5) normalisation of the `tf_` and ViT ports.
pub const HALF: [f64; 3] = [0.5, 0.5, 0.5];

impl EvalConfig {
    /// The same ranges the CLI's flags have: a crop of at least 1 pixel, `crop_pct` in
    /// (0, 1], finite means, finite standard deviations above 0.
    pub fn validate(&self) -> Result<(), String> {
        if self.img_size == 0 {
            return Err("img_size must be at least 1".into());
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(format!("crop_pct {} is not in (0, 1]", self.crop_pct));
        }
        if !self.mean.iter().all(|m| m.is_finite()) {
            return Err(format!("mean {:?} is not finite", self.mean));
        }
        if !self.std.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(format!("std {:?} must be finite and above 0", self.std));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_hand() {
        let ok = EvalConfig {
            img_size: 224,
            crop_pct: 0.875,
            interpolation: Interpolation::Bicubic,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        };
        assert!(ok.validate().is_ok());
        let bad = [
            EvalConfig {
                img_size: 0,
                ..ok.clone()
            },
            EvalConfig {
                crop_pct: 0.0,
                ..ok.clone()
            },
            EvalConfig {
                crop_pct: 1.5,
                ..ok.clone()
            },
            EvalConfig {
                mean: [f64::NAN, 0.0, 0.0],
                ..ok.clone()
            },
            EvalConfig {
                std: [0.2, 0.0, 0.2],
                ..ok.clone()
            },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
    }
}
