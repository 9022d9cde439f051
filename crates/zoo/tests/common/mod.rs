//! What the parity tests share: the fixture cases (tests/fixtures/parity, written by real
//! timm/torchvision) and running one on a device.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use committee_zoo::efficientnet::EfficientNetArch;
use committee_zoo::registry::{self, Arch, ModelSpec};
use committee_zoo::resnet::{ResBlockKind, ResNetArch};
use committee_zoo::vit::VitArch;
use committee_zoo::weights::{Checkpoint, LoadOptions, load_spec, parse_safetensors};
use serde_json::Value;

pub fn dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../../tests/fixtures/parity")
}

pub fn cases() -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap()
}

/// Builds the spec a case describes: a registry name or a reduced architecture.
pub fn spec_of(case: &Value) -> ModelSpec {
    let f = |k: &str| case[k].as_f64().unwrap();
    let u = |k: &str| case[k].as_u64().unwrap() as usize;
    let base = |name: &str| registry::get(name).unwrap();
    match case["kind"].as_str().unwrap() {
        "registry" => base(case["name"].as_str().unwrap()),
        "efficientnet" => {
            let arch = EfficientNetArch::efficientnet(
                f("width"),
                f("depth"),
                case["tf"].as_bool().unwrap(),
                f("tv_eps"),
            );
            ModelSpec {
                arch: Arch::EfficientNet(arch),
                name: case["case"].as_str().unwrap().into(),
                ..base("efficientnet_b0")
            }
        }
        "resnet" => {
            let v = |k: &str| -> [usize; 4] {
                let a: Vec<usize> = case[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect();
                [a[0], a[1], a[2], a[3]]
            };
            let block = if case["block"] == "basic" {
                ResBlockKind::Basic
            } else {
                ResBlockKind::Bottleneck
            };
            let arch = ResNetArch {
                block,
                layers: v("layers"),
                channels: v("channels"),
            };
            ModelSpec {
                arch: Arch::ResNet(arch),
                name: case["case"].as_str().unwrap().into(),
                ..base("resnet18")
            }
        }
        "vit" => {
            let arch = VitArch {
                patch: 16,
                dim: u("dim"),
                depth: u("depth"),
                heads: u("heads"),
                mlp: u("mlp"),
            };
            ModelSpec {
                arch: Arch::Vit(arch),
                name: case["case"].as_str().unwrap().into(),
                ..base("vit_tiny_patch16_224")
            }
        }
        k => panic!("unknown case kind {k}"),
    }
}

pub fn tensor<const D: usize>(t: &committee_zoo::weights::RawTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

pub fn max_err(ours: Tensor<2>, reference: &committee_zoo::weights::RawTensor) -> (f32, f32) {
    let ours = ours.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(ours.len(), reference.data.len());
    let err = ours
        .iter()
        .zip(&reference.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = reference.data.iter().map(|v| v.abs()).fold(1f32, f32::max);
    (err, scale)
}

/// Runs one case; returns (relative feature error, relative logit error).
pub fn run_case(case: &Value, spec: ModelSpec, device: &Device) -> (f32, f32) {
    run_case_with(case, spec, device, false)
}

pub fn run_case_with(case: &Value, spec: ModelSpec, device: &Device, fold: bool) -> (f32, f32) {
    let out = case_outputs(case, spec, device, fold);
    let (fe, fs) = max_err(out.features, &out.io.tensors["features"]);
    let (le, ls) = max_err(out.logits, &out.io.tensors["logits"]);
    let (we, _) = max_err(out.whole, &out.io.tensors["logits"]);
    (fe / fs, le.max(we) / ls)
}

/// A case's model run on its input: the fixture's tensors and ours.
pub struct CaseOutputs {
    /// The fixture: `input`, and PyTorch's `features` and `logits`.
    pub io: Checkpoint,
    pub features: Tensor<2>,
    /// `forward_head` of `features`.
    pub logits: Tensor<2>,
    /// `Model::forward` as well: on flex it splits a CNN's batch over the threads
    /// (`kernels::split_batch`); both ways must give PyTorch's logits.
    pub whole: Tensor<2>,
}

/// Loads a case's checkpoint (BatchNorm folded when `fold`) and runs its input.
pub fn case_outputs(case: &Value, spec: ModelSpec, device: &Device, fold: bool) -> CaseOutputs {
    let name = case["case"].as_str().unwrap();
    let io =
        parse_safetensors(&std::fs::read(dir().join(format!("{name}.io.safetensors"))).unwrap())
            .unwrap();
    let img: Vec<usize> = case["img"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let opts = LoadOptions {
        img_size: Some([img[0], img[1]]),
        ..Default::default()
    };
    let ckpt = dir().join(case["checkpoint"].as_str().unwrap());
    let loaded =
        load_spec(spec, Path::new(&ckpt), &opts, device).unwrap_or_else(|e| panic!("{name}: {e}"));
    let model = if fold {
        loaded.model.fold_batchnorm()
    } else {
        loaded.model
    };
    let x = tensor::<4>(&io.tensors["input"], device);
    let whole = model.forward(x.clone());
    let features = model.forward_features(x);
    let logits = model.forward_head(features.clone());
    CaseOutputs {
        io,
        features,
        logits,
        whole,
    }
}
