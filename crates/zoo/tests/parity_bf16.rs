//! `--dtype bf16` against PyTorch's own bf16: on the timm-format parity fixtures, committee's
//! logits with bf16 products are no farther from timm's f32 logits than PyTorch's CPU
//! autocast to bfloat16 is (geometric mean of the ratios <= 1; any one case <= 1.5x of
//! PyTorch's error on that input or of its median over 12 inputs scaled by 1 + k 2^-12,
//! whichever is larger, since one input's largest error is one draw of the roundings:
//! PyTorch's own on resnet_basic ranged 5.2e-3 to 1.3e-2 over those draws, 7.0e-3 on the
//! fixture's input) (tests/fixtures/parity/bf16_pytorch.json, written by
//! scripts/bf16_reference.py with torch 2.11 + timm), and give the same top-1 wherever the
//! reference's top-2 margin exceeds PyTorch's own bf16 error (a random fixture's logits can
//! sit closer than that: tf_efficientnet_w05_d05's one image has a margin of 0.25 of its
//! largest logit, PyTorch's bf16 error is 0.26 of it).
//!
//! Its own test binary: the precision is process-wide. Runs on the bf16 kernel this CPU has
//! (AMX, AVX512-BF16), or else on the emulated one (plain f32 arithmetic on bf16 values, the
//! same rounding), so every host checks the packing and the precision.
//! `COMMITTEE_BF16_KERNEL=amx|avx512-bf16|emulated` forces one.

mod common;

use burn::tensor::{Device, Tensor};
use committee_ops::cpu::bf16::Bf16Kernel;
use committee_ops::precision;
use committee_zoo::weights::RawTensor;
use common::*;

#[test]
fn bf16_logits_are_no_farther_from_f32_than_pytorch_bf16() {
    let refs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("bf16_pytorch.json")).expect("bf16_pytorch.json"),
    )
    .expect("JSON");
    // COMMITTEE_BF16_KERNEL forces one (amx, avx512-bf16, emulated), to check each in turn.
    let forced = std::env::var("COMMITTEE_BF16_KERNEL")
        .ok()
        .and_then(|n| Bf16Kernel::from_name(&n));
    let kernel = forced
        .or(Bf16Kernel::detect())
        .unwrap_or(Bf16Kernel::Emulated);
    precision::use_kernel(Some(kernel)).expect("kernel available");
    // As `--dtype bf16` runs (some small convolutions in f32, `conv::bf16_pays`), and with
    // every convolution in bf16, so the fixtures' small layers also check the bf16 paths;
    // then with BatchNorm folded, as the CLI runs inference: a ResNet's activations then
    // stay in bf16 from layer to layer (`committee_ops::bf16_activations`).
    for (everywhere, fold, mode) in [
        (false, false, "as run"),
        (true, false, "all bf16"),
        (false, true, "folded"),
    ] {
        committee_ops::cpu::conv::set_bf16_everywhere(everywhere);
        check(kernel, &refs, mode, fold);
    }
    committee_ops::cpu::conv::set_bf16_everywhere(false);
    precision::use_kernel(None).expect("f32");
}

fn check(kernel: Bf16Kernel, refs: &serde_json::Value, mode: &str, fold: bool) {
    let device = Device::flex();
    let mut failures = Vec::new();
    let mut ratios = Vec::new();
    for case in cases() {
        let name = case["case"].as_str().unwrap().to_string();
        let Some(r) = refs.get(&name) else { continue };
        let torch = r["bf16_rel_err"].as_f64().unwrap();
        let typical = r["bf16_rel_err_median"]
            .as_f64()
            .unwrap_or(torch)
            .max(torch);
        let out = case_outputs(&case, spec_of(&case), &device, fold);
        let reference = &out.io.tensors["logits"];
        let (le, ls) = max_err(out.logits, reference);
        // Top-1 is compared only where PyTorch's own bf16 error could not swap the two
        // largest logits: a random fixture's margin below that flips either way by chance.
        let agree = top1_agreement(out.whole.clone(), reference, torch as f32 * ls);
        let (we, _) = max_err(out.whole, reference);
        let ours = le.max(we) / ls;
        let agree_text = agree.map_or("n/a (margin within PyTorch's bf16 error)".into(), |a| {
            a.to_string()
        });
        eprintln!(
            "{name:26} {} ({mode}): bf16 rel err {ours:.2e}, PyTorch bf16 {torch:.2e} ({:.2}x), top-1 agreement {agree_text}",
            kernel.name(),
            ours as f64 / torch
        );
        ratios.push(ours as f64 / torch);
        if ours as f64 > 1.5 * typical || agree.is_some_and(|a| a < 1.0) {
            failures.push(format!(
                "{name}: {ours:.2e} vs PyTorch {torch:.2e} (median over draws {typical:.2e}), \
                 top-1 {agree_text}"
            ));
        }
    }
    assert!(
        ratios.len() >= 6,
        "only {} cases have a PyTorch bf16 reference",
        ratios.len()
    );
    let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    eprintln!("geometric mean of the ratios ({mode}): {geomean:.2}");
    assert!(
        geomean <= 1.0,
        "{mode}: bf16 farther than PyTorch's on average: {geomean:.2}x"
    );
    assert!(
        failures.is_empty(),
        "{mode}: bf16 farther than PyTorch's: {failures:#?}"
    );
}

/// The fraction of the images whose top-1 class in `logits` is the reference's, over the
/// images whose reference puts its top class more than `min_margin` above the next; `None`
/// when no image does.
fn top1_agreement(logits: Tensor<2>, reference: &RawTensor, min_margin: f32) -> Option<f64> {
    let ours = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap();
    let classes = reference.shape[1];
    let clear: Vec<bool> = ours
        .iter()
        .zip(reference.data.chunks(classes))
        .filter_map(|(o, row)| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let margin = row[order[0]] - order.get(1).map_or(f32::NEG_INFINITY, |&i| row[i]);
            (margin > min_margin).then_some(*o as usize == order[0])
        })
        .collect();
    (!clear.is_empty()).then(|| clear.iter().filter(|s| **s).count() as f64 / clear.len() as f64)
}
