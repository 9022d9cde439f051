//! Every registry name against timm: state-dict names and shapes, parameter counts, GMACs.
//! The manifests come from `scripts/make_fixtures.py` (timm 1.0.31, meta device).

use std::collections::BTreeMap;
use std::path::PathBuf;

use committee_zoo::manifest::{param_count, to_text};
use committee_zoo::registry;
use committee_zoo::weights::registry_manifest;

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../../tests/fixtures/manifests")
}

/// (name, params, img_size, gmacs) as measured from timm by the fixture script.
fn timm_table() -> BTreeMap<String, (usize, usize, f64)> {
    let text = std::fs::read_to_string(fixtures().join("models.tsv")).expect("models.tsv");
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                (
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn registry_lists_every_reference_name() {
    let names: Vec<String> = registry::all().into_iter().map(|s| s.name).collect();
    let table = timm_table();
    assert_eq!(names.len(), 32);
    for n in table.keys() {
        assert!(names.contains(n), "{n} missing from the registry");
    }
}

#[test]
fn manifests_match_timm() {
    for spec in registry::all() {
        let ours = to_text(&registry_manifest(&spec, 1000));
        let theirs =
            std::fs::read_to_string(fixtures().join(format!("{}.txt", spec.name))).unwrap();
        let mut a: Vec<&str> = ours.lines().collect();
        let mut b: Vec<&str> = theirs.lines().collect();
        a.sort();
        b.sort();
        if a != b {
            let only_ours: Vec<_> = a.iter().filter(|l| !b.contains(l)).take(5).collect();
            let only_timm: Vec<_> = b.iter().filter(|l| !a.contains(l)).take(5).collect();
            panic!(
                "{}: ours only {only_ours:?}; timm only {only_timm:?}",
                spec.name
            );
        }
    }
}

#[test]
fn parameter_counts_equal_timm() {
    let table = timm_table();
    for spec in registry::all() {
        let ours = param_count(&registry_manifest(&spec, 1000));
        assert_eq!(ours, table[&spec.name].0, "{}", spec.name);
    }
    // The reference table in shared/reference/models.md, typed in by hand.
    for (name, params) in [
        ("efficientnet_b0", 5_288_548),
        ("efficientnet_b7", 66_347_960),
        ("resnet50", 25_557_032),
        ("resnet152", 60_192_808),
        ("mobilenetv2_035", 1_677_128),
        ("mobilenetv2_140", 6_108_776),
        ("vit_tiny_patch16_224", 5_717_416),
        ("vit_base_patch16_384", 86_859_496),
        ("vit_large_patch16_384", 304_715_752),
    ] {
        let spec = registry::get(name).unwrap();
        assert_eq!(
            param_count(&registry_manifest(&spec, 1000)),
            params,
            "{name}"
        );
    }
}

#[test]
fn gmacs_within_one_percent() {
    // torch's flop counter at timm's default resolution.
    for (name, (_, img, gmacs)) in timm_table() {
        let ours = registry::get(&name).unwrap().gmacs_at(img, 1000);
        assert!(
            (ours - gmacs).abs() / gmacs < 0.01,
            "{name}: ours {ours:.4} vs torch {gmacs:.4}"
        );
    }
    // The reference table (paper resolutions for EfficientNet).
    for (name, img, gmacs) in [
        ("efficientnet_b0", 224, 0.386),
        ("efficientnet_b1", 240, 0.687),
        ("efficientnet_b2", 260, 0.994),
        ("efficientnet_b3", 300, 1.827),
        ("efficientnet_b4", 380, 4.394),
        ("efficientnet_b5", 456, 10.266),
        ("efficientnet_b6", 528, 19.068),
        ("efficientnet_b7", 600, 37.746),
        ("tf_efficientnet_b4", 380, 4.394),
        ("resnet18", 224, 1.814),
        ("resnet34", 224, 3.664),
        ("resnet50", 224, 4.089),
        ("resnet101", 224, 7.801),
        ("resnet152", 224, 11.514),
        ("mobilenetv2_100", 224, 0.301),
        ("vit_base_patch16_224", 224, 17.564),
        ("vit_base_patch16_384", 384, 55.484),
        ("vit_large_patch16_224", 224, 61.555),
        ("vit_large_patch16_384", 384, 191.066),
    ] {
        let ours = registry::get(name).unwrap().gmacs_at(img, 1000);
        assert!(
            (ours - gmacs).abs() / gmacs < 0.01,
            "{name}: ours {ours:.4} vs reference {gmacs}"
        );
    }
}

#[test]
fn eval_defaults_follow_timm() {
    let b0 = registry::get("efficientnet_b0").unwrap().eval;
    assert_eq!((b0.img_size, b0.crop_pct), (224, 0.875));
    let tf7 = registry::get("tf_efficientnet_b7").unwrap().eval;
    assert_eq!((tf7.img_size, tf7.crop_pct), (600, 0.949));
    let vit = registry::get("vit_base_patch16_384").unwrap().eval;
    assert_eq!((vit.img_size, vit.crop_pct, vit.mean), (384, 1.0, [0.5; 3]));
    let r50 = registry::get("resnet50").unwrap().eval;
    assert_eq!((r50.img_size, r50.crop_pct), (224, 0.95));
}
