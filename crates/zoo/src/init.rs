//! timm's initialisation of a freshly built model, for random-weight models that behave like
//! `timm.create_model(name)`.
//!
//! Burn's layers start from PyTorch's per-layer defaults. timm re-initialises its CNNs: with
//! those defaults a random MobileNetV2 or EfficientNet collapses (every image gets the same
//! confidence, so no cascade threshold splits them), with timm's it does not. The rules, per
//! family, are timm's (checked against timm itself by `tests/init.rs`):
//! - EfficientNet/MobileNet (`_init_weight_goog`): convolutions normal with std
//!   `sqrt(2 / fan_out)`, `fan_out = k * k * out / groups`, biases zero; linear layers uniform
//!   in `±1 / sqrt(out_features)`, biases zero; BatchNorm 1 and 0.
//! - ResNet (`init_weights`): convolutions normal with std `sqrt(2 / (out * k * k))`
//!   (Kaiming, fan-out); the last BatchNorm of each residual branch has weight 0
//!   (`zero_init_last`); the classifier keeps PyTorch's default.
//! - ViT (`init_weights_vit_timm`): linear weights normal with std 0.02 (timm truncates at
//!   ±2, a hundred standard deviations), biases zero; `pos_embed` std 0.02, `cls_token` std
//!   1e-6; the patch embedding keeps PyTorch's default.

use std::collections::HashSet;

use burn::tensor::{Distribution, Tensor};

use crate::keys::{self, Key, KeyMapper, KeyVisitor};
use crate::model::Model;

/// How a random model's parameters are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// timm's per-family initialisation (what `timm.create_model` gives).
    Timm,
    /// Burn's layer defaults (= PyTorch's per-layer defaults).
    Burn,
}

impl std::str::FromStr for Scheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "timm" => Ok(Scheme::Timm),
            "burn" => Ok(Scheme::Burn),
            other => Err(format!("unknown initialisation '{other}' (timm or burn)")),
        }
    }
}

/// `model` re-drawn with `scheme` (from the device's seeded generator).
pub fn apply(model: Model, scheme: Scheme) -> Model {
    match scheme {
        Scheme::Burn => model,
        Scheme::Timm => timm(model),
    }
}

/// `model` re-drawn as timm initialises its family.
pub fn timm(model: Model) -> Model {
    let family = match &model {
        Model::EfficientNet(_) => Family::Goog,
        Model::ResNet(_) => Family::ResNet {
            bottleneck: bottleneck_blocks(&model),
        },
        Model::Vit(_) => Family::Vit,
    };
    keys::map(model, &mut Timm { family })
}

enum Family {
    Goog,
    /// The residual blocks (module paths) that have a third convolution.
    ResNet {
        bottleneck: HashSet<String>,
    },
    Vit,
}

struct Timm {
    family: Family,
}

/// What a parameter becomes.
enum Draw {
    Keep,
    Const(f32),
    Normal(f64),
    Uniform(f64),
}

impl KeyMapper for Timm {
    fn map<const D: usize>(&mut self, key: Key, t: Tensor<D>) -> Tensor<D> {
        let dims = t.dims();
        let draw = self.rule(&key, &dims);
        let device = t.device();
        match draw {
            Draw::Keep => t,
            Draw::Const(v) => t.zeros_like().add_scalar(v),
            Draw::Normal(std) => Tensor::random(dims, Distribution::Normal(0.0, std), &device),
            Draw::Uniform(r) => Tensor::random(dims, Distribution::Uniform(-r, r), &device),
        }
    }
}

impl Timm {
    fn rule(&self, key: &Key, dims: &[usize]) -> Draw {
        let weight = key.leaf == "weight";
        match &self.family {
            Family::Goog => {
                if key.conv && weight {
                    // `[out, in / groups, k, k]`: depthwise layers have groups = out.
                    let groups = if key.module.ends_with("conv_dw") {
                        dims[0]
                    } else {
                        1
                    };
                    let fan_out = dims[2] * dims[3] * dims[0] / groups;
                    Draw::Normal((2.0 / fan_out as f64).sqrt())
                } else if key.linear_weight {
                    // Burn stores `[in, out]`.
                    Draw::Uniform(1.0 / (dims[1] as f64).sqrt())
                } else if key.conv || key.linear {
                    Draw::Const(0.0)
                } else {
                    Draw::Keep
                }
            }
            Family::ResNet { bottleneck } => {
                if key.conv && weight {
                    let fan_out = dims[0] * dims[2] * dims[3];
                    Draw::Normal((2.0 / fan_out as f64).sqrt())
                } else if key.batch_norm && weight && last_norm(&key.module, bottleneck) {
                    Draw::Const(0.0)
                } else {
                    Draw::Keep
                }
            }
            Family::Vit => match key.name.as_str() {
                "pos_embed" => Draw::Normal(0.02),
                "cls_token" => Draw::Normal(1e-6),
                _ if key.linear_weight => Draw::Normal(0.02),
                _ if key.linear => Draw::Const(0.0),
                _ => Draw::Keep,
            },
        }
    }
}

/// Whether the BatchNorm at `module` (`layer1.0.bn3`) closes its residual branch: `bn3` of a
/// bottleneck, `bn2` of a basic block.
fn last_norm(module: &str, bottleneck: &HashSet<String>) -> bool {
    let Some((block, bn)) = module.rsplit_once('.') else {
        return false;
    };
    match bn {
        "bn3" => true,
        "bn2" => !bottleneck.contains(block),
        _ => false,
    }
}

fn bottleneck_blocks(model: &Model) -> HashSet<String> {
    struct Blocks(HashSet<String>);
    impl KeyVisitor for Blocks {
        fn visit<const D: usize>(&mut self, key: Key, _: &burn::module::Param<Tensor<D>>) {
            if let Some((block, "conv3")) = key.module.rsplit_once('.') {
                self.0.insert(block.to_string());
            }
        }
    }
    let mut b = Blocks(HashSet::new());
    keys::walk(model, &mut b);
    b.0
}
