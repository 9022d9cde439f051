//! Offline `ensemble` and `cascade` on hand-made caches, checked by hand.

use std::path::Path;
use std::process::Command;

use committee_core::cache::{CacheMeta, LogitsCache};

fn cache(dir: &Path, name: &str, gmacs: f64, logits: &[f32], files: &[&str]) -> std::path::PathBuf {
    let c = LogitsCache {
        meta: CacheMeta {
            model: name.into(),
            name: None,
            weights: format!("{name}.safetensors"),
            weights_sha256: "00".into(),
            img_size: 32,
            gmacs,
            num_classes: 2,
            data_root: "/data".into(),
            files: files.iter().map(|s| s.to_string()).collect(),
            shard: None,
        },
        logits: logits.to_vec().into(),
        labels: vec![0, 1, 1, 0],
    };
    let p = dir.join(format!("{name}.safetensors"));
    c.save(&p).unwrap();
    p
}

fn run(args: &[&str], files: &[&Path]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_committee"));
    c.args(args);
    for f in files {
        c.arg(f);
    }
    c.output().unwrap()
}

/// `committee eval --save-logits` of the fixture images with `weights` at `res` px.
/// The test fixtures folder.
fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("tests/fixtures")
}

fn eval_cache(dir: &Path, weights: &Path, res: &str, name: &str) -> std::path::PathBuf {
    let data = fixtures().join("images");
    let p = dir.join(format!("{name}.safetensors"));
    let args = [
        "eval",
        "--backend",
        "flex",
        "--model",
        "mobilenetv2_035",
        "--img-size",
        res,
        "--batch",
        "4",
        "--weights",
    ];
    let out = run(
        &args,
        &[
            weights,
            Path::new("--data"),
            &data,
            Path::new("--save-logits"),
            &p,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

/// The JSON a successful run printed.
fn json_of(out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const FILES: [&str; 4] = ["a/0.png", "a/1.png", "b/2.png", "b/3.png"];

/// Labels 0, 1, 1, 0. small (1 GMAC): right on 0 and 1, wrong on 2 and (confidently,
/// p = 0.953) on 3. big (4 GMACs): right on all four.
fn hand_pool(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let small = cache(
        dir,
        "small",
        1.0,
        &[2.0, 0.0, 0.0, 0.1, 1.0, 0.0, 0.0, 3.0],
        &FILES,
    );
    let big = cache(
        dir,
        "big",
        4.0,
        &[1.0, 0.0, 0.0, 2.0, 0.0, 2.0, 2.0, 0.0],
        &FILES,
    );
    (small, big)
}

#[test]
fn cascade_and_ensemble_by_hand() {
    let d = tempfile::tempdir().unwrap();
    let (small, big) = hand_pool(d.path());

    // Threshold 0.9: only sample 3 exits at the small model (and is wrong): 3/4 correct,
    // cost (5 + 5 + 5 + 1) / 4 = 4 GMACs.
    let out = run(
        &[
            "cascade",
            "--json",
            "--no-accumulate",
            "--thresholds",
            "0.9",
            "--logits",
        ],
        &[&small, &big],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["top1"], 75.0);
    assert_eq!(r["avg_gmacs"], 4.0);
    assert_eq!(r["worst_gmacs"], 5.0);
    assert_eq!(r["exit_fractions"], serde_json::json!([0.25, 0.75]));
    assert_eq!(r["predicted_speedup"], 1.0);
    assert_eq!(r["stages"], serde_json::json!(["small", "big"]));

    // Mean of probabilities: sample 3 averages (0.047, 0.953) and (0.881, 0.119) -> class 1,
    // wrong; the others are right. 75%, 5 GMACs.
    let out = run(&["ensemble", "--json", "--logits"], &[&small, &big]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["top1"], 75.0);
    assert_eq!(r["gmacs"], 5.0);
}

#[test]
fn misaligned_caches_and_bad_thresholds_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let a = cache(d.path(), "a", 1.0, &[0.0; 8], &FILES);
    let b = cache(
        d.path(),
        "b",
        1.0,
        &[0.0; 8],
        &["a/0.png", "a/1.png", "b/3.png", "b/2.png"],
    );
    let out = run(&["ensemble", "--logits"], &[&a, &b]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("row 2") && err.contains("b/2.png") && err.contains("b/3.png"),
        "{err}"
    );

    let c = cache(d.path(), "c", 1.0, &[0.0; 8], &FILES);
    let out = run(&["cascade", "--thresholds", "1.5", "--logits"], &[&a, &c]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside [0, 1]"));
    let out = run(
        &["cascade", "--thresholds", "0.5,0.5", "--logits"],
        &[&a, &c],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs 1 thresholds"));

    std::fs::write(d.path().join("nan.safetensors"), b"garbage").unwrap();
    let out = run(
        &["ensemble", "--logits"],
        &[&a, &d.path().join("nan.safetensors")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nan.safetensors"));
}

/// The live cascade (routing only undecided samples onward) and the offline simulation from
/// eval caches make the same decisions on the same images.
#[test]
fn live_cascade_equals_offline_simulation() {
    let d = tempfile::tempdir().unwrap();
    let root = fixtures();
    let w = root.join("parity/mobilenetv2_035.safetensors");
    let data = root.join("images");
    let caches: Vec<_> = ["96", "160"]
        .iter()
        .map(|r| eval_cache(d.path(), &w, r, &format!("c{r}")))
        .collect();
    let offline = run(
        &["cascade", "--json", "--thresholds", "0.9", "--logits"],
        &[&caches[0], &caches[1]],
    );
    let offline: serde_json::Value = serde_json::from_slice(&offline.stdout).unwrap();
    let s96 = format!("mobilenetv2_035:{}@96", w.display());
    let s160 = format!("mobilenetv2_035:{}@160", w.display());
    // A cost table (as `bench --json` writes it) with made-up times: 96 px takes 2 ms at batch
    // 1 and 4 ms at batch 4; 160 px, 5 and 8 ms.
    let costs = d.path().join("costs.json");
    let row = |size: usize, batch: usize, ms: f64| {
        serde_json::json!({"model": "mobilenetv2_035", "img_size": size, "backend": "flex",
            "device": "cpu", "batch": batch, "p50_ms": ms, "mode": "forward"})
    };
    let table = serde_json::json!([
        row(96, 1, 2.0),
        row(96, 4, 4.0),
        row(160, 1, 5.0),
        row(160, 4, 8.0)
    ]);
    std::fs::write(&costs, table.to_string()).unwrap();
    let live = run(
        &[
            "cascade",
            "--json",
            "--backend",
            "flex",
            "--batch",
            "4",
            "--workers",
            "1",
            "--thresholds",
            "0.9",
            "--stage",
            &s96,
            "--stage",
            &s160,
            "--costs",
            costs.to_str().unwrap(),
            "--data",
        ],
        &[&data],
    );
    let live = json_of(live);
    // Some samples exit early and some do not, so the routing is exercised.
    let f0 = offline["exit_fractions"][0].as_f64().unwrap();
    assert!(
        f0 > 0.0 && f0 < 1.0,
        "threshold does not split the samples: {offline}"
    );
    for k in ["top1", "exit_fractions", "images", "worst_gmacs"] {
        assert_eq!(live[k], offline[k], "{k}");
    }
    assert!(
        (live["avg_gmacs"].as_f64().unwrap() - offline["avg_gmacs"].as_f64().unwrap()).abs()
            < 1e-12
    );
    assert_eq!(
        offline["stages"],
        serde_json::json!(["mobilenetv2_035@96", "mobilenetv2_035@160"])
    );
    assert!(live["speedup_vs_largest"].as_f64().unwrap() > 0.0);
    assert!(live["wall_s"].as_f64().unwrap() > 0.0);
    // The table's prediction for the exits seen: every image pays stage 1 at batch 4 (1 ms
    // each); a batch of 4 hands stage 2 X ~ Binomial(4, f1) images at 4 + X ms a call (none
    // when X = 0), so per image 4 P(X > 0) / 4 + E[X] / 4 = 1 - (1 - f1)^4 + f1.
    let n = live["images"].as_f64().unwrap();
    let f1 = live["exit_fractions"][1].as_f64().unwrap();
    let want = 1.0 + 1.0 - (1.0 - f1).powi(4) + f1;
    let got = live["predicted_ms_per_img"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "{got} vs {want} ({n} images)");
    let ratio = live["measured_over_predicted"].as_f64().unwrap();
    let measured = live["model_ms_per_img"].as_f64().unwrap();
    assert!((ratio - measured / want).abs() < 1e-9);
    assert!(measured > 0.0 && live["ms_per_img"].as_f64().unwrap() >= measured);
}

/// `search --costs`: measured time per image as the cost, by hand. The hand pool at batch 4
/// with small taking 1 ms at batch 1 and 2 ms at batch 4 (0.5 ms per image) and big 2 and 4 ms
/// (1 ms per image): big alone reaches 100 % at 1 ms (every cascade that does pays both, at
/// least 1.5 ms); a budget of 0.9 ms buys small alone (50 %, 0.5 ms); a worst case of 1.2 ms
/// leaves out every committee of both.
#[test]
fn search_on_measured_time_by_hand() {
    let d = tempfile::tempdir().unwrap();
    let (small, big) = hand_pool(d.path());
    let costs = d.path().join("costs.json");
    let row = |model: &str, batch: usize, ms: f64| {
        serde_json::json!({"model": model, "img_size": 32, "backend": "flex", "device": "cpu",
            "threads": 2, "batch": batch, "p50_ms": ms, "mode": "forward"})
    };
    let rows = [
        row("small", 1, 1.0),
        row("small", 4, 2.0),
        row("big", 1, 2.0),
    ];
    std::fs::write(&costs, serde_json::json!(rows).to_string()).unwrap();
    let cp = costs.to_str().unwrap();
    let spec = d.path().join("chosen.toml");
    let sp = spec.to_str().unwrap();
    fn search<'a>(cp: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "search",
            "--json",
            "--no-accumulate",
            "--holdout-fraction",
            "0",
            "--max-models",
            "2",
            "--costs",
            cp,
            "--batch",
            "4",
        ];
        v.extend_from_slice(extra);
        v.push("--logits");
        v
    }
    let args = |extra: &[&'static str]| search(cp, extra);
    let r = json_of(run(&search(cp, &["--spec-out", sp]), &[&small, &big]));
    assert_eq!(r["cost"], "ms");
    assert_eq!(r["chosen"]["members"], serde_json::json!(["big"]));
    // big has only a batch-1 row: 2 ms per image at any batch.
    assert_eq!(r["chosen"]["avg_ms"], 2.0);
    assert_eq!(r["chosen"]["avg_gmacs"], 4.0);

    let rows = [
        row("small", 1, 1.0),
        row("small", 4, 2.0),
        row("big", 1, 2.0),
        row("big", 4, 4.0),
    ];
    std::fs::write(&costs, serde_json::json!(rows).to_string()).unwrap();
    let r = json_of(run(&search(cp, &["--spec-out", sp]), &[&small, &big]));
    assert_eq!(r["chosen"]["members"], serde_json::json!(["big"]));
    assert_eq!(r["chosen"]["avg_ms"], 1.0);
    assert_eq!(r["chosen"]["worst_ms"], 1.0);
    assert_eq!(r["cost_batch"], 4);
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(
        text.contains("cost = \"ms\"") && text.contains("cost_batch = 4"),
        "{text}"
    );
    assert!(
        r["front"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["avg_ms"].is_number())
    );

    let r = json_of(run(&args(&["--budget-ms", "0.9"]), &[&small, &big]));
    assert_eq!(r["chosen"]["members"], serde_json::json!(["small"]));
    assert_eq!(r["chosen"]["avg_ms"], 0.5);
    assert_eq!(r["chosen"]["top1"], 50.0);

    let r = json_of(run(&args(&["--worst-case-ms", "1.2"]), &[&small, &big]));
    assert!(
        r["front"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["members"].as_array().unwrap().len() == 1),
        "{r}"
    );

    // f32 and bf16 rows in one table (`bench --dtype f32,bf16`): --cost-dtype picks.
    let bf16 = |model: &str, batch: usize, ms: f64| {
        let mut r = row(model, batch, ms);
        r["dtype"] = "bf16 (amx)".into();
        r
    };
    let rows = [
        row("small", 1, 1.0),
        row("small", 4, 2.0),
        row("big", 1, 2.0),
        row("big", 4, 4.0),
        bf16("small", 1, 0.5),
        bf16("small", 4, 1.0),
        bf16("big", 1, 1.0),
        bf16("big", 4, 0.8),
    ];
    std::fs::write(&costs, serde_json::json!(rows).to_string()).unwrap();
    let out = run(&args(&[]), &[&small, &big]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cost-dtype"), "{err}");
    let r = json_of(run(&args(&["--cost-dtype", "bf16"]), &[&small, &big]));
    assert_eq!(r["chosen"]["members"], serde_json::json!(["big"]));
    assert_eq!(r["chosen"]["avg_ms"], 0.2);
    let r = json_of(run(&args(&["--cost-dtype", "f32"]), &[&small, &big]));
    assert_eq!(r["chosen"]["avg_ms"], 1.0);

    // A cache whose model has no row is an error naming it.
    std::fs::write(
        &costs,
        serde_json::json!([row("small", 1, 1.0)]).to_string(),
    )
    .unwrap();
    let out = run(&args(&[]), &[&small, &big]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no row for big at 32 px"), "{err}");
    // Time flags need a cost table.
    let out = run(&["search", "--budget-ms", "1", "--logits"], &[&small, &big]);
    assert!(!out.status.success());
}

/// A live ensemble equals the offline one built from eval caches of the same members.
#[test]
fn live_ensemble_equals_offline() {
    let d = tempfile::tempdir().unwrap();
    let root = fixtures();
    let data = root.join("images");
    let m1 = root.join("parity/mobilenetv2_035.safetensors");
    let m2 = root.join("parity/tv_mobilenetv2_035.safetensors");
    let caches = [
        eval_cache(d.path(), &m1, "128", "a"),
        eval_cache(d.path(), &m2, "96", "b"),
    ];
    for rule in ["mean-prob", "mean-logits"] {
        let off = run(
            &["ensemble", "--json", "--combine", rule, "--logits"],
            &[&caches[0], &caches[1]],
        );
        let off: serde_json::Value = serde_json::from_slice(&off.stdout).unwrap();
        let a = format!("mobilenetv2_035:{}@128", m1.display());
        let b = format!("mobilenetv2_035:{}@96", m2.display());
        let live = run(
            &[
                "ensemble",
                "--json",
                "--backend",
                "flex",
                "--combine",
                rule,
                "--workers",
                "1",
                "--member",
                &a,
                "--member",
                &b,
                "--data",
            ],
            &[&data],
        );
        let live = json_of(live);
        for k in ["top1", "top5", "images"] {
            assert_eq!(live[k], off[k], "{rule} {k}");
        }
        assert!((live["gmacs"].as_f64().unwrap() - off["gmacs"].as_f64().unwrap()).abs() < 1e-9);
    }
}

/// `search` on the hand-made pool of `cascade_and_ensemble_by_hand` (labels 0, 1, 1, 0).
/// small (1 GMAC): right on 0 (conf 0.881) and 1 (0.525), wrong on 2 (0.731) and 3 (0.953).
/// big (4 GMACs): right on all four. Without accumulation, cascade small -> big at threshold t
/// sends the samples with confidence < t on to big.
#[test]
fn search_by_hand_and_its_spec_runs() {
    let d = tempfile::tempdir().unwrap();
    let (small, big) = hand_pool(d.path());
    let base = [
        "search",
        "--json",
        "--no-accumulate",
        "--holdout-fraction",
        "0",
        "--max-models",
        "2",
    ];
    let with = |extra: &[&str], files: &[&Path]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.push("--logits");
        run(&args, files)
    };
    // 100% needs every sample at big (t > 0.953 costs 5): big alone, 4 GMACs.
    let r = json_of(with(&["--match", "big"], &[&small, &big]));
    assert_eq!(r["chosen"]["kind"], "single");
    assert_eq!(r["chosen"]["members"], serde_json::json!(["big"]));
    assert_eq!(r["chosen"]["top1"], 100.0);
    assert_eq!(r["in_sample"], true);
    // Budget 3: t in (0.731, 0.881] sends samples 1 and 2 on: 75% at 1 + 4 * 2/4 = 3 GMACs.
    let spec = d.path().join("chosen.toml");
    let plot = d.path().join("front.svg");
    let mut extra = vec!["--budget-gmacs", "3", "--spec-out"];
    let (sp, pp) = (spec.to_str().unwrap(), plot.to_str().unwrap());
    extra.extend([sp, "--plot", pp]);
    let r = json_of(with(&extra, &[&small, &big]));
    let c = &r["chosen"];
    assert_eq!(c["kind"], "cascade");
    assert_eq!(c["members"], serde_json::json!(["small", "big"]));
    assert_eq!(c["top1"], 75.0);
    assert_eq!(c["avg_gmacs"], 3.0);
    assert_eq!(c["worst_gmacs"], 5.0);
    assert_eq!(c["exit_fractions"], serde_json::json!([0.5, 0.5]));
    let t = c["thresholds"][0].as_f64().unwrap();
    assert!(t > 0.731 && t <= 0.881, "{t}");
    // The front: small (50%, 1), the cascade (75%, 3), big (100%, 4).
    let front: Vec<(f64, f64)> = r["front"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["avg_gmacs"].as_f64().unwrap(),
                p["top1"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(front, [(1.0, 50.0), (3.0, 75.0), (4.0, 100.0)]);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("small+big"),
        "{svg:.200}"
    );

    assert_eq!(r["strategy"], "brute");
    assert_eq!(r["proven_optimal"], true);
    // The exact search and the beam find the same cascade; only the exact one proves it.
    for (strategy, proven) in [("exact", true), ("beam", false)] {
        let r = json_of(with(
            &["--budget-gmacs", "3", "--strategy", strategy],
            &[&small, &big],
        ));
        assert_eq!(r["strategy"], strategy);
        assert_eq!(r["proven_optimal"], proven, "{strategy}");
        // Two members: no screening (that starts above 16 members).
        assert!(r["screen"].is_null(), "{strategy}");
        assert_eq!(r["chosen"]["members"], serde_json::json!(["small", "big"]));
        assert_eq!(r["chosen"]["avg_gmacs"], 3.0);
        assert_eq!(r["chosen"]["top1"], 75.0);
    }
    let out = run(
        &["search", "--max-models", "7", "--logits"],
        &[&small, &big],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("1..=6"), "{err}");

    // The spec runs offline and gives the same numbers.
    let out = run(
        &["cascade", "--json", "--spec", sp, "--logits"],
        &[&big, &small],
    );
    let r = json_of(out);
    assert_eq!(r["top1"], 75.0);
    assert_eq!(r["avg_gmacs"], 3.0);
    assert_eq!(r["stages"], serde_json::json!(["small", "big"]));

    // A spec naming a model no cache holds, an unknown --match, an impossible target.
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("\"big\"", "\"medium\"");
    std::fs::write(&spec, text).unwrap();
    let out = run(&["cascade", "--spec", sp, "--logits"], &[&big, &small]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("medium"), "{err}");
    let out = with(&["--match", "huge"], &[&small, &big]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("huge"), "{err}");
    let out = with(
        &["--target-accuracy", "100", "--worst-case-gmacs", "2"],
        &[&small, &big],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no committee"),
        "{err}"
    );
}

/// The hand pool's caches rewritten by `edit` as two members of one architecture, searched
/// (budget 3 GMACs, a spec written), then the spec run offline with the caches in the other
/// order: the search's JSON, the spec's text and the rerun's JSON.
fn one_architecture_pair(
    d: &Path,
    edit: impl Fn(&mut LogitsCache, usize),
) -> (serde_json::Value, String, serde_json::Value) {
    let (small, big) = hand_pool(d);
    for (i, p) in [&small, &big].into_iter().enumerate() {
        let mut c = LogitsCache::load(p).unwrap();
        c.meta.model = "mobilenetv2_050".into();
        edit(&mut c, i);
        c.save(p).unwrap();
    }
    let spec = d.join("chosen.toml");
    let sp = spec.to_str().unwrap();
    let out = run(
        &[
            "search",
            "--json",
            "--no-accumulate",
            "--holdout-fraction",
            "0",
            "--max-models",
            "2",
            "--budget-gmacs",
            "3",
            "--spec-out",
            sp,
            "--logits",
        ],
        &[&small, &big],
    );
    let r = json_of(out);
    let text = std::fs::read_to_string(&spec).unwrap();
    let rerun = json_of(run(
        &["cascade", "--json", "--spec", sp, "--logits"],
        &[&big, &small],
    ));
    (r, text, rerun)
}

/// Seeds of one architecture are told apart by the cache label (`eval --name`): search names
/// them by it, its spec records it, and the spec finds the right caches again.
#[test]
fn members_of_one_architecture_are_named_by_their_label() {
    let d = tempfile::tempdir().unwrap();
    // Both caches claim the same model, as two seeds of one architecture would.
    let (r, text, rerun) =
        one_architecture_pair(d.path(), |c, i| c.meta.name = Some(format!("seed{i}")));
    assert_eq!(
        r["chosen"]["members"],
        serde_json::json!(["seed0", "seed1"])
    );
    assert!(
        text.contains("name = \"seed0\"") && text.contains("name = \"seed1\""),
        "{text}"
    );
    // Given in the other order, the spec still picks each cache by its label.
    assert_eq!(rerun["top1"], 75.0);
    assert_eq!(rerun["avg_gmacs"], 3.0);
}

/// Without labels, two caches of one architecture at one resolution (two seeds) are told
/// apart by their weights' SHA-256: each gets its own name, a spec picks each by its hash, and
/// the same member given twice is refused.
#[test]
fn members_of_one_architecture_are_told_apart_by_their_weights() {
    let d = tempfile::tempdir().unwrap();
    let shas = [
        format!("5ma11{}", "0".repeat(59)),
        format!("b19{}", "1".repeat(61)),
    ];
    let (r, _, rerun) =
        one_architecture_pair(d.path(), |c, i| c.meta.weights_sha256 = shas[i].clone());
    assert_eq!(
        r["chosen"]["members"],
        serde_json::json!(["mobilenetv2_050@32#5ma11000", "mobilenetv2_050@32#b1911111"])
    );
    // Given in the other order, the spec still picks each cache by its weights.
    assert_eq!(rerun["top1"], 75.0);
    assert_eq!(rerun["avg_gmacs"], 3.0);
    let small = d.path().join("small.safetensors");
    // The same cache twice is one member, not an ensemble of two.
    let out = run(&["ensemble", "--json", "--logits"], &[&small, &small]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("are the same member"), "{err}");
}

/// A spec records its members' weights by SHA-256; a live run refuses other weights under
/// the same path.
#[test]
fn live_spec_refuses_other_weights() {
    use sha2::{Digest, Sha256};
    let d = tempfile::tempdir().unwrap();
    let root = fixtures();
    let w = root.join("parity/mobilenetv2_035.safetensors");
    let sha: String = Sha256::digest(std::fs::read(&w).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let spec = |sha: &str| {
        let p = d.path().join("spec.toml");
        std::fs::write(
            &p,
            format!(
                "kind = \"single\"\nthresholds = []\naccumulate = true\ncombine = \"mean-prob\"\nconfidence = \"max-prob\"\n\n[[member]]\nmodel = \"mobilenetv2_035\"\nweights = {:?}\nweights_sha256 = \"{sha}\"\nimg_size = 96\n",
                w.display().to_string()
            ),
        )
        .unwrap();
        p
    };
    let args = |p: &std::path::Path| {
        vec![
            "ensemble".to_string(),
            "--json".into(),
            "--backend".into(),
            "flex".into(),
            "--spec".into(),
            p.display().to_string(),
            "--data".into(),
            root.join("images").display().to_string(),
        ]
    };
    let ok = Command::new(env!("CARGO_BIN_EXE_committee"))
        .args(args(&spec(&sha)))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_committee"))
        .args(args(&spec(&"0".repeat(64))))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("not the weights the spec was made with"),
        "{err}"
    );
}

/// `committee scaling` on a hand-made pool: two seeds of a small model (75 % each, wrong on
/// different images) and one large model (75 %) at 2.5x a small one's GMACs. Labels 0,1,1,0.
#[test]
fn scaling_compares_each_size_with_cheaper_ensembles() {
    let d = tempfile::tempdir().unwrap();
    let mk = |file: &str, model: &str, sha: &str, gmacs: f64, logits: &[f32]| {
        let c = LogitsCache {
            meta: CacheMeta {
                model: model.into(),
                name: Some(file.into()),
                weights: format!("{file}.safetensors"),
                weights_sha256: sha.into(),
                img_size: 56,
                gmacs,
                num_classes: 2,
                data_root: "/data".into(),
                files: FILES.iter().map(|s| s.to_string()).collect(),
                shard: None,
            },
            logits: logits.to_vec().into(),
            labels: vec![0, 1, 1, 0],
        };
        let p = d.path().join(format!("{file}.safetensors"));
        c.save(&p).unwrap();
        p
    };
    // s0 wrong on image 3 (p0 = 0.119), s1 wrong on image 2 (p1 = 0.475); averaged: image 2
    // p1 = (0.881 + 0.475) / 2, image 3 p0 = (0.119 + 0.953) / 2: both right, 100 %.
    let s0 = mk("s0", "small", "01", 1.0, &[3., 0., 0., 3., 0., 2., 0., 2.]);
    let s1 = mk("s1", "small", "02", 1.0, &[3., 0., 0., 3., 0.1, 0., 3., 0.]);
    let big = mk("big", "large", "03", 2.5, &[1., 0., 0., 1., 1., 0., 1., 0.]);
    let plot = d.path().join("scaling.svg");
    let args = [
        "scaling",
        "--json",
        "--plot",
        plot.to_str().unwrap(),
        "--logits",
    ];
    let v = json_of(run(&args, &[&s0, &s1, &big]));
    let pts = v["points"].as_array().unwrap();
    let at = |g: &str, k: u64| {
        pts.iter()
            .find(|p| p["group"] == g && p["k"] == k)
            .unwrap_or_else(|| panic!("no {g} k={k} in {v}"))
    };
    assert_eq!(at("small@56", 1)["top1_mean"], 75.0);
    assert_eq!(at("small@56", 2)["top1_mean"], 100.0);
    assert_eq!(at("small@56", 2)["gmacs"], 2.0);
    assert_eq!(at("large@56", 1)["top1_mean"], 75.0);
    let c = &v["comparisons"][1];
    assert_eq!(c["single"]["group"], "large@56");
    assert_eq!(c["ensemble"]["k"], 2);
    assert_eq!(c["gain"], 25.0);
    assert!(v["comparisons"][0]["ensemble"].is_null());
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("ensembles of 2") && svg.contains("single models"));

    // One cache per size: nothing to compare, and the user is told why.
    let out = run(&["scaling", "--logits"], &[&s0, &big]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("at least two seeds"),
        "{err}"
    );
}
