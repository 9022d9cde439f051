//! Convolutions of EfficientNet-B0, MobileNetV2 and ResNet-50 (1x1, stems, 3x3) with bf16 products
//! (`--dtype bf16`, forced on every shape) against f32, alternated call by call, fastest of
//! `REPS` (default 9) each, as one thread's part of a split batch runs them (the measurements behind
//! `conv::bf16_pays`):
//! `N=4 RAYON_NUM_THREADS=1 cargo run --release -p committee-ops --example conv_dtype`
//! (`TAPS=1`: bf16 unfolded against bf16 at tap offsets instead; `ROWS=1 BF16_IN=1`: 1x1
//! convolutions over bf16 images packed first against read in place).

mod common;

use std::time::Instant;

use burn::tensor::Device;
use committee_ops::cpu::bf16::Bf16Kernel;
use committee_ops::cpu::{Epilogue, conv_gemm};
use committee_ops::precision;
use common::{conv_case, report};

fn main() {
    let Some(kernel) = Bf16Kernel::detect() else {
        eprintln!("no bf16 kernel on this CPU");
        return;
    };
    // As the CLI runs: freed outputs reused, not faulted in again per call.
    committee_ops::heap::keep_freed_memory();
    let device = Device::flex();
    // Time the bf16 path on every shape, also those `--dtype bf16` leaves in f32.
    committee_ops::cpu::conv::set_bf16_everywhere(true);
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    // (c_in, c_out, size): 1x1 at stride 1; then (c_in, c_out, size, kernel, stride) dense.
    let dense = [
        (3, 32, 224, 3, 2),
        (3, 64, 224, 7, 2),
        (64, 64, 56, 3, 1),
        (128, 128, 56, 3, 2),
        (128, 128, 28, 3, 1),
        (256, 256, 14, 3, 1),
        (512, 512, 7, 3, 1),
        (256, 512, 56, 1, 2),
    ];
    let ones = [
        (32, 16, 112),
        (16, 96, 112),
        (96, 24, 56),
        (24, 144, 56),
        (144, 24, 56),
        (144, 40, 28),
        (40, 240, 28),
        (240, 40, 28),
        (240, 80, 14),
        (80, 480, 14),
        (480, 80, 14),
        (480, 112, 14),
        (112, 672, 14),
        (672, 112, 14),
        (672, 192, 7),
        (192, 1152, 7),
        (1152, 192, 7),
        (1152, 320, 7),
        (320, 1280, 7),
        (96, 4, 1),
        (4, 96, 1),
        (1152, 48, 1),
        (48, 1152, 1),
        (64, 64, 56),
        (64, 256, 56),
        (256, 64, 56),
        (512, 128, 28),
        (128, 512, 28),
        (1024, 256, 14),
        (256, 1024, 14),
        (2048, 512, 7),
        (512, 2048, 7),
    ];
    let all = ones
        .into_iter()
        .map(|(c, m, hw)| (c, m, hw, 1, 1))
        .chain(dense);
    // `ONLY=c,m,hw,k,s` times that one shape (for a profile).
    let only: Option<Vec<usize>> = std::env::var("ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect());
    // `BF16_ONLY=1` skips the f32 side (to profile the bf16 one).
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let bf16_only = std::env::var("BF16_ONLY").is_ok_and(|v| v == "1");
    // `BF16_IN=1` hands the bf16 side a bf16 input (activations kept in bf16, as a ResNet's
    // under `--dtype bf16`): bf16 in, bf16 out.
    let bf16_in = std::env::var("BF16_IN").is_ok_and(|v| v == "1");
    // `TAPS=1`: both sides bf16, the stride-1 and stem convolutions unfolded against read at
    // tap offsets (`conv::set_bf16_taps`), instead of f32 against bf16.
    let taps = std::env::var("TAPS").is_ok_and(|v| v == "1");
    // `ROWS=1`: both sides bf16 with a bf16 input, 1x1 convolutions over an image packed first
    // against read in place (`conv::set_bf16_rows`).
    let rows = std::env::var("ROWS").is_ok_and(|v| v == "1");
    let names = if taps {
        ["unfold", "taps"]
    } else if rows {
        ["packed", "rows"]
    } else {
        ["f32", "bf16"]
    };
    for (c, m, hw, k, s) in all {
        if only.as_ref().is_some_and(|o| o[..] != [c, m, hw, k, s]) {
            continue;
        }
        let (conv, x, macs) = conv_case(&device, n, [c, m, k, s, hw]);
        let xb = x.clone().cast(burn::tensor::FloatDType::BF16);
        let mut best = [f64::MAX; 2];
        for _ in 0..reps {
            for (i, k) in [None, Some(kernel)].into_iter().enumerate() {
                if i == 0 && bf16_only {
                    continue;
                }
                let k = if taps || rows { Some(kernel) } else { k };
                committee_ops::cpu::conv::set_bf16_taps(!taps || i == 1);
                committee_ops::cpu::conv::set_bf16_rows(!rows || i == 1);
                precision::use_kernel(k).expect("available");
                let x = if (i == 1 || taps || rows) && bf16_in {
                    &xb
                } else {
                    &x
                };
                let t = Instant::now();
                let y = conv_gemm(&conv, x.clone(), Epilogue::Relu)
                    .unwrap_or_else(|_| panic!("not on the flex kernels"));
                // The output's own time only: reading it back would add a copy.
                let dt = t.elapsed().as_secs_f64();
                std::hint::black_box(y);
                best[i] = best[i].min(dt);
            }
        }
        precision::use_kernel(None).expect("f32");
        let case = format!("c{c:5} m{m:5} k{k} s{s} {hw:3}x{hw:<3} n{n}");
        report(&case, names, best, macs);
    }
}
