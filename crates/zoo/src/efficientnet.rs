//! EfficientNet and MobileNetV2, both as timm builds them: one stage table decoded into blocks.
//!
//! Field names follow timm's state-dict keys (`conv_stem`, `bn1`, `blocks.S.J.conv_pw`, ...),
//! so a timm checkpoint loads by name.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::layers::{
    Act, Conv, DropPath, PadMode, bn, conv_bn, conv_bn_act, conv_out, fold_bn, global_avg_pool,
    make_divisible, residual_add, round_half_even,
};
use crate::options::CommonOptions;
use committee_ops::{self as ops};

/// Block type of a stage: depthwise-separable (`ds`) or inverted residual (`ir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    Ds,
    Ir,
}

/// One row of the stage table, before width/depth scaling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    pub kind: BlockKind,
    pub expand: usize,
    pub kernel: usize,
    pub stride: usize,
    pub out: usize,
    pub repeats: usize,
}

const fn st(
    kind: BlockKind,
    expand: usize,
    kernel: usize,
    stride: usize,
    out: usize,
    repeats: usize,
) -> StageSpec {
    StageSpec {
        kind,
        expand,
        kernel,
        stride,
        out,
        repeats,
    }
}

/// EfficientNet-B0's stages; B1..B7 scale them.
pub const EFFICIENTNET_STAGES: [StageSpec; 7] = [
    st(BlockKind::Ds, 1, 3, 1, 16, 1),
    st(BlockKind::Ir, 6, 3, 2, 24, 2),
    st(BlockKind::Ir, 6, 5, 2, 40, 2),
    st(BlockKind::Ir, 6, 3, 2, 80, 3),
    st(BlockKind::Ir, 6, 5, 1, 112, 3),
    st(BlockKind::Ir, 6, 5, 2, 192, 4),
    st(BlockKind::Ir, 6, 3, 1, 320, 1),
];

/// MobileNetV2's stages.
pub const MOBILENETV2_STAGES: [StageSpec; 7] = [
    st(BlockKind::Ds, 1, 3, 1, 16, 1),
    st(BlockKind::Ir, 6, 3, 2, 24, 2),
    st(BlockKind::Ir, 6, 3, 2, 32, 3),
    st(BlockKind::Ir, 6, 3, 2, 64, 4),
    st(BlockKind::Ir, 6, 3, 1, 96, 3),
    st(BlockKind::Ir, 6, 3, 2, 160, 3),
    st(BlockKind::Ir, 6, 3, 1, 320, 1),
];

/// How the head width follows the width multiplier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadRule {
    /// `round(head * w)` (EfficientNet).
    Scaled,
    /// `max(head, round(head * w))` (MobileNetV2).
    AtLeast,
}

/// A whole architecture as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfficientNetArch {
    pub stages: Vec<StageSpec>,
    pub width: f64,
    pub depth: f64,
    pub stem: usize,
    pub head: usize,
    pub head_rule: HeadRule,
    pub act: Act,
    /// Squeeze-excite ratio relative to the block's input channels, if any.
    pub se_ratio: Option<f64>,
    pub bn_eps: f64,
    /// BN eps of torchvision's port of this variant (1e-3 for torchvision's b5..b7).
    pub tv_bn_eps: f64,
    pub pad: PadMode,
}

impl EfficientNetArch {
    pub fn efficientnet(width: f64, depth: f64, tf: bool, tv_bn_eps: f64) -> Self {
        Self {
            stages: EFFICIENTNET_STAGES.to_vec(),
            width,
            depth,
            stem: 32,
            head: 1280,
            head_rule: HeadRule::Scaled,
            act: Act::Silu,
            se_ratio: Some(0.25),
            bn_eps: if tf { 1e-3 } else { 1e-5 },
            tv_bn_eps,
            pad: if tf {
                PadMode::Same
            } else {
                PadMode::Symmetric
            },
        }
    }

