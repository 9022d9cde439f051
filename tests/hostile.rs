//! Careless and hostile input at the command line: broken checkpoints, bad flags, folders of
//! undecodable images. Each gets a clear error and a non-zero exit, never a panic (exit 101)
//! and never a false accuracy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use safetensors::tensor::TensorView;

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("tests/fixtures")
}

fn weights() -> PathBuf {
    fixtures().join("parity/mobilenetv2_035.safetensors")
}

fn eval(weights: &Path, data: &Path, extra: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_committee"))
        .args(["eval", "--backend", "flex", "--model", "mobilenetv2_035"])
        .arg("--weights")
        .arg(weights)
        .arg("--data")
        .arg(data)
        .args(extra)
        .output()
        .expect("run committee")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The fixture checkpoint (f16) with `edit` applied to its float tensors (name -> (shape,
/// values)), written to `dir` as f32.
fn edited(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<f32>)>)) -> PathBuf {
    edited_with(dir, None, edit)
}

/// [`edited`] with safetensors metadata.
fn edited_with(
    dir: &Path,
    metadata: Option<HashMap<String, String>>,
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<f32>)>),
) -> PathBuf {
    let bytes = std::fs::read(weights()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F16)
        .map(|(n, v)| {
            let data = v
                .data()
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            (n, (v.shape().to_vec(), data))
        })
        .collect();
    edit(&mut tensors);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, (s, d))| (n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let path = dir.join("edited.safetensors");
    std::fs::write(&path, safetensors::serialize(views, metadata).unwrap()).unwrap();
    path
}

fn assert_clear_error(out: &Output, wants: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "succeeded: {err}");
    assert_ne!(out.status.code(), Some(101), "panicked: {err}");
    for w in wants {
        assert!(err.contains(w), "'{w}' not in: {err}");
    }
}

/// One NaN weight used to give top-1 100 % (a NaN logit never compares greater than the
/// label's); it is refused at load, naming the tensor.
#[test]
fn a_nan_or_inf_weight_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [f32::NAN, f32::INFINITY] {
        let w = edited(dir.path(), |t| {
            t.get_mut("classifier.weight").unwrap().1[7] = bad;
        });
        let out = eval(&w, &fixtures().join("images"), &[]);
        assert_clear_error(&out, &["classifier.weight", "element 7"]);
    }
}

/// Stems and heads of the wrong rank, and a 4-channel stem given RGB images, used to panic.
#[test]
fn malformed_stems_and_heads_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures().join("images");
    let w = edited(dir.path(), |t| {
        let (s, d) = t.get_mut("conv_stem.weight").unwrap();
        *s = vec![d.len()];
    });
    assert_clear_error(
        &eval(&w, &data, &[]),
        &["conv_stem.weight", "not [out, in, kh, kw]"],
    );
    let w = edited(dir.path(), |t| {
        let (s, _) = t.get_mut("classifier.weight").unwrap();
        *s = vec![s[0] * s[1]];
    });
    assert_clear_error(&eval(&w, &data, &[]), &["classifier.weight"]);
    let w = edited(dir.path(), |t| {
        let (s, d) = t.get_mut("conv_stem.weight").unwrap();
        s[1] = 4;
        *d = vec![0.01; s.iter().product()];
    });
    assert_clear_error(&eval(&w, &data, &[]), &["4 input channels", "3 (RGB)"]);
}

/// Out-of-range flags are usage errors naming the flag; the documented comma form of
/// --mean/--std works.
#[test]
fn numeric_flags_are_checked() {
    let data = fixtures().join("images");
    for (flag, value) in [
        ("--batch", "0"),
        ("--img-size", "0"),
        ("--crop-pct", "0"),
        ("--crop-pct", "1.5"),
        ("--workers", "0"),
        ("--std", "0.5,0,0.5"),
        ("--mean", "0.5,0.5"),
        ("--shard", "3/3"),
    ] {
        let out = eval(&weights(), &data, &[flag, value]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag} {value}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(flag), "{flag}: {}", stderr(&out));
    }
    let out = eval(
        &weights(),
        &data,
        &["--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A folder in which no image decodes is an error, not an empty success.
#[test]
fn no_decodable_image_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("cat");
    std::fs::create_dir(&class).unwrap();
    std::fs::write(class.join("a.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    std::fs::write(class.join("b.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
    let out = eval(&weights(), dir.path(), &[]);
    assert_clear_error(&out, &["no image", "2 of 2 failed"]);
}

/// The fixture JPEG and PNG with headers patched to declare 60000 x 60000 pixels (the JPEG's
/// SOF, the PNG's IHDR with its CRC): a few KB that decoded would need ~10 GB.
fn bombs(dir: &Path) {
    let mut jpg = std::fs::read(fixtures().join("images/cat/chelsea.jpg")).unwrap();
    let mut i = 2;
    while !(0xC0..=0xC2).contains(&jpg[i + 1]) {
        i += 2 + u16::from_be_bytes([jpg[i + 2], jpg[i + 3]]) as usize;
    }
    jpg[i + 5..i + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    std::fs::write(dir.join("bomb.jpg"), &jpg).unwrap();
    let mut png = std::fs::read(fixtures().join("images/cat/chelsea_small.png")).unwrap();
    assert_eq!(&png[12..16], b"IHDR");
    png[16..24].copy_from_slice(&[0, 0, 0xEA, 0x60, 0, 0, 0xEA, 0x60]);
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(dir.join("bomb.png"), &png).unwrap();
}

/// The PNG chunk CRC (ISO 3309, as zlib's crc32).
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Images whose header declares more pixels than PIL allows are refused before decoding,
/// counted as failed with the reason, and the run goes on; the limit is a flag.
#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("cat");
    std::fs::create_dir(&class).unwrap();
    bombs(&class);
    std::fs::copy(
        fixtures().join("images/cat/chelsea.jpg"),
        class.join("ok.jpg"),
    )
    .unwrap();
    let out = eval(&weights(), dir.path(), &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["images"], 1);
    let failed = r["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{failed:?}");
    for f in failed {
        let e = f["error"].as_str().unwrap();
        assert!(
            e.contains("3600000000 pixels") && e.contains("decompression bomb"),
            "{e}"
        );
    }
    // Below the good image's size, nothing is left to evaluate.
    let out = eval(&weights(), dir.path(), &["--max-image-pixels", "1000"]);
    assert_clear_error(&out, &["no image", "3 of 3 failed"]);
}

/// A checkpoint whose stored eval config is damaged is an error naming the field, not a
/// silent fall-back to timm's defaults.
#[test]
fn a_damaged_stored_eval_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures().join("images");
    for (stored, want) in [
        (
            r#"{"img_size":224,"crop_pct":0.0,"interpolation":"bicubic","mean":[0.5,0.5,0.5],"std":[0.5,0.5,0.5]}"#,
            "crop_pct 0",
        ),
        (r#"{"img_size":"big"}"#, "not an eval config"),
    ] {
        let meta = HashMap::from([("committee.eval".to_string(), stored.to_string())]);
        let w = edited_with(dir.path(), Some(meta), |_| {});
        assert_clear_error(&eval(&w, &data, &[]), &["committee.eval", want]);
    }
}
