//! `committee eval` and `merge-logits` end to end, against timm's own pipeline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_committee"))
}

fn fixtures() -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("tests/fixtures")
}

fn weights() -> PathBuf {
    fixtures().join("parity/mobilenetv2_035.safetensors")
}

fn run(args: &[&str], extra: &[&Path]) -> Output {
    let mut c = bin();
    c.args([
        "eval",
        "--backend",
        "flex",
        "--model",
        "mobilenetv2_035",
        "--batch",
        "4",
        "--weights",
    ])
    .arg(weights());
    c.args(args);
    for p in extra {
        c.arg(p);
    }
    c.output().unwrap()
}

fn json_ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The image list a logits cache records.
fn cache_files(bytes: &[u8]) -> Vec<String> {
    let h = safetensors::SafeTensors::read_metadata(bytes).unwrap().1;
    serde_json::from_str(&h.metadata().clone().unwrap()["files"]).unwrap()
}

/// `other` holds `full`'s images in its order and its logits, up to batch-composition rounding
/// (shards batch different images together).
fn assert_same_cache(full: &Path, other: &Path) {
    let a = std::fs::read(full).unwrap();
    let b = std::fs::read(other).unwrap();
    let ((sa, la), (sb, lb)) = (f32s(&a, "logits"), f32s(&b, "logits"));
    assert_eq!(sa, sb);
    let err = la
        .iter()
        .zip(&lb)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(err < 1e-3, "{} logits differ by {err}", other.display());
    assert_eq!(cache_files(&a), cache_files(&b));
}

fn f32s(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (
        t.shape().to_vec(),
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

#[test]
fn eval_matches_timm_end_to_end_and_caches_logits() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("m.safetensors");
    let data = fixtures().join("images");
    let out = run(
        &["--json", "--data"],
        &[&data, Path::new("--save-logits"), &cache],
    );
    let report = json_ok(&out);
    assert_eq!(report["images"], 11);
    assert_eq!(report["failed"].as_array().unwrap().len(), 0);
    assert_eq!(report["model"], "mobilenetv2_035");

    let bytes = std::fs::read(&cache).unwrap();
    let (shape, ours) = f32s(&bytes, "logits");
    let (tshape, timm) = f32s(
        &std::fs::read(fixtures().join("images_logits.safetensors")).unwrap(),
        "logits",
    );
    assert_eq!(shape, tshape);
    let scale = timm.iter().fold(1f32, |m, v| m.max(v.abs()));
    let err = ours
        .iter()
        .zip(&timm)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("eval vs timm end to end: max abs err {err:.2e}, scale {scale:.2}");
    assert!(
        err <= 1e-3 * scale,
        "logits differ from timm's pipeline: {err} (scale {scale})"
    );

    // Top-1 as timm's logits give it, with labels = sorted class folder index.
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("images_expected.json")).unwrap(),
    )
    .unwrap();
    let classes = ["cat", "coffee", "rocket", "space"];
    let files: Vec<&str> = meta["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let mut correct = 0;
    for (i, f) in files.iter().enumerate() {
        let label = classes
            .iter()
            .position(|c| f.starts_with(&format!("{c}/")))
            .unwrap();
        let row = &timm[i * 10..(i + 1) * 10];
        let best = (0..10).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        correct += (best == label) as usize;
    }
    let top1 = report["top1"].as_f64().unwrap();
    assert!(
        (top1 - 100.0 * correct as f64 / 11.0).abs() < 1e-9,
        "top1 {top1} vs {correct}/11"
    );

    let st = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1;
    let md = st.metadata().clone().unwrap();
    assert_eq!(md["model"], "mobilenetv2_035");
    assert_eq!(md["num_classes"], "10");
    assert_eq!(md["img_size"], "224");
    assert!(md["weights"].ends_with("mobilenetv2_035.safetensors"));
    assert_eq!(md["weights_sha256"].len(), 64);
    let cached_files: Vec<String> = serde_json::from_str(&md["files"]).unwrap();
    assert_eq!(cached_files, files);
}

