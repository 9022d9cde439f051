//! One of committee's process-wide switches off against on, alternated in one process:
//! `cargo run --release -p committee-zoo --example ab_f32_taps -- MODEL BATCH ROUNDS [SWITCH]`
//! where SWITCH is `f32-taps` (the f32 tap-offset convolution against the unfolded path, the
//! default) or `f32-direct` (f32 stride-1 convolutions of small maps run directly against
//! tap offsets or unfolded) or `bf16-routing` (under `--dtype bf16`, the convolutions `conv::bf16_pays` keeps
//! in f32 against all of them in bf16; "off" is every layer in bf16) or `bf16-activations`
//! (under `--dtype bf16`, a ResNet's activations kept in bf16 between layers against f32) or
//! `linear-packed` (f32 linear layers with the weight packed once against the `gemm` crate) or
//! `bf16-taps` (bf16 convolutions read at tap offsets against unfolded) or `bf16-rows` (1x1
//! convolutions over bf16 images read in place against packed first) or `finish-registers`
//! (their whole blocks finished in registers against through the write-back) or
//! `batch-split` (the batch split over the threads, one part per thread, against every
//! product split over the threads; add `bf16` as a fifth argument for `--dtype bf16`).
//! Each round times `REPS` forwards (env `REPS`, default 3; after one untimed warm-up
//! forward unless env `NOWARM` is set) with the path off, then as many with it on, and keeps
//! each side's fastest (`REPS=1 NOWARM=1` alternates call by call); on a shared host that drifts minute by minute, two processes run
//! one after the other compare two different minutes.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use committee_ops::cpu::conv::{set_bf16_everywhere, set_f32_taps};
use committee_ops::precision::{self, Dtype};
use committee_zoo::weights::random_model;
use committee_zoo::{CommonOptions, registry};

const REPS: usize = 3;

fn main() {
    // As the CLI runs: freed activations reused, not faulted in again per call.
    committee_ops::heap::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("resnet50", String::as_str);
    let batch: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(8);
    let rounds: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(5);
    let switch: fn(bool) = match args.get(4).map_or("f32-taps", String::as_str) {
        "f32-taps" => set_f32_taps,
        "f32-direct" => committee_ops::cpu::conv::set_f32_direct,
        "bf16-rows" => committee_ops::cpu::conv::set_bf16_rows,
        "finish-registers" => committee_ops::cpu::bf16::set_finish_in_registers,
        "linear-packed" => committee_ops::cpu::linear::set_packed,
        "bf16-taps" => committee_ops::cpu::conv::set_bf16_taps,
        "batch-split" => |on| {
            use committee_ops::{Kernel, set_enabled};
            let all = Kernel::ALL.iter().copied();
            let kernels: Vec<Kernel> = all.filter(|k| on || *k != Kernel::Batch).collect();
            set_enabled(&kernels)
        },
        "bf16-routing" => {
            if let Err(e) = precision::set(Dtype::Bf16) {
                eprintln!("{e}");
                std::process::exit(2);
            }
            |on| set_bf16_everywhere(!on)
        }
        "bf16-activations" => {
            if let Err(e) = precision::set(Dtype::Bf16) {
                eprintln!("{e}");
                std::process::exit(2);
            }
            committee_ops::set_bf16_activations
        }
        other => {
            eprintln!(
                "unknown switch {other}: f32-taps, f32-direct, linear-packed, bf16-taps, bf16-rows, finish-registers, bf16-routing, bf16-activations or batch-split"
            );
            std::process::exit(2);
        }
    };
    if args.get(5).is_some_and(|a| a == "bf16")
        && let Err(e) = precision::set(Dtype::Bf16)
    {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let Some(spec) = registry::get(name) else {
        eprintln!("unknown model {name}");
        std::process::exit(2);
    };
    let device = Device::flex();
    let model =
        random_model(&spec, &CommonOptions::default(), [224, 224], &device).fold_batchnorm();
    let x = Tensor::<4>::random(
        [batch, 3, 224, 224],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let time = |on: bool| {
        switch(on);
        if std::env::var("NOWARM").is_err() {
            rayon::scope(|_| model.forward(x.clone()).into_data());
        }
        (0..std::env::var("REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(REPS))
            .map(|_| {
                let t = Instant::now();
                // On a pool worker, as the CLI runs (`util::on_pool`).
                rayon::scope(|_| model.forward(x.clone()).into_data());
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let (mut off, mut on) = (vec![], vec![]);
    for r in 0..rounds {
        off.push(batch as f64 / time(false));
        on.push(batch as f64 / time(true));
        println!(
            "{name} b{batch} round {r}: off {:6.2} img/s  on {:6.2} img/s  ({:.2}x)",
            off[r],
            on[r],
            on[r] / off[r]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
    let (best_off, best_on) = (
        off.iter().cloned().fold(0., f64::max),
        on.iter().cloned().fold(0., f64::max),
    );
    println!(
        "{name} b{batch}: median off {:.2} on {:.2} img/s; best {best_off:.2} / {best_on:.2}; per-round ratio median {:.2}x, range {:.2}-{:.2}x",
        median(&mut off.clone()),
        median(&mut on.clone()),
        median(&mut ratios.clone()),
        ratios.iter().cloned().fold(f64::MAX, f64::min),
        ratios.iter().cloned().fold(0., f64::max),
    );
}