    pub fn mobilenetv2(width: f64) -> Self {
        Self {
            stages: MOBILENETV2_STAGES.to_vec(),
            width,
            depth: 1.0,
            stem: 32,
            head: 1280,
            head_rule: HeadRule::AtLeast,
            act: Act::Relu6,
            se_ratio: None,
            bn_eps: 1e-5,
            tv_bn_eps: 1e-5,
            pad: PadMode::Symmetric,
        }
    }

    fn round_chs(&self, c: usize) -> usize {
        make_divisible(c as f64 * self.width, 8)
    }

    pub fn stem_chs(&self) -> usize {
        self.round_chs(self.stem)
    }

    pub fn num_features(&self) -> usize {
        match self.head_rule {
            HeadRule::Scaled => self.round_chs(self.head),
            HeadRule::AtLeast => self.head.max(self.round_chs(self.head)),
        }
    }

    /// Decodes the stage table into per-block plans (the single source for building and costing).
    pub fn plan(&self) -> Vec<Vec<BlockPlan>> {
        let mut cin = self.stem_chs();
        self.stages
            .iter()
            .map(|s| {
                let repeats = (s.repeats as f64 * self.depth).ceil() as usize;
                let out = self.round_chs(s.out);
                (0..repeats)
                    .map(|j| {
                        let stride = if j == 0 { s.stride } else { 1 };
                        let mid = match s.kind {
                            BlockKind::Ds => cin,
                            BlockKind::Ir => make_divisible(cin as f64 * s.expand as f64, 8),
                        };
                        let se = self.se_ratio.map(|r| {
                            let ratio = r / s.expand as f64;
                            round_half_even(mid as f64 * ratio).max(1)
                        });
                        let p = BlockPlan {
                            kind: s.kind,
                            cin,
                            mid,
                            out,
                            kernel: s.kernel,
                            stride,
                            se,
                        };
                        cin = out;
                        p
                    })
                    .collect()
            })
            .collect()
    }

    /// Multiply-accumulates for one image of `img` x `img` pixels.
    pub fn macs(&self, img: [usize; 2], in_chans: usize, num_classes: usize) -> u64 {
        let conv_macs = |h: usize, w: usize, cin: usize, cout: usize, k: usize, groups: usize| {
            (h * w * cout * (cin / groups) * k * k) as u64
        };
        let [mut h, mut w] = [
            conv_out(img[0], 3, 2, self.pad),
            conv_out(img[1], 3, 2, self.pad),
        ];
        let mut macs = conv_macs(h, w, in_chans, self.stem_chs(), 3, 1);
        for b in self.plan().iter().flatten() {
            if b.kind == BlockKind::Ir {
                macs += conv_macs(h, w, b.cin, b.mid, 1, 1);
            }
            h = conv_out(h, b.kernel, b.stride, self.pad);
            w = conv_out(w, b.kernel, b.stride, self.pad);
            macs += conv_macs(h, w, b.mid, b.mid, b.kernel, b.mid);
            if let Some(rd) = b.se {
                macs += 2 * (b.mid * rd) as u64;
            }
            macs += conv_macs(h, w, b.mid, b.out, 1, 1);
        }
        let last = self
            .plan()
            .last()
            .and_then(|s| s.last())
            .map(|b| b.out)
            .unwrap_or(0);
        macs += conv_macs(h, w, last, self.num_features(), 1, 1);
        macs + (self.num_features() * num_classes) as u64
    }
}

/// One decoded block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockPlan {
    pub kind: BlockKind,
    pub cin: usize,
    pub mid: usize,
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub se: Option<usize>,
}

/// Squeeze-excite: mean-pool, reduce, act, expand, sigmoid gate.
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    pub conv_reduce: Conv2d,
    pub conv_expand: Conv2d,
    #[module(skip)]
    pub act: Act,
}

impl SqueezeExcite {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        ops::squeeze_excite(x, &self.conv_reduce, &self.conv_expand, self.act)
    }
}