#[test]
fn corrupt_images_are_reported_not_fatal_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
    }
    std::fs::copy(
        fixtures().join("images/cat/chelsea.jpg"),
        root.join("a/good.jpg"),
    )
    .unwrap();
    let jpeg = std::fs::read(fixtures().join("images/coffee/coffee_q80.jpg")).unwrap();
    std::fs::write(root.join("b/truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(root.join("b/notes.txt"), b"not an image").unwrap();
    std::fs::copy(
        fixtures().join("images/space/camera.gif"),
        root.join("b/ok.gif"),
    )
    .unwrap();

    let report = json_ok(&run(&["--json", "--data"], &[&root]));
    assert_eq!(report["images"], 2);
    assert_eq!(report["skipped"], 1);
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("truncated.jpg")
    );
    assert!(!failed[0]["error"].as_str().unwrap().is_empty());

    let out = run(&["--strict", "--data"], &[&root]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated.jpg"));
}

/// A JPEG is refused exactly when PIL refuses it: when libjpeg would have to complete it with
/// filler data because the file ends first. PIL 13.0 on these files (`Image.open(f).load()`):
/// trailing bytes after the end-of-image marker: OK; cut short, with an EOI marker inside an
/// APP1 segment near the cut: "image file is truncated"; cut short and an EOI appended
/// (libjpeg: "premature end of data segment", filled with gray): OK; cut short: truncated.
#[test]
fn jpegs_are_refused_where_pil_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("a")).unwrap();
    let j = std::fs::read(fixtures().join("images/cat/chelsea.jpg")).unwrap();
    let app1 = [&[0xFF, 0xE1, 0, 10][..], b"thum\xFF\xD9\0\0"].concat();
    let with_app1 = [&j[..2], &app1, &j[2..]].concat();
    let cases: [(&str, Vec<u8>); 4] = [
        ("trailing_junk.jpg", [&j[..], &[0u8; 8192]].concat()),
        ("app_eoi_truncated.jpg", with_app1[..3000].to_vec()),
        (
            "truncated_then_eoi.jpg",
            [&j[..j.len() / 3], &[0xFF, 0xD9]].concat(),
        ),
        ("truncated.jpg", j[..j.len() / 3].to_vec()),
    ];
    for (name, bytes) in &cases {
        std::fs::write(root.join("a").join(name), bytes).unwrap();
    }
    let report = json_ok(&run(&["--json", "--data"], &[&root]));
    let mut failed: Vec<String> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let err = f["error"].as_str().unwrap();
            assert!(err.contains("truncated JPEG"), "{err}");
            let path = f["path"].as_str().unwrap();
            path.rsplit('/').next().unwrap().to_string()
        })
        .collect();
    failed.sort();
    assert_eq!(failed, ["app_eoi_truncated.jpg", "truncated.jpg"]);
    assert_eq!(report["images"], 2);
}

#[test]
fn bad_folders_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["--data"], &[&dir.path().join("missing")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    std::fs::create_dir_all(dir.path().join("d/empty")).unwrap();
    let out = run(&["--data"], &[&dir.path().join("d")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no images"));

    let map = dir.path().join("map.txt");
    std::fs::write(&map, "cat\ncoffee\n").unwrap();
    let out = run(
        &["--data"],
        &[&fixtures().join("images"), Path::new("--class-map"), &map],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("folders not in the map"));
}

#[test]
fn shards_merge_into_the_full_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures().join("images");
    let full = dir.path().join("full.safetensors");
    json_ok(&run(
        &["--json", "--data"],
        &[&data, Path::new("--save-logits"), &full],
    ));
    let mut shards = Vec::new();
    for k in 0..3 {
        let p = dir.path().join(format!("s{k}.safetensors"));
        let shard = format!("{k}/3");
        json_ok(&run(
            &["--json", "--shard", &shard, "--data"],
            &[&data, Path::new("--save-logits"), &p],
        ));
        shards.push(p);
    }
    let merged = dir.path().join("merged.safetensors");
    let out = bin()
        .arg("merge-logits")
        .args(&shards)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_cache(&full, &merged);
    // A shard twice is refused.
    let out = bin()
        .arg("merge-logits")
        .arg(&shards[0])
        .arg(&shards[0])
        .arg("--out")
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than one shard"));
    // Two of three shards: refused, naming the missing one (the caches record K/N).
    let out = bin()
        .arg("merge-logits")
        .arg(&shards[0])
        .arg(&shards[2])
        .arg("--out")
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("shard 1/3 missing"),
        "{err}"
    );
}

