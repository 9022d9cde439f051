//! Parity with PyTorch: checkpoints written by real timm/torchvision, loaded here, run on each
//! backend, compared with the logits and pooled features PyTorch computed.
//! Bar: max |ours - ref| <= 1e-4 * max(1, max |ref|).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use committee_ops::backend::{BackendKind, select};
use committee_zoo::efficientnet::EfficientNetArch;
use committee_zoo::registry::{self, Arch, ModelSpec};
use committee_zoo::resnet::{ResBlockKind, ResNetArch};
use committee_zoo::vit::VitArch;
use committee_zoo::weights::{LoadOptions, load_spec, parse_safetensors};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../../tests/fixtures/parity")
}

fn cases() -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap()
}

/// Builds the spec a case describes: a registry name or a reduced architecture.
fn spec_of(case: &Value) -> ModelSpec {
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

fn tensor<const D: usize>(t: &committee_zoo::weights::RawTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

fn max_err(ours: Tensor<2>, reference: &committee_zoo::weights::RawTensor) -> (f32, f32) {
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
fn run_case(case: &Value, spec: ModelSpec, device: &Device) -> (f32, f32) {
    run_case_with(case, spec, device, false)
}

fn run_case_with(case: &Value, spec: ModelSpec, device: &Device, fold: bool) -> (f32, f32) {
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
    // `Model::forward` as well: on flex it splits a CNN's batch over the threads
    // (`kernels::split_batch`); both ways must give PyTorch's logits.
    let whole = model.forward(x.clone());
    let feats = model.forward_features(x);
    let logits = model.forward_head(feats.clone());
    let (fe, fs) = max_err(feats, &io.tensors["features"]);
    let (le, ls) = max_err(logits, &io.tensors["logits"]);
    let (we, _) = max_err(whole, &io.tensors["logits"]);
    (fe / fs, le.max(we) / ls)
}

fn parity_on(kind: BackendKind) {
    parity_on_with(kind, false);
}

fn parity_on_with(kind: BackendKind, fold: bool) {
    let sel = select(kind).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("backend {kind} on {}", sel.adapter);
    let mut failures = Vec::new();
    for case in cases() {
        let name = case["case"].as_str().unwrap().to_string();
        let (f, l) = run_case_with(&case, spec_of(&case), &sel.device, fold);
        let tag = if fold { " (BN folded)" } else { "" };
        eprintln!("{kind:8} {name:26} features rel err {f:.2e}  logits rel err {l:.2e}{tag}");
        if f > 1e-4 || l > 1e-4 {
            failures.push(format!("{name}: features {f:.2e}, logits {l:.2e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "parity above 1e-4 on {kind}: {failures:#?}"
    );
}

#[test]
fn parity_flex() {
    parity_on(BackendKind::Flex);
}

/// The inference optimisations keep parity: BN folded, and (on two threads, whatever the
/// machine has) each fixture's batch of two split into one image per thread.
#[test]
fn parity_flex_batchnorm_folded() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a 2-thread pool");
    pool.install(|| parity_on_with(BackendKind::Flex, true));
}

#[test]
#[cfg(feature = "ndarray")]
fn parity_ndarray() {
    parity_on(BackendKind::Ndarray);
}

#[test]
#[cfg(feature = "wgpu")]
fn parity_wgpu() {
    parity_on(BackendKind::Wgpu);
}

/// Only built with `--features cuda`; run on a machine with an NVIDIA GPU.
#[test]
#[cfg(feature = "cuda")]
fn parity_cuda() {
    parity_on(BackendKind::Cuda);
}

/// The fixtures must be able to fail: the TF model with PyTorch's BN eps, or with symmetric
/// padding, is visibly off.
#[test]
fn wrong_eps_or_padding_is_caught() {
    let device = select(BackendKind::Flex)
        .or_else(|_| select(BackendKind::Auto))
        .unwrap()
        .device;
    let case = cases()
        .into_iter()
        .find(|c| c["case"] == "tf_efficientnet_w05_d05")
        .unwrap();
    for mutate in [
        |a: &mut EfficientNetArch| a.bn_eps = 1e-5,
        |a: &mut EfficientNetArch| a.pad = committee_zoo::layers::PadMode::Symmetric,
    ] {
        let mut spec = spec_of(&case);
        if let Arch::EfficientNet(a) = &mut spec.arch {
            mutate(a);
        }
        let (_, l) = run_case(&case, spec, &device);
        assert!(l > 1e-2, "a wrong variant still matched (rel err {l:.2e})");
    }
}
