//! `init::timm` draws every parameter from the distribution timm's `create_model` draws it
//! from: per state-dict key, constants equal and random tensors with the same mean, spread and
//! shape of distribution (normal vs uniform) as timm's own, within sampling error. Reference:
//! tests/fixtures/init/timm_init.json from scripts/init_reference.py (timm itself).

use std::collections::BTreeMap;

use burn::module::Param;
use burn::tensor::Tensor;
use committee_ops::backend::cpu_device;
use committee_zoo::init::{self, Scheme};
use committee_zoo::keys::{self, Key, KeyVisitor};
use committee_zoo::{CommonOptions, registry, weights};
use serde_json::Value;

#[derive(Debug)]
struct Stats {
    numel: usize,
    mean: f64,
    std: f64,
    max_abs: f64,
}

fn stats(v: &[f32]) -> Stats {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    Stats {
        numel: v.len(),
        mean,
        std: var.sqrt(),
        max_abs: v.iter().fold(0.0f64, |a, &x| a.max((x as f64).abs())),
    }
}

struct Collect(BTreeMap<String, Stats>);

impl KeyVisitor for Collect {
    fn visit<const D: usize>(&mut self, key: Key, param: &Param<Tensor<D>>) {
        let v: Vec<f32> = param.val().into_data().try_to_vec::<f32>().unwrap();
        self.0.insert(key.name, stats(&v));
    }
}

fn ours(name: &str, scheme: Scheme) -> BTreeMap<String, Stats> {
    let spec = registry::get(name).unwrap();
    let device = cpu_device();
    device.seed(1);
    let model = weights::random_model(
        &spec,
        &CommonOptions::default(),
        [spec.eval.img_size; 2],
        &device,
    );
    let model = init::apply(model, scheme);
    let mut c = Collect(BTreeMap::new());
    keys::walk(&model, &mut c);
    c.0
}

fn reference() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/init/timm_init.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The keys where `ours` is not drawn as timm draws: a description per key.
fn mismatches(name: &str, ours: &BTreeMap<String, Stats>, timm: &Value) -> Vec<String> {
    let timm = timm["models"][name].as_object().unwrap();
    let mut bad = Vec::new();
    let theirs: Vec<&String> = timm.keys().collect();
    let mine: Vec<&String> = ours.keys().collect();
    let (mut a, mut b) = (theirs.clone(), mine.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "{name}: the parameter names differ from timm's");
    for (key, t) in timm {
        let o = &ours[key];
        let f = |k: &str| t[k].as_f64().unwrap();
        let (mean, std, max_abs) = (f("mean"), f("std"), f("max_abs"));
        assert_eq!(o.numel as u64, t["numel"].as_u64().unwrap(), "{name} {key}");
        let n = o.numel as f64;
        let why = if std == 0.0 {
            // A constant (BatchNorm's 1 and 0, zeroed biases, zero_init_last).
            (o.std != 0.0 || o.mean != mean).then(|| format!("constant {mean} in timm"))
        } else if o.std == 0.0 {
            Some("constant here, random in timm".into())
        } else if (o.std / std - 1.0).abs() > 5.0 / n.sqrt() {
            Some(format!("std {:.4e} vs timm {std:.4e}", o.std))
        } else if (o.mean - mean).abs() > 5.0 * std * (2.0 / n).sqrt() {
            Some(format!("mean {:.4e} vs timm {mean:.4e}", o.mean))
        } else if n >= 1000.0 && (o.max_abs / o.std > 2.2) != (max_abs / std > 2.2) {
            // Uniform tensors end at 1.73 std; a thousand normal draws reach past 2.5 std
            // (all but surely): a different shape.
            Some(format!(
                "largest |x| {:.2} std vs timm {:.2} std",
                o.max_abs / o.std,
                max_abs / std
            ))
        } else {
            None
        };
        if let Some(why) = why {
            bad.push(format!("{key}: {why}"));
        }
    }
    bad
}

#[test]
fn timm_scheme_draws_as_timm_does() {
    let timm = reference();
    for name in timm["models"].as_object().unwrap().keys() {
        let bad = mismatches(name, &ours(name, Scheme::Timm), &timm);
        assert!(bad.is_empty(), "{name}: {bad:#?}");
    }
}

/// The check can fail: Burn's defaults are not timm's (MobileNetV2's classifier, ResNet's
/// zeroed last norms, ViT's linears).
#[test]
fn burn_defaults_differ_from_timm() {
    let timm = reference();
    for (name, key) in [
        ("mobilenetv2_100", "classifier.weight"),
        ("resnet18", "layer1.0.bn2.weight"),
        ("vit_tiny_patch16_224", "blocks.0.mlp.fc1.weight"),
    ] {
        let bad = mismatches(name, &ours(name, Scheme::Burn), &timm);
        assert!(
            bad.iter().any(|b| b.starts_with(&format!("{key}:"))),
            "{name}: {bad:#?}"
        );
    }
}
