//! torchvision checkpoints: which layout a checkpoint has, and the one table that renames
//! torchvision's keys to timm's.

use std::fmt;

use crate::checkpoint::Checkpoint;
use crate::efficientnet::BlockKind;
use crate::registry::Arch;

/// Key naming convention of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Timm,
    Torchvision,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Timm => "timm",
            Layout::Torchvision => "torchvision",
        })
    }
}

/// Which family and naming a checkpoint uses, from its keys.
pub fn detect(ckpt: &Checkpoint) -> Option<(&'static str, Layout)> {
    let has = |k: &str| ckpt.tensors.contains_key(k);
    let any = |pat: &str| ckpt.tensors.keys().any(|k| k.contains(pat));
    if has("conv_stem.weight") {
        let fam = if any("se.conv_reduce") {
            "efficientnet"
        } else {
            "mobilenetv2"
        };
        Some((fam, Layout::Timm))
    } else if has("features.0.0.weight") {
        if any(".block.") {
            Some(("efficientnet", Layout::Torchvision))
        } else {
            Some(("mobilenetv2", Layout::Torchvision))
        }
    } else if has("layer1.0.conv1.weight") {
        Some(("resnet", Layout::Timm))
    } else if has("cls_token") {
        Some(("vit", Layout::Timm))
    } else if has("class_token") {
        Some(("vit", Layout::Torchvision))
    } else {
        None
    }
}

/// torchvision -> timm renames inside one block, by block type: the one mapping table.
const TV_TABLE: &[(&str, &str, &str)] = &[
    // EfficientNet MBConv without expansion (stage 1) and with it.
    ("efficientnet-ds", "block.0.0.", "conv_dw."),
    ("efficientnet-ds", "block.0.1.", "bn1."),
    ("efficientnet-ds", "block.1.fc1.", "se.conv_reduce."),
    ("efficientnet-ds", "block.1.fc2.", "se.conv_expand."),
    ("efficientnet-ds", "block.2.0.", "conv_pw."),
    ("efficientnet-ds", "block.2.1.", "bn2."),
    ("efficientnet-ir", "block.0.0.", "conv_pw."),
    ("efficientnet-ir", "block.0.1.", "bn1."),
    ("efficientnet-ir", "block.1.0.", "conv_dw."),
    ("efficientnet-ir", "block.1.1.", "bn2."),
    ("efficientnet-ir", "block.2.fc1.", "se.conv_reduce."),
    ("efficientnet-ir", "block.2.fc2.", "se.conv_expand."),
    ("efficientnet-ir", "block.3.0.", "conv_pwl."),
    ("efficientnet-ir", "block.3.1.", "bn3."),
    // MobileNetV2 InvertedResidual with expand_ratio 1 and 6.
    ("mobilenetv2-ds", "conv.0.0.", "conv_dw."),
    ("mobilenetv2-ds", "conv.0.1.", "bn1."),
    ("mobilenetv2-ds", "conv.1.", "conv_pw."),
    ("mobilenetv2-ds", "conv.2.", "bn2."),
    ("mobilenetv2-ir", "conv.0.0.", "conv_pw."),
    ("mobilenetv2-ir", "conv.0.1.", "bn1."),
    ("mobilenetv2-ir", "conv.1.0.", "conv_dw."),
    ("mobilenetv2-ir", "conv.1.1.", "bn2."),
    ("mobilenetv2-ir", "conv.2.", "conv_pwl."),
    ("mobilenetv2-ir", "conv.3.", "bn3."),
    // Stems and heads (`features.0`, `features.{last}`, `classifier.1`).
    ("cnn-stem", "0.", "conv_stem."),
    ("cnn-stem", "1.", "bn1."),
    ("cnn-head", "0.", "conv_head."),
    ("cnn-head", "1.", "bn2."),
    ("cnn", "classifier.1.", "classifier."),
    // ViT.
    ("vit", "class_token", "cls_token"),
    ("vit", "encoder.pos_embedding", "pos_embed"),
    ("vit", "conv_proj.", "patch_embed.proj."),
    ("vit", "encoder.ln.", "norm."),
    ("vit", "heads.head.", "head."),
    ("vit-block", "ln_1.", "norm1."),
    (
        "vit-block",
        "self_attention.in_proj_weight",
        "attn.qkv.weight",
    ),
    ("vit-block", "self_attention.in_proj_bias", "attn.qkv.bias"),
    ("vit-block", "self_attention.out_proj.", "attn.proj."),
    ("vit-block", "ln_2.", "norm2."),
    ("vit-block", "mlp.0.", "mlp.fc1."),
    ("vit-block", "mlp.linear_1.", "mlp.fc1."),
    ("vit-block", "mlp.3.", "mlp.fc2."),
    ("vit-block", "mlp.linear_2.", "mlp.fc2."),
];

