//! Vision Transformer (timm's `VisionTransformer`, class-token pooling, pre-norm blocks).

use burn::module::Initializer;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::layers::{Act, Conv, DropPath, PadMode, linear, mlp, residual_add};
use crate::options::CommonOptions;
use committee_ops::{self as ops, profile};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VitArch {
    pub patch: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp: usize,
}

impl VitArch {
    pub fn new(dim: usize, depth: usize, heads: usize) -> Self {
        Self {
            patch: 16,
            dim,
            depth,
            heads,
            mlp: dim * 4,
        }
    }

    pub fn grid(&self, img: [usize; 2]) -> [usize; 2] {
        [img[0] / self.patch, img[1] / self.patch]
    }

    pub fn macs(&self, img: [usize; 2], in_chans: usize, num_classes: usize) -> u64 {
        let [gh, gw] = self.grid(img);
        let np = gh * gw;
        let n = np + 1;
        let d = self.dim;
        let patch = (np * d * in_chans * self.patch * self.patch) as u64;
        // qkv, q.k^T, attn.v, proj, mlp
        let block = (n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * self.mlp) as u64;
        patch + self.depth as u64 * block + (d * num_classes) as u64
    }
}

#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    pub num_heads: usize,
}

impl Attention {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let qkv = linear("linear qkv", &self.qkv, x, None);
        let o = ops::attention(qkv, self.num_heads);
        linear("linear attn proj", &self.proj, o, None)
    }
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

#[derive(Module, Debug)]
pub struct VitBlock {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub drop_path: DropPath,
}

impl VitBlock {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let norm = |ln: &LayerNorm, x: Tensor<3>| ops::layer_norm(ln, VIT_LN_EPS, x);
        let a = self.attn.forward(norm(&self.norm1, x.clone()));
        let x = residual_add(self.drop_path.forward(a), x);
        let y = mlp(
            "linear mlp",
            &self.mlp.fc1,
            &self.mlp.fc2,
            norm(&self.norm2, x.clone()),
            Some(Act::Gelu),
        );
        residual_add(self.drop_path.forward(y), x)
    }
}

#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
}

#[derive(Module, Debug)]
pub struct Vit {
    pub cls_token: Param<Tensor<3>>,
    pub pos_embed: Param<Tensor<3>>,
    pub patch_embed: PatchEmbed,
    pub blocks: Vec<VitBlock>,
    pub norm: LayerNorm,
    pub dropout: Dropout,
    pub head: Option<Linear>,
}

/// LayerNorm eps in timm's ViT (burn defaults to 1e-5).
pub const VIT_LN_EPS: f64 = 1e-6;

impl Vit {
    pub fn new(arch: &VitArch, img: [usize; 2], opts: &CommonOptions, device: &Device) -> Self {
        let d = arch.dim;
        let [gh, gw] = arch.grid(img);
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(VIT_LN_EPS)
                .init(device)
        };
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let blocks = (0..arch.depth)
            .map(|i| VitBlock {
                norm1: ln(),
                attn: Attention {
                    qkv: lin(d, 3 * d),
                    proj: lin(d, d),
                    num_heads: arch.heads,
                },
                norm2: ln(),
                mlp: Mlp {
                    fc1: lin(d, arch.mlp),
                    fc2: lin(arch.mlp, d),
                },
                drop_path: DropPath::new(if arch.depth > 1 {
                    opts.drop_path_rate * i as f64 / (arch.depth - 1) as f64
                } else {
                    opts.drop_path_rate
                }),
            })
            .collect();
        Self {
            cls_token: normal.init([1, 1, d], device),
            pos_embed: normal.init([1, gh * gw + 1, d], device),
            patch_embed: PatchEmbed {
                proj: Conv::new(opts.in_chans, d, arch.patch, PadMode::Valid)
                    .stride(arch.patch)
                    .with_bias()
                    .init(device),
            },
            blocks,
            norm: ln(),
            dropout: DropoutConfig::new(opts.drop_rate).init(),
            head: (opts.num_classes > 0).then(|| lin(d, opts.num_classes)),
        }
    }

    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        // In f32, Burn's convolution (through `ops::conv2d`), not the CPU im2col kernel: on
        // flex it gave the parity fixtures' features 1.1e-7 where Burn's gives 7.1e-8, at
        // equal speed. With bf16 products the CPU kernel (as PyTorch's autocast runs it in
        // bf16): Burn's f32 convolution took 19 ms of ViT-B/16's bf16 forward at batch 8.
        let proj = &self.patch_embed.proj;
        let x = match ops::precision::bf16_kernel() {
            Some(_) => ops::conv2d_act(proj, x, None),
            None => profile::conv_with(proj, x, |x| ops::conv2d(proj, x)),
        };
        let [b, d, gh, gw] = x.dims();
        let mut x = profile::layer("embed (tokens, cls, pos)", x, |x| {
            let x = x.reshape([b, d, gh * gw]).swap_dims(1, 2);
            let cls = self.cls_token.val().expand([b, 1, d]);
            Tensor::cat(vec![cls, x], 1) + self.pos_embed.val()
        });
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = ops::layer_norm(&self.norm, VIT_LN_EPS, x);
        x.narrow(1, 0, 1).reshape([b, d])
    }

    pub fn forward_head(&self, features: Tensor<2>) -> Tensor<2> {
        crate::layers::classifier(self.head.as_ref(), &self.dropout, features)
    }
}
