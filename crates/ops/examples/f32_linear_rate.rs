//! ViT-B/16's f32 linear layers through `cpu::linear`, the weight packed once
//! (`linear_packed`) against the `gemm` crate, alternated call by call, with the bias and (for
//! fc1) GELU. As the model runs at batch 8 (its batch split, one image per thread): 197 rows,
//! one thread, each call on one of `COPIES` (default 12) weights in turn, so that weights
//! come from memory as a model's do:
//! `RAYON_NUM_THREADS=1 cargo run --release -p committee-ops --example f32_linear_rate`
//! (`TOKENS=1576` the whole batch, `ONLY=fc1` one shape, `REPS` calls per side, default 48).
//! Prints each side's fastest call and the median of the per-pair ratios (gemm time over
//! packed time: above 1 where packing once is faster).

use std::time::Instant;

use burn::nn::LinearConfig;
use burn::tensor::{Device, Distribution, Tensor};
use committee_ops::cpu::linear::set_packed;
use committee_ops::cpu::{Epilogue, linear};

fn main() {
    committee_ops::heap::keep_freed_memory();
    let device = Device::flex();
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (t, reps, copies) = (
        env("TOKENS", 197),
        env("REPS", 48),
        env("COPIES", 12).max(1),
    );
    let only = std::env::var("ONLY").ok();
    for (name, k, n, ep) in [
        ("qkv", 768, 2304, Epilogue::None),
        ("proj", 768, 768, Epilogue::None),
        ("fc1", 768, 3072, Epilogue::Gelu),
        ("fc2", 3072, 768, Epilogue::None),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let lins: Vec<_> = (0..copies)
            .map(|_| LinearConfig::new(k, n).init(&device))
            .collect();
        let x = Tensor::<2>::random([t, k], Distribution::Normal(0.0, 1.0), &device);
        let mut times = [vec![], vec![]];
        // One untimed call per weight and side first (the packed side packs there).
        for rep in 0..reps + copies {
            for (side, on) in [false, true].into_iter().enumerate() {
                set_packed(on);
                let s = Instant::now();
                let y = linear(&lins[rep % copies], x.clone(), ep);
                let y = y
                    .unwrap_or_else(|_| panic!("f32 on flex: eligible"))
                    .into_data();
                if rep >= copies {
                    times[side].push(s.elapsed().as_secs_f64());
                }
                std::hint::black_box(y);
            }
        }
        let macs = (t * n * k) as f64;
        let best = |v: &[f64]| macs / v.iter().cloned().fold(f64::MAX, f64::min) / 1e9;
        let mut ratio: Vec<f64> = times[0].iter().zip(&times[1]).map(|(a, b)| a / b).collect();
        ratio.sort_by(f64::total_cmp);
        println!(
            "{name:4} {t}x{n}x{k}: gemm {:5.1} GMAC/s, packed {:5.1} GMAC/s (fastest calls); \
             per-pair ratio median {:.3}x (quartiles {:.3}-{:.3})",
            best(&times[0]),
            best(&times[1]),
            ratio[ratio.len() / 2],
            ratio[ratio.len() / 4],
            ratio[3 * ratio.len() / 4]
        );
    }
}