/// Depthwise-separable block: dw conv, BN, act, SE, 1x1 projection, BN.
#[derive(Module, Debug)]
pub struct DepthwiseSeparable {
    pub conv_dw: Conv2d,
    pub bn1: BatchNorm,
    pub se: Option<SqueezeExcite>,
    pub conv_pw: Conv2d,
    pub bn2: BatchNorm,
    pub drop_path: DropPath,
    pub has_skip: bool,
    /// BNs folded into their convolutions (inference only).
    pub folded: bool,
    #[module(skip)]
    pub act: Act,
}

/// Inverted residual: 1x1 expansion, dw conv, SE, 1x1 linear projection.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    pub conv_pw: Conv2d,
    pub bn1: BatchNorm,
    pub conv_dw: Conv2d,
    pub bn2: BatchNorm,
    pub se: Option<SqueezeExcite>,
    pub conv_pwl: Conv2d,
    pub bn3: BatchNorm,
    pub drop_path: DropPath,
    pub has_skip: bool,
    pub folded: bool,
    #[module(skip)]
    pub act: Act,
}

/// A block of either kind; the variant name is not part of the state-dict key. Unboxed: a
/// model holds a few dozen blocks, and Burn's `Module` derive visits the fields as they are.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum EffBlock {
    Ds(DepthwiseSeparable),
    Ir(InvertedResidual),
}

impl EffBlock {
    fn new(p: &BlockPlan, arch: &EfficientNetArch, eps: f64, dpr: f64, device: &Device) -> Self {
        let act = arch.act;
        let se = p.se.map(|rd| SqueezeExcite {
            conv_reduce: Conv::new(p.mid, rd, 1, PadMode::Symmetric)
                .with_bias()
                .init(device),
            conv_expand: Conv::new(rd, p.mid, 1, PadMode::Symmetric)
                .with_bias()
                .init(device),
            act,
        });
        let has_skip = p.stride == 1 && p.cin == p.out;
        let dw = Conv::new(p.mid, p.mid, p.kernel, arch.pad)
            .stride(p.stride)
            .groups(p.mid)
            .init(device);
        match p.kind {
            BlockKind::Ds => EffBlock::Ds(DepthwiseSeparable {
                conv_dw: dw,
                bn1: bn(p.mid, eps, device),
                se,
                conv_pw: Conv::new(p.mid, p.out, 1, arch.pad).init(device),
                bn2: bn(p.out, eps, device),
                drop_path: DropPath::new(dpr),
                has_skip,
                folded: false,
                act,
            }),
            BlockKind::Ir => EffBlock::Ir(InvertedResidual {
                conv_pw: Conv::new(p.cin, p.mid, 1, arch.pad).init(device),
                bn1: bn(p.mid, eps, device),
                conv_dw: dw,
                bn2: bn(p.mid, eps, device),
                se,
                conv_pwl: Conv::new(p.mid, p.out, 1, arch.pad).init(device),
                bn3: bn(p.out, eps, device),
                drop_path: DropPath::new(dpr),
                has_skip,
                folded: false,
                act,
            }),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            EffBlock::Ds(b) => {
                let mut y = conv_bn_act(&b.conv_dw, &b.bn1, b.folded, b.act, x.clone());
                if let Some(se) = &b.se {
                    y = se.forward(y);
                }
                let y = conv_bn(&b.conv_pw, &b.bn2, b.folded, y);
                if b.has_skip {
                    residual_add(b.drop_path.forward(y), x)
                } else {
                    y
                }
            }
            EffBlock::Ir(b) => {
                let mut y = conv_bn_act(&b.conv_pw, &b.bn1, b.folded, b.act, x.clone());
                y = conv_bn_act(&b.conv_dw, &b.bn2, b.folded, b.act, y);
                if let Some(se) = &b.se {
                    y = se.forward(y);
                }
                let y = conv_bn(&b.conv_pwl, &b.bn3, b.folded, y);
                if b.has_skip {
                    residual_add(b.drop_path.forward(y), x)
                } else {
                    y
                }
            }
        }
    }

