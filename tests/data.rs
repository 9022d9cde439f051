//! `committee data fashion-mnist` on small hand-made IDX files.

use std::path::Path;
use std::process::Command;

fn idx(path: &Path, dims: &[u32], data: &[u8]) {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend(data);
    std::fs::write(path, v).unwrap();
}

fn import(src: &Path, out: &Path, per_class: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_committee"))
        .args([
            "data",
            "fashion-mnist",
            "--holdout-per-class",
            per_class,
            "--src",
        ])
        .arg(src)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn imports_hand_made_idx_files() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // 30 training images (3 per class, pixel value = index), 10 test images.
    let train: Vec<u8> = (0..30u8).flat_map(|i| [i; 784]).collect();
    idx(&src.join("train-images-idx3-ubyte"), &[30, 28, 28], &train);
    idx(
        &src.join("train-labels-idx1-ubyte"),
        &[30],
        &(0..30u8).map(|i| i % 10).collect::<Vec<_>>(),
    );
    idx(
        &src.join("t10k-images-idx3-ubyte"),
        &[10, 28, 28],
        &vec![200; 7840],
    );
    idx(
        &src.join("t10k-labels-idx1-ubyte"),
        &[10],
        &(0..10u8).collect::<Vec<_>>(),
    );
    let out = d.path().join("fm");
    let o = import(&src, &out, "1");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("train 20 / holdout 10 / test 10"));
    let count = |p: &Path| std::fs::read_dir(p).unwrap().count();
    assert_eq!(count(&out.join("train/3_dress")), 2);
    assert_eq!(count(&out.join("holdout/3_dress")), 1);
    assert_eq!(count(&out.join("test/9_ankle_boot")), 1);
    // Image 13 (label 3) keeps its pixels wherever it went.
    let p = ["train", "holdout"]
        .iter()
        .map(|s| out.join(s).join("3_dress/00013.png"))
        .find(|p| p.exists())
        .unwrap();
    let img = image::open(p).unwrap().to_luma8();
    assert_eq!(img.dimensions(), (28, 28));
    assert!(img.pixels().all(|px| px.0[0] == 13));
    assert!(!d.path().join("fm.partial").exists());
    // Refuses to overwrite.
    assert!(!import(&src, &out, "1").status.success());
}

#[test]
fn missing_or_truncated_files_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let o = import(&d.path().join("nope"), &d.path().join("out"), "1");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("apt-get install dataset-fashion-mnist"));

    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    idx(
        &src.join("train-images-idx3-ubyte"),
        &[30, 28, 28],
        &[0; 1000],
    );
    idx(&src.join("train-labels-idx1-ubyte"), &[30], &[0; 30]);
    let o = import(&src, &d.path().join("out"), "1");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
        "{err}"
    );
}
