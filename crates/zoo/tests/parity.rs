//! Parity with PyTorch: checkpoints written by real timm/torchvision, loaded here, run on each
//! backend, compared with the logits and pooled features PyTorch computed.
//! Bar: max |ours - ref| <= 1e-4 * max(1, max |ref|).

mod common;

use committee_ops::backend::{BackendKind, select};
use committee_zoo::efficientnet::EfficientNetArch;
use committee_zoo::registry::Arch;
use common::*;

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
