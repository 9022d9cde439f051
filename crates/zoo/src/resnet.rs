//! ResNet v1.5 (stride on the 3x3 of the bottleneck). timm and torchvision share key names.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::Device;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::layers::{
    Act, Conv, DropPath, PadMode, bn, conv_bn, conv_bn_act, conv_out, fold_bn, global_avg_pool,
    residual_add,
};
use crate::options::CommonOptions;
use committee_ops as ops;

fn relu(x: Tensor<4>) -> Tensor<4> {
    Act::Relu.apply(x)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResBlockKind {
    Basic,
    Bottleneck,
}

impl ResBlockKind {
    pub fn expansion(self) -> usize {
        match self {
            ResBlockKind::Basic => 1,
            ResBlockKind::Bottleneck => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetArch {
    pub block: ResBlockKind,
    pub layers: [usize; 4],
    /// Stage widths (before bottleneck expansion); timm's `channels` argument.
    pub channels: [usize; 4],
}

/// Output width of the 7x7 stem: fixed at 64 in timm's default (non-deep) stem, whatever the
/// stage widths.
pub const STEM_WIDTH: usize = 64;

impl ResNetArch {
    pub fn new(block: ResBlockKind, layers: [usize; 4]) -> Self {
        Self {
            block,
            layers,
            channels: [64, 128, 256, 512],
        }
    }

    pub fn num_features(&self) -> usize {
        self.channels[3] * self.block.expansion()
    }

    pub fn macs(&self, img: [usize; 2], in_chans: usize, num_classes: usize) -> u64 {
        let p = PadMode::Symmetric;
        let (mut h, mut w) = (conv_out(img[0], 7, 2, p), conv_out(img[1], 7, 2, p));
        let mut macs = (h * w * STEM_WIDTH * in_chans * 49) as u64;
        h = conv_out(h, 3, 2, p);
        w = conv_out(w, 3, 2, p);
        let e = self.block.expansion();
        let mut cin = STEM_WIDTH;
        for (s, (&n, &c)) in self.layers.iter().zip(&self.channels).enumerate() {
            for j in 0..n {
                let stride = if s > 0 && j == 0 { 2 } else { 1 };
                let (ho, wo) = (conv_out(h, 3, stride, p), conv_out(w, 3, stride, p));
                macs += match self.block {
                    ResBlockKind::Basic => (ho * wo * c * cin * 9 + ho * wo * c * c * 9) as u64,
                    ResBlockKind::Bottleneck => {
                        (h * w * c * cin + ho * wo * c * c * 9 + ho * wo * c * e * c) as u64
                    }
                };
                if stride != 1 || cin != c * e {
                    macs += (ho * wo * c * e * cin) as u64;
                }
                (h, w, cin) = (ho, wo, c * e);
            }
        }
        macs + (self.num_features() * num_classes) as u64
    }
}

/// Basic (conv1, conv2) or bottleneck (conv1, conv2, conv3) block.
#[derive(Module, Debug)]
pub struct ResBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    /// `downsample.0` (1x1 conv) and `downsample.1` (BN), as in PyTorch's Sequential.
    pub downsample: Option<(Conv2d, BatchNorm)>,
    pub drop_path: DropPath,
    /// BNs folded into their convolutions (inference only).
    pub folded: bool,
}

impl ResBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let f = self.folded;
        let shortcut = match &self.downsample {
            Some((c, b)) => conv_bn(c, b, f, x.clone()),
            None => x.clone(),
        };
        let y = conv_bn_act(&self.conv1, &self.bn1, f, Act::Relu, x);
        if f {
            // Folded (inference): the last convolution adds the shortcut and applies the ReLU
            // as it writes its output (drop path is the identity at inference).
            let (last, y) = match &self.conv3 {
                Some(c3) => (c3, conv_bn_act(&self.conv2, &self.bn2, f, Act::Relu, y)),
                None => (&self.conv2, y),
            };
            return ops::conv2d_add_act(last, y, shortcut, Some(Act::Relu));
        }
        let (last, last_bn, y) = match (&self.conv3, &self.bn3) {
            (Some(c3), Some(b3)) => (c3, b3, conv_bn_act(&self.conv2, &self.bn2, f, Act::Relu, y)),
            _ => (&self.conv2, &self.bn2, y),
        };
        let y = ops::conv2d_act(last, y, None);
        if self.drop_path.is_identity_for(&y) {
            // The last BatchNorm, the sum and the ReLU as one op in training on flex.
            return ops::batch_norm_add_act(last_bn, y, shortcut, Some(Act::Relu));
        }
        let y = self.drop_path.forward(ops::batch_norm(last_bn, y));
        relu(residual_add(y, shortcut))
    }

    fn fold(self) -> Self {
        let conv3 = match (self.conv3, &self.bn3) {
            (Some(c), Some(b)) => Some(fold_bn(c, b)),
            (c, _) => c,
        };
        Self {
            conv1: fold_bn(self.conv1, &self.bn1),
            conv2: fold_bn(self.conv2, &self.bn2),
            conv3,
            downsample: self.downsample.map(|(c, b)| (fold_bn(c, &b), b)),
            folded: true,
            ..self
        }
    }
}

#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<ResBlock>,
    pub layer2: Vec<ResBlock>,
    pub layer3: Vec<ResBlock>,
    pub layer4: Vec<ResBlock>,
    pub dropout: Dropout,
    pub fc: Option<Linear>,
    pub folded: bool,
}

