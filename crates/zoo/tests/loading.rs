//! Loader errors: precise, named, and never a panic.

use std::path::PathBuf;

use committee_ops::backend::cpu_device;
use committee_zoo::weights::{LoadError, LoadOptions, load, parse_safetensors, read_checkpoint};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../../tests/fixtures/parity")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("committee-zoo-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn head_size_and_channels_come_from_the_checkpoint() {
    let l = load(
        "mobilenetv2_035",
        &fixture("mobilenetv2_035.safetensors"),
        &LoadOptions::default(),
        &cpu_device(),
    )
    .unwrap();
    assert_eq!(l.options.num_classes, 10);
    assert_eq!(l.options.in_chans, 3);
}

#[test]
fn torchvision_layout_is_detected() {
    let l = load(
        "mobilenetv2_035",
        &fixture("tv_mobilenetv2_035.safetensors"),
        &LoadOptions::default(),
        &cpu_device(),
    )
    .unwrap();
    assert_eq!(l.layout.to_string(), "torchvision");
}

#[test]
fn another_architecture_is_named() {
    let e = load(
        "resnet18",
        &fixture("mobilenetv2_035.safetensors"),
        &LoadOptions::default(),
        &cpu_device(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LoadError::WrongArchitecture { .. }), "{msg}");
    assert!(
        msg.contains("mobilenetv2") && msg.contains("resnet"),
        "{msg}"
    );
    assert!(msg.contains("it matches 'mobilenetv2_035'"), "{msg}");
}

#[test]
fn shape_mismatches_list_both_shapes() {
    // A reduced ResNet (16..128 wide) into resnet18 (64..512 wide).
    let e = load(
        "resnet18",
        &fixture("resnet_basic.safetensors"),
        &LoadOptions::default(),
        &cpu_device(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("layer1.0.conv1.weight: model [64, 64, 3, 3], checkpoint [16, 64, 3, 3]"),
        "{msg}"
    );
    assert!(
        msg.contains("layer1.0.downsample.0.weight [16, 64, 1, 1]"),
        "{msg}"
    ); // unexpected
    assert!(msg.contains("missing from the checkpoint"), "{msg}"); // layer2.1 exists only in resnet18
    assert!(
        msg.contains("layer2.1.conv1.weight [128, 128, 3, 3]"),
        "{msg}"
    );
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let bytes = std::fs::read(fixture("mobilenetv2_035.safetensors")).unwrap();
    let mut ck = parse_safetensors(&bytes).unwrap();
    let t = ck.tensors.remove("blocks.1.0.conv_pwl.weight").unwrap();
    ck.tensors
        .insert("blocks.1.0.conv_pwl_typo.weight".into(), t);
    let path = tmp("renamed.safetensors");
    let views: Vec<(String, safetensors::tensor::TensorView)> = ck
        .tensors
        .iter()
        .map(|(k, t)| {
            let bytes: &[u8] = bytemuck_cast(&t.data);
            (
                k.clone(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    t.shape.clone(),
                    bytes,
                )
                .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let e = load(
        "mobilenetv2_035",
        &path,
        &LoadOptions::default(),
        &cpu_device(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("missing from the checkpoint (1)"), "{msg}");
    assert!(
        msg.contains("blocks.1.0.conv_pwl.weight [8, 48, 1, 1]"),
        "{msg}"
    );
    assert!(msg.contains("unexpected in the checkpoint (1)"), "{msg}");
    assert!(msg.contains("blocks.1.0.conv_pwl_typo.weight"), "{msg}");
}

fn bytemuck_cast(v: &[f32]) -> &[u8] {
    // f32 has no padding and any byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

#[test]
fn truncated_and_garbage_files_are_errors() {
    let bytes = std::fs::read(fixture("mobilenetv2_035.safetensors")).unwrap();
    for (name, data) in [
        ("truncated.safetensors", bytes[..bytes.len() / 2].to_vec()),
        ("header-only.safetensors", bytes[..100].to_vec()),
        (
            "garbage.safetensors",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("empty.safetensors", Vec::new()),
    ] {
        let p = tmp(name);
        std::fs::write(&p, data).unwrap();
        let e = read_checkpoint(&p).unwrap_err();
        assert!(matches!(e, LoadError::Corrupt { .. }), "{name}: {e}");
        assert!(e.to_string().contains(name), "error names the file: {e}");
    }
    let pth = std::fs::read(fixture("resnet_bottleneck.pth")).unwrap();
    let p = tmp("truncated.pth");
    std::fs::write(&p, &pth[..pth.len() / 3]).unwrap();
    assert!(read_checkpoint(&p).is_err());
}

#[test]
fn missing_file_is_an_io_error() {
    let e = read_checkpoint(&tmp("does-not-exist.safetensors")).unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }));
}

#[test]
fn unknown_model_is_an_error() {
    let e = load(
        "resnet19",
        &fixture("resnet_basic.safetensors"),
        &LoadOptions::default(),
        &cpu_device(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("unknown model 'resnet19'"));
}

#[test]
fn safetensors_sniffing_does_not_depend_on_the_header_length() {
    // A header length whose low byte is 0x80 once looked like a pickle to the format sniffer.
    let data = [1.0f32, 2.0];
    let bytes: &[u8] = bytemuck_cast(&data);
    for pad in 0..300 {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], bytes).unwrap();
        let meta = std::collections::HashMap::from([("pad".to_string(), "x".repeat(pad))]);
        let out = safetensors::serialize(vec![("w", view)], Some(meta)).unwrap();
        if out[0] != 0x80 {
            continue;
        }
        let p = tmp("header80.safetensors");
        std::fs::write(&p, out).unwrap();
        let ck = read_checkpoint(&p).unwrap();
        assert_eq!(ck.tensors["w"].data, [1.0, 2.0]);
        return;
    }
    panic!("no padding produced a 0x80 first byte");
}
