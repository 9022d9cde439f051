//! Resize + crop against PIL/timm on real photos in many formats (fixtures written by
//! scripts/make_image_fixtures.py): per channel, max |ours - PIL| <= 2 levels, mean <= 0.5.

use std::path::PathBuf;

use committee_data::decode;
use committee_data::eval_config::Interpolation;
use committee_data::transform::EvalTransform;

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../../tests/fixtures")
}

#[test]
fn resize_crop_matches_pil() {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("images_expected.json")).unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(fixtures().join("images_expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let files: Vec<&str> = meta["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let mut report = Vec::new();
    for cfg in meta["configs"].as_array().unwrap() {
        let name = cfg["name"].as_str().unwrap();
        let size = cfg["input_size"][1].as_u64().unwrap() as usize;
        let t = EvalTransform {
            img_size: size,
            crop_pct: cfg["crop_pct"].as_f64().unwrap(),
            interpolation: cfg["interpolation"]
                .as_str()
                .unwrap()
                .parse::<Interpolation>()
                .unwrap(),
            mean: [0.0; 3],
            std: [1.0; 3],
            resize: None,
        };
        let expected = st.tensor(name).unwrap();
        let exp = expected.data();
        let per = 3 * size * size;
        for (i, f) in files.iter().enumerate() {
            let img = decode(&fixtures().join("images").join(f)).unwrap();
            let ours = t.resize_crop(&img);
            for c in 0..3 {
                let (mut max, mut sum) = (0i32, 0i64);
                for y in 0..size {
                    for x in 0..size {
                        let a = ours.get_pixel(x as u32, y as u32).0[c] as i32;
                        let b = exp[i * per + c * size * size + y * size + x] as i32;
                        max = max.max((a - b).abs());
                        sum += (a - b).abs() as i64;
                    }
                }
                let mean = sum as f64 / (size * size) as f64;
                report.push(format!("{name:10} {f:28} ch{c} max {max} mean {mean:.3}"));
                assert!(
                    max <= 2 && mean <= 0.5,
                    "{name} {f} channel {c}: max {max}, mean {mean:.3} levels"
                );
            }
        }
    }
    eprintln!("{}", report.join("\n"));
}