impl ResNet {
    pub fn new(arch: &ResNetArch, opts: &CommonOptions, device: &Device) -> Self {
        let eps = opts.bn_eps.unwrap_or(1e-5);
        let p = PadMode::Symmetric;
        let e = arch.block.expansion();
        let total: usize = arch.layers.iter().sum();
        let mut idx = 0usize;
        let mut cin = STEM_WIDTH;
        let mut stages: Vec<Vec<ResBlock>> = Vec::new();
        for (s, (&n, &c)) in arch.layers.iter().zip(&arch.channels).enumerate() {
            let mut blocks = Vec::new();
            for j in 0..n {
                let stride = if s > 0 && j == 0 { 2 } else { 1 };
                // timm: rate grows linearly with the block index, ending at drop_path_rate.
                let dpr = opts.drop_path_rate * idx as f64 / (total.max(2) - 1) as f64;
                idx += 1;
                let downsample = (stride != 1 || cin != c * e).then(|| {
                    (
                        Conv::new(cin, c * e, 1, p).stride(stride).init(device),
                        bn(c * e, eps, device),
                    )
                });
                let block = match arch.block {
                    ResBlockKind::Basic => ResBlock {
                        conv1: Conv::new(cin, c, 3, p).stride(stride).init(device),
                        bn1: bn(c, eps, device),
                        conv2: Conv::new(c, c, 3, p).init(device),
                        bn2: bn(c, eps, device),
                        conv3: None,
                        bn3: None,
                        downsample,
                        drop_path: DropPath::new(dpr),
                        folded: false,
                    },
                    ResBlockKind::Bottleneck => ResBlock {
                        conv1: Conv::new(cin, c, 1, p).init(device),
                        bn1: bn(c, eps, device),
                        conv2: Conv::new(c, c, 3, p).stride(stride).init(device),
                        bn2: bn(c, eps, device),
                        conv3: Some(Conv::new(c, c * e, 1, p).init(device)),
                        bn3: Some(bn(c * e, eps, device)),
                        downsample,
                        drop_path: DropPath::new(dpr),
                        folded: false,
                    },
                };
                blocks.push(block);
                cin = c * e;
            }
            stages.push(blocks);
        }
        let mut it = stages.into_iter();
        let mut next = || it.next().unwrap_or_default();
        Self {
            conv1: Conv::new(opts.in_chans, STEM_WIDTH, 7, p)
                .stride(2)
                .init(device),
            bn1: bn(STEM_WIDTH, eps, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            dropout: DropoutConfig::new(opts.drop_rate).init(),
            fc: (opts.num_classes > 0)
                .then(|| LinearConfig::new(arch.num_features(), opts.num_classes).init(device)),
            folded: false,
        }
    }

    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        // Folded (inference) under `--dtype bf16`: every layer below takes and gives bf16
        // activations, as PyTorch's autocast runs them (global pooling returns f32).
        let x = match self.folded {
            true => committee_ops::bf16_activations(x),
            false => x,
        };
        let mut x = conv_bn_act(&self.conv1, &self.bn1, self.folded, Act::Relu, x);
        x = committee_ops::max_pool(&self.maxpool, x);
        for b in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = b.forward(x);
        }
        global_avg_pool(x)
    }

    /// Folds every BatchNorm into its convolution, for inference.
    pub fn fold_batchnorm(self) -> Self {
        if self.folded {
            return self;
        }
        let fold = |v: Vec<ResBlock>| v.into_iter().map(ResBlock::fold).collect();
        Self {
            conv1: fold_bn(self.conv1, &self.bn1),
            layer1: fold(self.layer1),
            layer2: fold(self.layer2),
            layer3: fold(self.layer3),
            layer4: fold(self.layer4),
            folded: true,
            ..self
        }
    }

    pub fn forward_head(&self, features: Tensor<2>) -> Tensor<2> {
        crate::layers::classifier(self.fc.as_ref(), &self.dropout, features)
    }
}