fn tv_rename(group: &str, key: &str) -> Option<String> {
    TV_TABLE
        .iter()
        .filter(|(g, _, _)| *g == group)
        .find_map(|(_, from, to)| key.strip_prefix(from).map(|rest| format!("{to}{rest}")))
}

/// Maps one torchvision key to timm's name for `arch`; `None` leaves it unknown.
fn torchvision_key(key: &str, arch: &Arch) -> Option<String> {
    match arch {
        Arch::ResNet(_) => Some(key.to_string()),
        Arch::Vit(_) => {
            if let Some(rest) = key.strip_prefix("encoder.layers.encoder_layer_") {
                let (i, tail) = rest.split_once('.')?;
                return tv_rename("vit-block", tail).map(|t| format!("blocks.{i}.{t}"));
            }
            tv_rename("vit", key)
        }
        Arch::EfficientNet(a) => {
            if let Some(k) = tv_rename("cnn", key) {
                return Some(k);
            }
            let rest = key.strip_prefix("features.")?;
            let (idx, tail) = rest.split_once('.')?;
            let idx: usize = idx.parse().ok()?;
            let plan = a.plan();
            let mbv2 = a.se_ratio.is_none();
            // Flat list of (stage, index in stage, kind) in torchvision's `features` order.
            let blocks: Vec<(usize, usize, BlockKind)> = plan
                .iter()
                .enumerate()
                .flat_map(|(s, st)| st.iter().enumerate().map(move |(j, b)| (s, j, b.kind)))
                .collect();
            let head_idx = if mbv2 {
                blocks.len() + 1
            } else {
                plan.len() + 1
            };
            if idx == 0 {
                return tv_rename("cnn-stem", tail);
            }
            if idx == head_idx {
                return tv_rename("cnn-head", tail);
            }
            let (stage, j, tail) = if mbv2 {
                let (s, j, _) = *blocks.get(idx - 1)?;
                (s, j, tail)
            } else {
                let (j, tail) = tail.split_once('.')?;
                (idx - 1, j.parse().ok()?, tail)
            };
            let kind = plan.get(stage)?.get(j)?.kind;
            let group = match (mbv2, kind) {
                (false, BlockKind::Ds) => "efficientnet-ds",
                (false, BlockKind::Ir) => "efficientnet-ir",
                (true, BlockKind::Ds) => "mobilenetv2-ds",
                (true, BlockKind::Ir) => "mobilenetv2-ir",
            };
            tv_rename(group, tail).map(|t| format!("blocks.{stage}.{j}.{t}"))
        }
    }
}

/// Renames a torchvision checkpoint's keys to timm's; unknown keys are kept (and reported).
pub(crate) fn to_timm(ckpt: Checkpoint, arch: &Arch) -> Checkpoint {
    let tensors = ckpt
        .tensors
        .into_iter()
        .map(|(k, v)| (torchvision_key(&k, arch).unwrap_or(k), v))
        .collect();
    Checkpoint {
        tensors,
        ignored: ckpt.ignored,
    }
}
