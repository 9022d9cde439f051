//! A training step (forward in train mode, cross-entropy, backward, SGD momentum) with one of
//! committee's process-wide switches off against on, alternated step by step in one process:
//! `cargo run --release -p committee-train --example ab_train -- MODEL BATCH ROUNDS SWITCH`
//! (224 px, `--dtype bf16` products), SWITCH `bf16-routing` (1x1 layers that
//! `half_pays` keeps in f32 against every layer in bf16; "off" is every layer in bf16) or
//! `wgrad-images` (several images per weight-gradient product against one) or
//! `depthwise-planes` (stride-1 depthwise layers plane by plane against channels-last) or
//! `depthwise-phases` (the gradients of stride-2 depthwise layers run plane by plane split by
//! phases against over the spread output gradient) or `sgd-one-pass` (the SGD update in one
//! pass per parameter against Burn's tensor ops) or `keep-large` (freed blocks of 32 MB and more
//! kept for reuse by the global allocator, as the CLI's, against unmapped) or
//! `transpose-registers` (transposed bf16 operands woven in registers against pair by pair)
//! or `train-taps` (stride-1 dense layers' forward and input gradient read at tap offsets
//! against unfolded) or `max-pool` (max pooling with its own backward against Burn's) or
//! `wgrad-dots` (weight gradients of 1x1 and dense layers as dot products over pixels
//! against matrix products over the unfolded image) or `bn-per-channel` (BatchNorm's passes per channel in one
//! task against each pass over all channels after the other) or `bn-slope-from-input`
//! (the slopes of ReLU and ReLU6 after BatchNorm found again from its input against kept) or
//! `bn-residual` (a residual block's last BatchNorm, sum and ReLU as one op against apart) or
//! `se` (squeeze-and-excitation's mean and scaling as ops with their own backward against
//! Burn's) or `unzeroed` (convolution outputs
//! and input gradients written into fresh memory against zeroed first) or `direct` (f32
//! stride-1 layers under 56x56 as direct convolutions against unfolded or tap offsets); add `f32` as a fifth
//! argument for f32 products. Each round
//! times one step with the switch off, then one with it on; the per-round ratio compares the
//! same minute of a host whose speed drifts.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use committee_ops::cpu::train;
use committee_ops::precision::{self, Dtype};
use committee_train::mixed;
use committee_zoo::weights::random_model;
use committee_zoo::{CommonOptions, registry};

/// As the CLI's (`src/main.rs`), so that `keep-large` has something to switch.
#[global_allocator]
static ALLOC: committee_ops::heap::KeepLarge = committee_ops::heap::KeepLarge;

fn main() {
    committee_ops::heap::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("mobilenetv2_100", String::as_str);
    let batch: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(8);
    let rounds: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(6);
    let switch: fn(bool) = match args.get(4).map_or("bf16-routing", String::as_str) {
        "bf16-routing" => |on| train::set_bf16_everywhere(!on),
        "wgrad-images" => train::set_images_per_product,
        "depthwise-planes" => train::set_depthwise_planes,
        "depthwise-phases" => train::set_depthwise_phases,
        "sgd-one-pass" => committee_ops::optim::set_sgd_one_pass,
        "keep-large" => committee_ops::heap::keep_large_blocks,
        "transpose-registers" => committee_ops::cpu::bf16::set_transpose_in_registers,
        "train-taps" => train::set_train_taps,
        "max-pool" => train::set_max_pool,
        "wgrad-dots" => train::set_weight_grad_dots,
        "bn-per-channel" => train::set_batch_norm_per_channel,
        "bn-slope-from-input" => train::set_batch_norm_slope_from_input,
        "bn-residual" => train::set_batch_norm_residual,
        "se" => train::set_squeeze_excite,
        "unzeroed" => train::set_unzeroed,
        "direct" => train::set_direct,
        "direct-wgrad" => train::set_direct_weight_grad,
        other => {
            eprintln!(
                "unknown switch {other}: bf16-routing, wgrad-images, depthwise-planes, transpose-registers, train-taps, max-pool, wgrad-dots, bn-per-channel, bn-slope-from-input, bn-residual, se, unzeroed, direct, direct-wgrad, depthwise-phases, sgd-one-pass or keep-large"
            );
            std::process::exit(2);
        }
    };
    let dtype = match args.get(5).map(String::as_str) {
        Some("f32") => Dtype::F32,
        _ => Dtype::Bf16,
    };
    if let Err(e) = precision::set(dtype) {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let Some(spec) = registry::get(name) else {
        eprintln!("unknown model {name}");
        std::process::exit(2);
    };
    let ad = Device::flex().autodiff();
    let mut model = random_model(&spec, &CommonOptions::default(), [224; 2], &ad);
    let mut optim = committee_train::trainer::timing_sgd();
    let x = Tensor::<4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), &ad);
    let labels: Vec<i64> = (0..batch).map(|i| i as i64).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &ad);
    let mut ratios = Vec::new();
    // Step 0 warms up; then off, on, off, on...
    for step in 0..=2 * rounds {
        let on = step % 2 == 0;
        switch(on);
        let s = Instant::now();
        let logits = mixed::forward(&model, x.clone(), None);
        let loss = committee_train::loss::cross_entropy(logits, y.clone(), 0.0);
        let grads = mixed::grads(loss.clone(), &model, None);
        let _ = loss.into_data();
        if let Some(grads) = grads {
            model = optim.step(0.01, model, grads);
        }
        let t = s.elapsed().as_secs_f64();
        if step == 0 {
            continue;
        }
        println!(
            "step {step} {}: {:.1} ms",
            if on { "on " } else { "off" },
            t * 1e3
        );
        ratios.push((on, t));
    }
    let mut r: Vec<f64> = ratios.chunks(2).map(|p| p[0].1 / p[1].1).collect();
    r.sort_by(f64::total_cmp);
    println!(
        "{name} b{batch}: off/on per round median {:.3}x (range {:.3}-{:.3})",
        r[r.len() / 2],
        r[0],
        r[r.len() - 1]
    );
}