/// `eval --save-logits` killed with SIGKILL half-way continues with `--resume` and ends with
/// the cache an uninterrupted run writes; the progress is never silently overwritten or mixed
/// with another run's.
#[test]
fn a_killed_eval_resumes_to_the_same_cache() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let images = [
        "images/cat/chelsea.jpg",
        "images/coffee/coffee_q80.jpg",
        "images/rocket/rocket_cmyk.jpg",
    ];
    for class in 0..3 {
        std::fs::create_dir_all(root.join(format!("c{class}"))).unwrap();
        for k in 0..80 {
            let src = fixtures().join(images[(class + k) % 3]);
            let dst = root.join(format!("c{class}/{k:03}.jpg"));
            std::fs::copy(src, dst).unwrap();
        }
    }
    // One image of the run cannot be decoded: failures are progress too.
    std::fs::write(root.join("c1/040.jpg"), b"not a jpeg").unwrap();
    let args = |out: &Path, extra: &[&str]| {
        let mut c = bin();
        c.args([
            "eval",
            "--backend",
            "flex",
            "--model",
            "mobilenetv2_035",
            "--img-size",
            "320",
            "--weights",
        ])
        .arg(weights())
        .arg("--data")
        .arg(&root)
        .arg("--save-logits")
        .arg(out)
        .args(["--save-every", "8", "--json"])
        .args(extra);
        c
    };
    fn with<'a>(batch: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--batch", batch];
        v.extend_from_slice(extra);
        v
    }

    let killed = dir.path().join("killed.safetensors");
    let partial = dir.path().join("killed.safetensors.partial");
    let mut child = args(&killed, &with("4", &[]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let chunks = |d: &Path| {
        std::fs::read_dir(d).map_or(0, |r| {
            r.filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().starts_with("chunk-")
            })
            .count()
        })
    };
    let start = Instant::now();
    while chunks(&partial) < 3 {
        assert!(start.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    assert!(!child.wait().unwrap().success(), "finished before the kill");
    assert!(!killed.exists());
    let done = chunks(&partial);
    assert!(done < 240 / 8, "{done} chunks: the run was nearly complete");

    // The same command without --resume refuses to overwrite the progress.
    let out = args(&killed, &with("4", &[])).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--resume") && err.contains("interrupted"),
        "{err}"
    );
    // Another batch size computes other batches: refused, naming the field.
    let out = args(&killed, &with("8", &["--resume"])).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch was 4, now 8"), "{err}");

    let out = args(&killed, &with("4", &["--resume"])).output().unwrap();
    let resumed = json_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resuming after"), "{err}");
    assert!(
        !partial.exists(),
        "the progress is removed once the cache is written"
    );

    let whole = dir.path().join("whole.safetensors");
    let reference = json_ok(&args(&whole, &with("4", &[])).output().unwrap());
    for k in ["top1", "top5", "images", "failed"] {
        assert_eq!(resumed[k], reference[k], "{k}");
    }
    assert_eq!(reference["images"], 239);
    let load = |p: &Path| committee_core::LogitsCache::load(p).unwrap();
    let (a, b) = (load(&killed), load(&whole));
    assert_eq!(a.meta, b.meta);
    assert_eq!(a.labels, b.labels);
    assert!(
        a.logits
            .iter()
            .zip(b.logits.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "the resumed logits differ from the uninterrupted run's"
    );
}

/// `eval --devices 0,1,2` on flex: three children, one shard each, merged into one cache that
/// holds the full run's images in its order and its logits (up to batch-composition rounding),
/// with the full run's accuracy; the shards' folder is gone afterwards; without
/// `--save-logits` it is refused.
#[test]
fn devices_split_the_images_into_one_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures().join("images");
    let full = dir.path().join("full.safetensors");
    let one = json_ok(&run(
        &["--json", "--data"],
        &[&data, Path::new("--save-logits"), &full],
    ));
    let split = dir.path().join("split.safetensors");
    let three = json_ok(&run(
        &["--json", "--devices", "0,1,2", "--data"],
        &[&data, Path::new("--save-logits"), &split],
    ));
    assert_eq!(three["images"], one["images"]);
    assert_eq!(three["top1"], one["top1"]);
    assert_eq!(three["top5"], one["top5"]);
    assert_eq!(three["devices"], serde_json::json!([0, 1, 2]));
    assert_same_cache(&full, &split);
    assert!(!dir.path().join("split.safetensors.devices").exists());
    let save = [&data, Path::new("--save-logits"), &split];
    for (args, extra, says) in [
        (
            &["--devices", "0,1", "--data"][..],
            &save[..1],
            "give --save-logits",
        ),
        (
            &["--devices", "0,1", "--shard", "0/2", "--data"],
            &save,
            "drop --shard",
        ),
        (
            &["--devices", "1,1", "--data"],
            &save,
            "--devices lists 1 twice",
        ),
    ] {
        let out = run(args, extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
}