    fn fold(self) -> Self {
        match self {
            EffBlock::Ds(b) => EffBlock::Ds(DepthwiseSeparable {
                conv_dw: fold_bn(b.conv_dw, &b.bn1),
                conv_pw: fold_bn(b.conv_pw, &b.bn2),
                folded: true,
                ..b
            }),
            EffBlock::Ir(b) => EffBlock::Ir(InvertedResidual {
                conv_pw: fold_bn(b.conv_pw, &b.bn1),
                conv_dw: fold_bn(b.conv_dw, &b.bn2),
                conv_pwl: fold_bn(b.conv_pwl, &b.bn3),
                folded: true,
                ..b
            }),
        }
    }
}

/// EfficientNet / MobileNetV2 network.
#[derive(Module, Debug)]
pub struct EfficientNet {
    pub conv_stem: Conv2d,
    pub bn1: BatchNorm,
    pub blocks: Vec<Vec<EffBlock>>,
    pub conv_head: Conv2d,
    pub bn2: BatchNorm,
    pub dropout: Dropout,
    pub classifier: Option<Linear>,
    pub folded: bool,
    #[module(skip)]
    pub act: Act,
}

impl EfficientNet {
    pub fn new(arch: &EfficientNetArch, opts: &CommonOptions, device: &Device) -> Self {
        let eps = opts.bn_eps.unwrap_or(arch.bn_eps);
        let plan = arch.plan();
        let total: usize = plan.iter().map(Vec::len).sum();
        let mut idx = 0usize;
        let blocks = plan
            .iter()
            .map(|stage| {
                stage
                    .iter()
                    .map(|p| {
                        let dpr = opts.drop_path_rate * idx as f64 / total as f64;
                        idx += 1;
                        EffBlock::new(p, arch, eps, dpr, device)
                    })
                    .collect()
            })
            .collect();
        let last = plan
            .last()
            .and_then(|s| s.last())
            .map(|b| b.out)
            .unwrap_or(arch.stem_chs());
        let nf = arch.num_features();
        Self {
            conv_stem: Conv::new(opts.in_chans, arch.stem_chs(), 3, arch.pad)
                .stride(2)
                .init(device),
            bn1: bn(arch.stem_chs(), eps, device),
            blocks,
            conv_head: Conv::new(last, nf, 1, arch.pad).init(device),
            bn2: bn(nf, eps, device),
            dropout: DropoutConfig::new(opts.drop_rate).init(),
            classifier: (opts.num_classes > 0)
                .then(|| LinearConfig::new(nf, opts.num_classes).init(device)),
            folded: false,
            act: arch.act,
        }
    }

    /// Pooled features: the classifier's input, `[N, num_features]`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = conv_bn_act(&self.conv_stem, &self.bn1, self.folded, self.act, x);
        for block in self.blocks.iter().flatten() {
            x = block.forward(x);
        }
        let x = conv_bn_act(&self.conv_head, &self.bn2, self.folded, self.act, x);
        global_avg_pool(x)
    }

    /// Folds every BatchNorm into its convolution, for inference.
    pub fn fold_batchnorm(self) -> Self {
        if self.folded {
            return self;
        }
        Self {
            conv_stem: fold_bn(self.conv_stem, &self.bn1),
            conv_head: fold_bn(self.conv_head, &self.bn2),
            blocks: self
                .blocks
                .into_iter()
                .map(|s| s.into_iter().map(EffBlock::fold).collect())
                .collect(),
            folded: true,
            ..self
        }
    }

    pub fn forward_head(&self, features: Tensor<2>) -> Tensor<2> {
        crate::layers::classifier(self.classifier.as_ref(), &self.dropout, features)
    }
}
