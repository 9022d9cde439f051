//! The bf16 product's rate on ViT-B/16's linear layers at batch 8 (1576 tokens): packing the
//! left operand and the product with its bias, fastest of `REPS` (default 9), on the kernel `detect` picks
//! (`ONLY=fc1` times one shape):
//! `RAYON_NUM_THREADS=2 cargo run --release -p committee-ops --example bf16_rate`.
//! PyTorch's bf16 autocast linear on the same shapes is `scripts/bf16_linear_rate.py`.

use std::time::Instant;

use committee_ops::cpu::Epilogue;
use committee_ops::cpu::bf16::{Bf16Kernel, Bias, PackedA, PackedB, gemm_new};

fn main() {
    let Some(kernel) = Bf16Kernel::detect() else {
        eprintln!("no bf16 kernel on this CPU");
        return;
    };
    println!("kernel: {}", kernel.name());
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // `TOKENS=197`: one image, as each thread of ViT's split batch runs it; `COPIES=12`: that
    // many weights in turn, so that they come from memory as a model's do.
    let (t, copies) = (env("TOKENS", 8 * 197), env("COPIES", 1).max(1));
    let only = std::env::var("ONLY").ok();
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    for (name, m, n, k) in [
        ("qkv", t, 2304, 768),
        ("proj", t, 768, 768),
        ("fc1", t, 3072, 768),
        ("fc2", t, 768, 3072),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01 - 0.03).collect();
        let bias = vec![0.5f32; n];
        let pbs: Vec<PackedB> = (0..copies).map(|_| PackedB::pack(&b, k, n)).collect();
        let (mut pack, mut product) = (f64::MAX, f64::MAX);
        for rep in 0..reps {
            let pb = &pbs[rep % copies];
            let s = Instant::now();
            let pa = PackedA::pack(&a, m, k);
            let p = s.elapsed().as_secs_f64();
            let c = gemm_new(kernel, &pa, pb, Bias::Columns(&bias), Epilogue::None);
            std::hint::black_box(c);
            pack = pack.min(p);
            product = product.min(s.elapsed().as_secs_f64() - p);
        }
        let macs = (m * n * k) as f64;
        println!(
            "{name:5} {m}x{n}x{k}: pack {:.2} ms, product {:.2} ms = {:.0} GMAC/s ({:.0} with the packing)",
            pack * 1e3,
            product * 1e3,
            macs / product / 1e9,
            macs / (pack + product) / 1e9
        );
    }
}
