//! ResNet-50's stride-1 3x3 and 1x1 convolutions (bias and ReLU fused): the unfolded path
//! (`conv_gemm` with the tap-offset path off) against `conv_taps::conv` called directly, on
//! every shape (`conv_gemm` takes it only for 3x3 from 14x14 up), alternated call by call,
//! fastest of `REPS` each:
//! `N=8 RAYON_NUM_THREADS=2 cargo run --release -p committee-ops --example f32_taps_shapes`.
//! `DIRECT=1`: the 3x3 shapes through `conv_gemm` with the direct small-map convolution
//! (`conv::set_f32_direct`) off against on instead.

mod common;

use std::mem::MaybeUninit;
use std::time::Instant;

use burn::tensor::Device;
use committee_ops::cpu::bf16::taps::Taps;
use committee_ops::cpu::conv::{set_f32_direct, set_f32_taps};
use committee_ops::cpu::{Epilogue, conv_gemm, conv_taps};
use common::{conv_case, report};

const REPS: usize = 7;

fn main() {
    let device = Device::flex();
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    if std::env::var("DIRECT").is_ok_and(|v| v == "1") {
        for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
            let (conv, x, macs) = conv_case(&device, n, [c, c, 3, 1, hw]);
            let mut best = [f64::MAX; 2];
            // One untimed call first: the direct side blocks its weight there (kept).
            for rep in 0..2 * REPS + 2 {
                let on = rep % 2 == 1;
                set_f32_direct(on);
                let t0 = Instant::now();
                let y = conv_gemm(&conv, x.clone(), Epilogue::Relu);
                if rep >= 2 {
                    best[on as usize] = best[on as usize].min(t0.elapsed().as_secs_f64());
                }
                drop(y);
            }
            report(
                &format!("c{c:4} k3 s1 {hw:3} n{n}"),
                ["before", "direct"],
                best,
                macs,
            );
        }
        return;
    }
    // (c_in, c_out, kernel, stride, size)
    for (c, m, k, s, hw) in [
        (64, 64, 3, 1, 56),
        (128, 128, 3, 1, 28),
        (256, 256, 3, 1, 14),
        (512, 512, 3, 1, 7),
        (256, 64, 1, 1, 56),
        (64, 256, 1, 1, 56),
        (512, 128, 1, 1, 28),
        (128, 512, 1, 1, 28),
        (1024, 256, 1, 1, 14),
        (256, 1024, 1, 1, 14),
    ] {
        let (conv, x, macs) = conv_case(&device, n, [c, m, k, s, hw]);
        let p = (k - 1) / 2;
        let o = (hw + 2 * p - k) / s + 1;
        // The tap path's operands as `conv_gemm` hands them over (weights packed once).
        let w: Vec<f32> = conv
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let b: Vec<f32> = conv
            .bias
            .as_ref()
            .expect("bias")
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let xs: Vec<f32> = x.clone().into_data().try_to_vec::<f32>().expect("f32");
        let t = Taps::new(c, [hw, hw], [k, k], [p; 4]);
        let packed = conv_taps::Packed::new(&w, m, c, k * k);
        set_f32_taps(false);
        let mut best = [f64::MAX; 2];
        for _ in 0..REPS {
            let t0 = Instant::now();
            let y = conv_gemm(&conv, x.clone(), Epilogue::Relu);
            best[0] = best[0].min(t0.elapsed().as_secs_f64());
            drop(y);
            let t0 = Instant::now();
            let mut out: Vec<MaybeUninit<f32>> = Vec::with_capacity(n * m * o * o);
            // SAFETY: `MaybeUninit` needs no initialisation.
            unsafe { out.set_len(n * m * o * o) };
            conv_taps::conv(
                &packed,
                &xs,
                n,
                &t,
                &mut out,
                Some(&b),
                None,
                Epilogue::Relu,
            );
            best[1] = best[1].min(t0.elapsed().as_secs_f64());
            drop(out);
        }
        let case = format!("c{c:4} m{m:4} k{k} s{s} {hw:3} n{n}");
        report(&case, ["unfolded", "taps"], best, macs);
    }
}
