//! Command-line arguments shared by several commands, parsed and checked once.

use committee_data::eval_config::Interpolation;
use committee_data::transform::EvalTransform;

/// Preprocessing overrides shared by the commands that read images.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PreprocessArgs {
    /// Crop size (default: the model's eval size).
    #[arg(long)]
    pub img_size: Option<usize>,
    /// Resize the shorter side to floor(img_size / crop_pct).
    #[arg(long)]
    pub crop_pct: Option<f64>,
    /// bicubic or bilinear.
    #[arg(long)]
    pub interpolation: Option<Interpolation>,
    /// Three comma-separated values.
    #[arg(long, value_delimiter = ',', num_args = 3)]
    pub mean: Option<Vec<f64>>,
    #[arg(long, value_delimiter = ',', num_args = 3)]
    pub std: Option<Vec<f64>>,
    /// torchvision style: resize the shorter side to exactly this (then crop img_size).
    #[arg(long)]
    pub resize_size: Option<usize>,
}

impl PreprocessArgs {
    pub fn apply(&self, mut t: EvalTransform) -> EvalTransform {
        if let Some(s) = self.img_size {
            t.img_size = s;
        }
        if let Some(c) = self.crop_pct {
            t.crop_pct = c;
        }
        if let Some(i) = self.interpolation {
            t.interpolation = i;
        }
        if let Some(m) = &self.mean {
            t.mean = [m[0], m[1], m[2]];
        }
        if let Some(s) = &self.std {
            t.std = [s[0], s[1], s[2]];
        }
        if self.resize_size.is_some() {
            t.resize = self.resize_size;
        }
        t
    }
}
