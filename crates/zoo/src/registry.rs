//! The model registry: timm names, architectures, and timm's default eval preprocessing.

use serde::Serialize;

use crate::efficientnet::EfficientNetArch;
use crate::resnet::{ResBlockKind, ResNetArch};
use crate::vit::VitArch;

/// A family's architecture, as data.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum Arch {
    EfficientNet(EfficientNetArch),
    ResNet(ResNetArch),
    Vit(VitArch),
}

impl Arch {
    /// Multiply-accumulates per image, computed analytically.
    pub fn macs(&self, img: [usize; 2], in_chans: usize, num_classes: usize) -> u64 {
        match self {
            Arch::EfficientNet(a) => a.macs(img, in_chans, num_classes),
            Arch::ResNet(a) => a.macs(img, in_chans, num_classes),
            Arch::Vit(a) => a.macs(img, in_chans, num_classes),
        }
    }

    /// Width of the pooled features (the classifier's input).
    pub fn num_features(&self) -> usize {
        match self {
            Arch::EfficientNet(a) => a.num_features(),
            Arch::ResNet(a) => a.num_features(),
            Arch::Vit(a) => a.dim,
        }
    }
}

pub use committee_data::eval_config::{
    EvalConfig, HALF, IMAGENET_MEAN, IMAGENET_STD, Interpolation,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    pub name: String,
    pub arch: Arch,
    pub eval: EvalConfig,
}

impl ModelSpec {
    pub fn family(&self) -> &'static str {
        match &self.arch {
            Arch::EfficientNet(a) if a.se_ratio.is_none() => "mobilenetv2",
            Arch::EfficientNet(_) => "efficientnet",
            Arch::ResNet(_) => "resnet",
            Arch::Vit(_) => "vit",
        }
    }

    /// GMACs per image at the default eval resolution, 1000 classes, RGB.
    pub fn gmacs(&self) -> f64 {
        self.gmacs_at(self.eval.img_size, 1000)
    }

    pub fn gmacs_at(&self, img: usize, num_classes: usize) -> f64 {
        self.arch.macs([img, img], 3, num_classes) as f64 / 1e9
    }
}

fn ev(img_size: usize, crop_pct: f64, mean: [f64; 3], std: [f64; 3]) -> EvalConfig {
    EvalConfig {
        img_size,
        crop_pct,
        interpolation: Interpolation::Bicubic,
        mean,
        std,
    }
}

/// EfficientNet scaling: (width, depth, timm eval size/crop, tf eval size/crop).
const EFFNET_SCALING: [(f64, f64, usize, f64, usize, f64); 8] = [
    (1.0, 1.0, 224, 0.875, 224, 0.875),
    (1.0, 1.1, 240, 0.9, 240, 0.882),
    (1.1, 1.2, 256, 0.875, 260, 0.890),
    (1.2, 1.4, 288, 0.875, 300, 0.904),
    (1.4, 1.8, 320, 0.875, 380, 0.922),
    (1.6, 2.2, 448, 1.0, 456, 0.934),
    (1.8, 2.6, 528, 0.942, 528, 0.942),
    (2.0, 3.1, 600, 0.949, 600, 0.949),
];

/// Every model the zoo knows, in display order.
pub fn all() -> Vec<ModelSpec> {
    let mut v = Vec::new();
    for tf in [false, true] {
        for (i, &(w, d, img, crop, tf_img, tf_crop)) in EFFNET_SCALING.iter().enumerate() {
            let tv_eps = if i >= 5 { 1e-3 } else { 1e-5 };
            let arch = EfficientNetArch::efficientnet(w, d, tf, tv_eps);
            let (name, eval) = if tf {
                (
                    format!("tf_efficientnet_b{i}"),
                    ev(tf_img, tf_crop, IMAGENET_MEAN, IMAGENET_STD),
                )
            } else {
                // timm's default b1 tag (ra4) was trained with 0.5 mean/std.
                let (m, s) = if i == 1 {
                    (HALF, HALF)
                } else {
                    (IMAGENET_MEAN, IMAGENET_STD)
                };
                (format!("efficientnet_b{i}"), ev(img, crop, m, s))
            };
            v.push(ModelSpec {
                name,
                arch: Arch::EfficientNet(arch),
                eval,
            });
        }
    }
    for (depth, block, layers) in [
        (18, ResBlockKind::Basic, [2, 2, 2, 2]),
        (34, ResBlockKind::Basic, [3, 4, 6, 3]),
        (50, ResBlockKind::Bottleneck, [3, 4, 6, 3]),
        (101, ResBlockKind::Bottleneck, [3, 4, 23, 3]),
        (152, ResBlockKind::Bottleneck, [3, 8, 36, 3]),
    ] {
        v.push(ModelSpec {
            name: format!("resnet{depth}"),
            arch: Arch::ResNet(ResNetArch::new(block, layers)),
            eval: ev(224, 0.95, IMAGENET_MEAN, IMAGENET_STD),
        });
    }
    for (suffix, w) in [
        ("035", 0.35),
        ("050", 0.5),
        ("075", 0.75),
        ("100", 1.0),
        ("140", 1.4),
    ] {
        v.push(ModelSpec {
            name: format!("mobilenetv2_{suffix}"),
            arch: Arch::EfficientNet(EfficientNetArch::mobilenetv2(w)),
            eval: ev(224, 0.875, IMAGENET_MEAN, IMAGENET_STD),
        });
    }
    for (name, dim, depth, heads, img) in [
        ("vit_tiny_patch16_224", 192, 12, 3, 224),
        ("vit_small_patch16_224", 384, 12, 6, 224),
        ("vit_base_patch16_224", 768, 12, 12, 224),
        ("vit_base_patch16_384", 768, 12, 12, 384),
        ("vit_large_patch16_224", 1024, 24, 16, 224),
        ("vit_large_patch16_384", 1024, 24, 16, 384),
    ] {
        let crop = if img == 384 { 1.0 } else { 0.9 };
        v.push(ModelSpec {
            name: name.to_string(),
            arch: Arch::Vit(VitArch::new(dim, depth, heads)),
            eval: ev(img, crop, HALF, HALF),
        });
    }
    v
}

/// Looks a model up by its timm name.
pub fn get(name: &str) -> Option<ModelSpec> {
    all().into_iter().find(|s| s.name == name)
}
