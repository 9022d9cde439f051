//! End-to-end tests of `committee bench`: rows on every compiled backend (wgpu through
//! lavapipe in CI, tiny sizes), the cost model against a hand count, and `--profile`.

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_committee"))
        .arg("bench")
        .args(args)
        .args(["--json", "--threads", "2"])
        .output()
        .expect("run committee");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bench --json prints JSON")
}

/// ResNet-18 at 32 px, counted by hand: stem 7x7 to 16x16 (2,408,448), layer1 at 8x8
/// (4 x 2,359,296), layer2 at 4x4 (1,179,648 + 3 x 2,359,296 + 131,072 downsample), layer3 at
/// 2x2 and layer4 at 1x1 (the same sums), fc 512 x 1000.
const RESNET18_32PX_MACS: u64 =
    2_408_448 + 4 * 2_359_296 + 3 * (1_179_648 + 3 * 2_359_296 + 131_072) + 512_000;

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// A row's `--profile` entries: calls and multiply-accumulates per kind.
fn profile_kinds(r: &serde_json::Value) -> std::collections::BTreeMap<String, (u64, u64)> {
    r["profile"]
        .as_array()
        .expect("profile rows")
        .iter()
        .map(|k| {
            let name = k["kind"].as_str().expect("kind").to_string();
            (
                name,
                (
                    k["calls"].as_u64().unwrap_or(0),
                    k["macs"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

/// The sum of a row's `--profile` shares (of the profiled pass or step).
fn profile_share(r: &serde_json::Value) -> f64 {
    r["profile"]
        .as_array()
        .map(|a| a.iter().map(|k| f(k, "share")).sum())
        .unwrap_or(0.0)
}

#[test]
fn rows_on_every_compiled_backend() {
    let rows = bench(&[
        "--model",
        "resnet18,mobilenetv2_050",
        "--backend",
        "flex,ndarray,wgpu",
        "--batch",
        "1,2",
        "--img-size",
        "32",
        "--warmup",
        "1",
        "--iters",
        "2",
    ]);
    let rows = rows.as_array().expect("an array of rows");
    assert_eq!(rows.len(), 3 * 2 * 2);
    for r in rows {
        let (b, p50, p95) = (f(r, "batch"), f(r, "p50_ms"), f(r, "p95_ms"));
        assert_eq!(r["img_size"], 32);
        assert!(p50 > 0.0 && p95 >= p50 && f(r, "first_ms") > 0.0, "{r}");
        // img/s and GMAC/s follow from the median latency.
        let ips = f(r, "img_per_s");
        assert!((ips - b / (p50 / 1e3)).abs() < 1e-6 * ips, "{r}");
        let gmacs_per_img = f(r, "gmacs_per_s") / ips;
        if r["model"] == "resnet18" {
            let want = RESNET18_32PX_MACS as f64 / 1e9;
            assert!(
                (gmacs_per_img - want).abs() < 1e-9,
                "{gmacs_per_img} vs {want}"
            );
        }
        let device = r["device"].as_str().expect("device");
        // The host: its CPU's model name, the instruction set and bf16 kernel chosen.
        let host = r["host"].as_str().expect("host");
        assert!(
            host.contains("; bf16: ") && !host.starts_with(" ("),
            "host {host:?}"
        );
        if std::env::var("COMMITTEE_ISA").is_ok_and(|v| v == "base") {
            assert!(host.ends_with("(base; bf16: none)"), "{host}");
        }
        match r["backend"].as_str() {
            Some("flex") | Some("ndarray") => {
                assert_eq!(device, "cpu");
                assert!(r["device_mem_mb"].is_null(), "{r}");
            }
            Some("wgpu") => {
                assert!(!device.is_empty() && device != "cpu");
                // lavapipe / llvmpipe are flagged as software adapters.
                let soft = ["llvmpipe", "lavapipe", "swiftshader"]
                    .iter()
                    .any(|s| device.to_lowercase().contains(s));
                assert_eq!(r["software_adapter"], soft, "{r}");
                // The device holds at least the f32 weights (timm's parameter counts).
                let params = if r["model"] == "resnet18" {
                    11_689_512.0
                } else {
                    1_968_680.0
                };
                let weights_mb = params * 4.0 / (1024.0 * 1024.0);
                assert!(f(r, "device_mem_mb") >= weights_mb, "{r}");
            }
            other => panic!("unexpected backend {other:?}"),
        }
    }
}

#[test]
fn profile_counts_every_layer_of_resnet18_and_mobilenetv2() {
    let rows = bench(&[
        "--model",
        "resnet18,mobilenetv2_050",
        "--batch",
        "2",
        "--img-size",
        "32",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--profile",
    ]);
    let resnet = profile_kinds(&rows[0]);
    // Calls per forward: 16 3x3 convs, 3 downsampling 1x1s, the stem. On flex every ReLU
    // runs inside the convolution before it, and each block's residual sum inside its last
    // convolution (`conv2d_add_act`): no spans of their own.
    assert_eq!(resnet["conv 3x3"].0, 16);
    assert_eq!(resnet["conv 1x1"].0, 3);
    assert_eq!(resnet["conv 7x7"].0, 1);
    assert!(!resnet.contains_key("act relu"), "{resnet:?}");
    assert!(!resnet.contains_key("add residual"), "{resnet:?}");
    assert_eq!(resnet["pool max"].0, 1);
    // The multiply-accumulates the spans saw add up to the hand count (for 2 images).
    let macs: u64 = resnet.values().map(|(_, m)| m).sum();
    assert_eq!(macs, 2 * RESNET18_32PX_MACS);
    // Shares are of the profiled pass and cannot exceed it.
    let share = profile_share(&rows[0]);
    assert!(share > 0.5 && share < 1.0 + 1e-6, "{share}");
    // With Burn's own ops all 17 ReLUs and the 8 residual sums are separate.
    let plain = bench(&[
        "--model",
        "resnet18",
        "--batch",
        "1",
        "--img-size",
        "32",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--profile",
        "--flex-kernels",
        "none",
    ]);
    assert_eq!(profile_kinds(&plain[0])["act relu"].0, 17);
    assert_eq!(profile_kinds(&plain[0])["add residual"].0, 8);
    // MobileNetV2: 17 depthwise 3x3 convs, 34 pointwise, 1 dense 3x3 stem.
    let mnv2 = profile_kinds(&rows[1]);
    assert_eq!(mnv2["conv depthwise 3x3"].0, 17);
    assert_eq!(mnv2["conv 1x1"].0, 34);
    assert_eq!(mnv2["conv 3x3"].0, 1);
}

/// `--train --profile`: a training step by kind, each forward kind beside the backward passes
/// of committee's training ops and the optimiser step; ResNet-18's 16 3x3 convolutions, its
/// stem and 20 BatchNorms each run one backward per step, and the step's spans never add up
/// to more than the step.
#[test]
fn train_profile_splits_the_step_into_forward_backward_and_optimiser() {
    let rows = bench(&[
        "--model",
        "resnet18",
        "--train",
        "--batch",
        "2",
        "--img-size",
        "32",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--profile",
    ]);
    let kinds = profile_kinds(&rows[0]);
    let calls = |kind: &str| {
        kinds
            .get(kind)
            .map(|(calls, _)| *calls)
            .unwrap_or_else(|| panic!("no {kind} in {kinds:?}"))
    };
    assert_eq!(calls("conv 3x3"), 16);
    assert_eq!(calls("conv 3x3 backward"), 16);
    assert_eq!(calls("conv 7x7 backward"), 1);
    assert_eq!(calls("batch norm backward"), 20);
    assert_eq!(calls("linear backward"), 1);
    assert_eq!(calls("optimizer step"), 1);
    let share = profile_share(&rows[0]);
    assert!(share > 0.5 && share < 1.0 + 1e-6, "{share}");
}

#[test]
fn flex_kernels_can_be_turned_off_and_bad_arguments_fail() {
    let rows = bench(&[
        "--model",
        "efficientnet_b0",
        "--batch",
        "1",
        "--img-size",
        "32",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--flex-kernels",
        "none",
    ]);
    assert_eq!(rows.as_array().map(Vec::len), Some(1));
    for (args, msg) in [
        (vec!["--model", "resnet19"], "unknown model 'resnet19'"),
        (
            vec!["--model", "resnet18", "--flex-kernels", "act,winograd"],
            "unknown flex kernel 'winograd'",
        ),
        (
            vec!["--model", "resnet18", "--backend", "tpu"],
            "unknown backend 'tpu'",
        ),
        (
            vec!["--model", "resnet18", "--iters", "0"],
            "--iters must be at least 1",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_committee"))
            .arg("bench")
            .args(&args)
            .output()
            .expect("run committee");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{err}");
    }
}

/// `--interleave`: one row per model and batch, models in the order given within each batch,
/// each marked; GMAC/s per model as in the plain rows (ResNet-18 by hand); `--train` refused.
#[test]
fn interleaved_rows_time_each_model_in_turn() {
    let rows = bench(&[
        "--model",
        "resnet18,mobilenetv2_050",
        "--batch",
        "1,3",
        "--img-size",
        "32",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--interleave",
    ]);
    let rows = rows.as_array().expect("an array of rows");
    let order: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap().to_string(),
                r["batch"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [
        ("resnet18", 1),
        ("mobilenetv2_050", 1),
        ("resnet18", 3),
        ("mobilenetv2_050", 3),
    ]
    .iter()
    .map(|(m, b)| (m.to_string(), *b))
    .collect();
    assert_eq!(order, want);
    for r in rows {
        assert_eq!(r["interleaved"], true, "{r}");
        assert!(
            f(r, "p50_ms") > 0.0 && f(r, "p95_ms") >= f(r, "p50_ms"),
            "{r}"
        );
        if r["model"] == "resnet18" {
            let got = f(r, "gmacs_per_s") / f(r, "img_per_s");
            let want = RESNET18_32PX_MACS as f64 / 1e9;
            assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_committee"))
        .args(["bench", "--model", "resnet18", "--interleave", "--train"])
        .output()
        .expect("run committee");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

/// `--train --dtype f16` on wgpu (lavapipe in CI): mixed-precision steps are timed only once
/// the loss scale has come down far enough for steps to be taken (a random MobileNetV2's
/// first steps overflow f16 at 2^16), and a step skipped later is retaken, not timed (seen in
/// CI: a step after the first taken ones overflowed again), so no timed step is a skipped
/// one; CPU backends refuse.
#[test]
fn f16_training_steps_are_whole_steps() {
    let out = Command::new(env!("CARGO_BIN_EXE_committee"))
        .args(["bench", "--train", "--backend", "wgpu", "--dtype", "f16"])
        .args([
            "--model",
            "mobilenetv2_035",
            "--batch",
            "4",
            "--img-size",
            "64",
        ])
        .args(["--warmup", "1", "--iters", "3", "--json"])
        .output()
        .expect("run committee");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("steps were taken"), "{err}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rows[0]["dtype"], "f16", "{rows}");
    assert!(rows[0]["skipped_steps"].is_u64(), "{rows}");
    assert!(f(&rows[0], "img_per_s") > 0.0, "{rows}");
    let cpu = Command::new(env!("CARGO_BIN_EXE_committee"))
        .args([
            "bench",
            "--train",
            "--dtype",
            "f16",
            "--model",
            "mobilenetv2_035",
        ])
        .output()
        .expect("run committee");
    assert!(!cpu.status.success());
}
