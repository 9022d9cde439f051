//! A training run's configuration: read from `--config FILE.toml`, overridden by flags, and
//! written to `RUN/config.toml` as the effective configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::augment::AugmentKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptKind {
    Sgd,
    Adamw,
    Rmsprop,
}

impl std::str::FromStr for OptKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sgd" => Ok(Self::Sgd),
            "adamw" => Ok(Self::Adamw),
            "rmsprop" => Ok(Self::Rmsprop),
            _ => Err(format!("unknown optimiser '{s}' (sgd, adamw, rmsprop)")),
        }
    }
}

/// The precision of a training step (`--dtype`): `bf16` rounds the convolution products'
/// operands to bf16 and accumulates in f32 (on CPUs with AMX or AVX512-BF16; f32 elsewhere);
/// weights, activations, gradients and the optimiser stay f32 (PyTorch's CPU autocast).
/// `f16` (GPU devices) is mixed precision: the forward in f16 from f32 master weights, with
/// dynamic loss scaling (PyTorch's CUDA autocast with `GradScaler`; see `mixed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainDtype {
    #[default]
    F32,
    Bf16,
    F16,
}

impl From<TrainDtype> for committee_ops::precision::Dtype {
    fn from(d: TrainDtype) -> Self {
        match d {
            TrainDtype::F32 => Self::F32,
            TrainDtype::Bf16 => Self::Bf16,
            TrainDtype::F16 => Self::F16,
        }
    }
}

impl OptKind {
    /// Defaults for a from-scratch run at batch 128 (timm's recipes, scaled linearly).
    pub fn default_lr(self, batch: usize) -> f64 {
        let base = match self {
            OptKind::Sgd => 0.1,
            OptKind::Adamw => 1e-3,
            OptKind::Rmsprop => 1e-3,
        };
        base * batch as f64 / 128.0
    }

    pub fn default_weight_decay(self) -> f64 {
        match self {
            OptKind::Sgd => 5e-4,
            OptKind::Adamw => 0.05,
            OptKind::Rmsprop => 1e-5,
        }
    }
}

/// Everything that decides a run's result. Unset options take data- or model-dependent
/// defaults when the run starts; `RUN/config.toml` records the values used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: String,
    pub data: PathBuf,
    pub val: Option<PathBuf>,
    pub epochs: usize,
    pub batch: usize,
    pub img_size: Option<usize>,
    pub in_chans: Option<usize>,
    pub opt: OptKind,
    pub lr: Option<f64>,
    pub min_lr: f64,
    pub momentum: f64,
    pub weight_decay: Option<f64>,
    pub warmup_epochs: f64,
    pub label_smoothing: f64,
    pub drop_rate: f64,
    pub drop_path: f64,
    pub augment: Option<AugmentKind>,
    /// Probability of timm's random erasing per training image (0 = off; older runs lack it).
    #[serde(default)]
    pub random_erasing: f64,
    pub seed: u64,
    /// Decoding threads (not part of the result).
    pub workers: Option<usize>,
    /// The products' precision (older runs lack it: f32).
    #[serde(default)]
    pub dtype: TrainDtype,
}

impl TrainConfig {
    pub fn new(model: &str, data: &Path) -> Self {
        Self {
            model: model.into(),
            data: data.into(),
            val: None,
            epochs: 10,
            batch: 128,
            img_size: None,
            in_chans: None,
            opt: OptKind::Sgd,
            lr: None,
            min_lr: 0.0,
            momentum: 0.9,
            weight_decay: None,
            warmup_epochs: 1.0,
            label_smoothing: 0.1,
            drop_rate: 0.0,
            drop_path: 0.0,
            augment: None,
            random_erasing: 0.0,
            seed: 0,
            workers: None,
            dtype: TrainDtype::F32,
        }
    }

    pub fn from_toml(path: &Path) -> Result<Self, crate::TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::TrainError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| crate::TrainError::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or_else(|| self.opt.default_lr(self.batch))
    }

    pub fn weight_decay(&self) -> f64 {
        self.weight_decay
            .unwrap_or_else(|| self.opt.default_weight_decay())
    }

    /// Checks ranges; errors name the option.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |name: &str, v: f64| format!("{name} = {v} is out of range");
        if self.epochs == 0 {
            return Err("epochs must be at least 1".into());
        }
        if self.batch == 0 {
            return Err("batch must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(bad("label_smoothing", self.label_smoothing));
        }
        if !(0.0..1.0).contains(&self.drop_rate) {
            return Err(bad("drop_rate", self.drop_rate));
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return Err(bad("drop_path", self.drop_path));
        }
        if !(0.0..=1.0).contains(&self.random_erasing) {
            return Err(bad("random_erasing", self.random_erasing));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(bad("momentum", self.momentum));
        }
        if !(self.lr() > 0.0 && self.lr().is_finite()) {
            return Err(bad("lr", self.lr()));
        }
        if self.weight_decay().is_nan() || self.weight_decay() < 0.0 {
            return Err(bad("weight_decay", self.weight_decay()));
        }
        if self.warmup_epochs.is_nan() || self.warmup_epochs < 0.0 {
            return Err(bad("warmup_epochs", self.warmup_epochs));
        }
        if matches!(self.in_chans, Some(c) if c != 1 && c != 3) {
            return Err("in_chans must be 1 or 3".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_unknown_keys_rejected() {
        let mut c = TrainConfig::new("resnet18", Path::new("/d"));
        c.lr = Some(0.05);
        c.augment = Some(AugmentKind::Small);
        c.dtype = TrainDtype::Bf16;
        let back: TrainConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        assert!(c.to_toml().contains("dtype = \"bf16\""));
        let bad = c.to_toml() + "\nlearning_rate = 3\n";
        assert!(toml::from_str::<TrainConfig>(&bad).is_err());
        // Runs saved before random erasing existed resume with it off.
        c.random_erasing = 0.25;
        let old: String = c
            .to_toml()
            .lines()
            .filter(|l| !l.starts_with("random_erasing") && !l.starts_with("dtype"))
            .map(|l| format!("{l}\n"))
            .collect();
        let back: TrainConfig = toml::from_str(&old).unwrap();
        assert_eq!(back.random_erasing, 0.0);
        // ... and runs saved before bf16 products existed, in f32.
        assert_eq!(back.dtype, TrainDtype::F32);
    }

    #[test]
    fn the_shipped_fashion_mnist_recipe_parses_and_validates() {
        let text = include_str!("../../../configs/fashion-mnist.toml");
        let c: TrainConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!((c.img_size, c.random_erasing), (Some(56), 0.25));
    }

    #[test]
    fn validation_names_the_option() {
        let mut c = TrainConfig::new("resnet18", Path::new("/d"));
        assert!(c.validate().is_ok());
        c.label_smoothing = 1.5;
        assert!(c.validate().unwrap_err().contains("label_smoothing"));
    }
}
