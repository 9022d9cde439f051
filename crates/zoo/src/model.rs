//! One type for every family, so callers hold a `Model` whatever they loaded.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, FloatDType, Tensor};

use crate::efficientnet::EfficientNet;
use crate::options::CommonOptions;
use crate::registry::Arch;
use crate::resnet::ResNet;
use crate::vit::Vit;

/// Unboxed: one per loaded model, and Burn's `Module` derive visits the fields as they are.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Model {
    EfficientNet(EfficientNet),
    ResNet(ResNet),
    Vit(Vit),
}

impl Model {
    /// Builds `arch` for `img` x `img` inputs (only ViT's position embedding depends on it).
    /// Parameters are lazy: nothing is allocated until used or loaded.
    pub fn new(arch: &Arch, img: [usize; 2], opts: &CommonOptions, device: &Device) -> Self {
        match arch {
            Arch::EfficientNet(a) => Model::EfficientNet(EfficientNet::new(a, opts, device)),
            Arch::ResNet(a) => Model::ResNet(ResNet::new(a, opts, device)),
            Arch::Vit(a) => Model::Vit(Vit::new(a, img, opts, device)),
        }
    }

    /// Folds BatchNorm into convolutions: same outputs in inference, less work. Not for
    /// training (the BN statistics stop updating).
    pub fn fold_batchnorm(self) -> Self {
        match self {
            Model::EfficientNet(m) => Model::EfficientNet(m.fold_batchnorm()),
            Model::ResNet(m) => Model::ResNet(m.fold_batchnorm()),
            Model::Vit(m) => Model::Vit(m),
        }
    }

    /// The model in the precision `--dtype` asks of `device`: its float parameters cast to
    /// f16 on GPU devices under `--dtype f16` (after any BatchNorm folding, which stays in
    /// f32), unchanged otherwise (`committee_ops::precision::gpu_float`).
    pub fn in_precision(self, device: &Device) -> Self {
        match committee_ops::precision::gpu_float(device) {
            Some(dtype) => self.map(&mut Cast(dtype)),
            None => self,
        }
    }

    /// Logits `[N, classes]` (or pooled features if built without a head). On flex, the
    /// batch is split over the threads (`committee_ops::split_batch`), ViT's too: its
    /// products split over the threads ran ViT-B/16 bf16 at batch 8 at 14.7-16.5 img/s, one
    /// image per thread at 17.4-18.9 (Intel Xeon, 2 threads, alternated, 2026-12-06).
    /// Inputs and outputs are f32 whatever the model's precision (see
    /// [`Model::in_precision`]).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match committee_ops::split_batch(x, |part| self.forward_whole(part)) {
            Ok(logits) => logits,
            Err(x) => self.forward_whole(x),
        }
    }

    fn forward_whole(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_head(self.forward_features(x))
    }

    /// Pooled features, the classifier's input `[N, D]`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = in_model_precision(x);
        f32_out(match self {
            Model::EfficientNet(m) => m.forward_features(x),
            Model::ResNet(m) => m.forward_features(x),
            Model::Vit(m) => m.forward_features(x),
        })
    }

    /// Logits of pooled features.
    pub fn forward_head(&self, features: Tensor<2>) -> Tensor<2> {
        let features = in_model_precision(features);
        f32_out(match self {
            Model::EfficientNet(m) => m.forward_head(features),
            Model::ResNet(m) => m.forward_head(features),
            Model::Vit(m) => m.forward_head(features),
        })
    }
}

/// `x` in the precision models on its device run in (f16 under `--dtype f16` on GPUs).
fn in_model_precision<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match committee_ops::precision::gpu_float(&x.device()) {
        Some(dtype) if x.dtype() != DType::from(dtype) => x.cast(dtype),
        _ => x,
    }
}

/// `t` as f32: what callers read, whatever the model's precision.
fn f32_out<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

/// Casts every float parameter to one dtype.
struct Cast(FloatDType);

impl ModuleMapper for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}
