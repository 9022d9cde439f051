//! Fuzzes the whole checkpoint path (`committee_zoo::load`: file sniffing, the stored eval
//! config, the safetensors parser, layout detection, the finite/rank/shape checks, the model
//! build, the weight copy, a forward pass): a registry model's real state-dict keys with
//! fuzzed shapes, dtypes, values, names and metadata must load or give an error, never panic.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run load_checkpoint -- -max_total_time=600`
//! Seeds: `fuzz/seeds/load_checkpoint/` (a few bytes each: the input is a list of edits of a
//! real checkpoint, not the checkpoint itself).
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use burn::tensor::{Device, Tensor};
use committee_zoo::manifest::Entry;
use committee_zoo::{LoadOptions, registry, weights};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// Small registry models of each family (the fuzzer rebuilds one per input).
const MODELS: [&str; 4] = [
    "mobilenetv2_035",
    "resnet18",
    "vit_tiny_patch16_224",
    "efficientnet_b0",
];
/// Above this many elements a mutated shape is not tried (it would only test the allocator).
const MAX_ELEMS: usize = 1 << 23;

fn manifests() -> &'static Vec<Vec<Entry>> {
    static M: OnceLock<Vec<Vec<Entry>>> = OnceLock::new();
    M.get_or_init(|| {
        MODELS
            .iter()
            .map(|n| weights::registry_manifest(&registry::get(n).expect("registry model"), 10))
            .collect()
    })
}

/// The next byte of the input (0 once it is used up: "keep").
struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

struct Tensor_ {
    name: String,
    shape: Vec<usize>,
    dtype: Dtype,
    poison: Option<f32>,
}

fn encode(t: &Tensor_, value: f32) -> Vec<u8> {
    let n: usize = t.shape.iter().product();
    let mut vals = vec![value; n];
    if let (Some(p), Some(first)) = (t.poison, vals.first_mut()) {
        *first = p;
    }
    match t.dtype {
        Dtype::F16 => vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::F64 => vals.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect(),
        Dtype::I64 => vals.iter().flat_map(|v| (*v as i64).to_le_bytes()).collect(),
        Dtype::U8 => vals.iter().map(|v| *v as u8).collect(),
        _ => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Applies one edit, chosen by `op`, to `t` (`None`: drop the tensor).
fn edit(mut t: Tensor_, op: u8, arg: u8) -> Option<Tensor_> {
    let rank = t.shape.len().max(1);
    let dim = arg as usize % rank;
    match op % 32 {
        0 => return None,
        1 if !t.shape.is_empty() => t.shape[dim] = 0,
        2 if !t.shape.is_empty() => t.shape[dim] += 1 + (arg / 8) as usize % 4,
        3 if !t.shape.is_empty() => t.shape[dim] = 1,
        4 if !t.shape.is_empty() && t.shape[dim] > 1 => t.shape[dim] -= 1,
        5 => t.shape.insert(dim.min(t.shape.len()), 1),
        6 => t.shape = vec![t.shape.iter().product()],
        7 => t.shape.clear(),
        8 if t.shape.len() >= 2 => t.shape.swap(0, dim.max(1)),
        9 => t.shape.reverse(),
        10 => t.dtype = Dtype::F16,
        11 => t.dtype = Dtype::BF16,
        12 => t.dtype = Dtype::F64,
        13 => t.dtype = Dtype::I64,
        14 => t.dtype = Dtype::U8,
        15 => t.poison = Some(f32::NAN),
        16 => t.poison = Some(f32::INFINITY),
        17 => t.poison = Some(1e30),
        18 => t.poison = Some(-0.0),
        19 => t.name = format!("module.{}", t.name),
        20 => t.name.push_str("_x"),
        21 => t.name = t.name.replace("weight", "bias"),
        22 => t.name = t.name.replacen('.', "_", 1),
        23 if !t.shape.is_empty() => t.shape[dim] *= 2,
        24 if !t.shape.is_empty() => t.shape[dim] = arg as usize,
        _ => {}
    }
    (t.shape.iter().product::<usize>() <= MAX_ELEMS).then_some(t)
}

/// A stored eval config: none, a valid one with fuzzed numbers, or fuzzed text.
fn metadata(kind: u8, b: &mut Bytes) -> Option<HashMap<String, String>> {
    let eval = match kind % 4 {
        0 => return None,
        1 | 2 => {
            let size = u16::from_le_bytes([b.next(), b.next()]) as usize % 1024;
            let crop = b.next() as f64 / 200.0;
            let std = (b.next() as f64 - 8.0) / 100.0;
            format!(
                "{{\"img_size\":{size},\"crop_pct\":{crop},\"interpolation\":\"bicubic\",\"mean\":[0.5,0.5,0.5],\"std\":[{std},0.2,0.2]}}"
            )
        }
        _ => {
            let n = b.next() as usize % 32;
            (0..n).map(|_| b.next() as char).collect()
        }
    };
    Some([("committee.eval".to_string(), eval)].into_iter().collect())
}

fn device() -> &'static Device {
    static D: OnceLock<Device> = OnceLock::new();
    D.get_or_init(committee_ops::backend::cpu_device)
}

// The input: a header (model, load options, metadata kind, fill value), then edits of 4 bytes
// (tensor index, low and high byte; the edit; its argument), applied in order to the model's
// real state dict, then the metadata's bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let m = b.next() as usize % MODELS.len();
    let opt = b.next();
    let meta = b.next();
    let value = (b.next() as f32 - 128.0) / 1024.0;
    let entries = &manifests()[m];
    let mut tensors: Vec<Option<Tensor_>> = entries
        .iter()
        .map(|e| {
            Some(Tensor_ {
                name: e.name.clone(),
                shape: e.shape.clone(),
                dtype: Dtype::F32,
                poison: None,
            })
        })
        .collect();
    let edits = (b.next() % 8) as usize;
    for _ in 0..edits {
        let i = u16::from_le_bytes([b.next(), b.next()]) as usize % tensors.len();
        let (op, arg) = (b.next(), b.next());
        if op >= 250 {
            // A duplicate under another name: an unexpected tensor.
            if let Some(t) = &tensors[i] {
                let mut d = Tensor_ {
                    name: format!("{}.extra", t.name),
                    shape: t.shape.clone(),
                    dtype: t.dtype,
                    poison: t.poison,
                };
                d.shape.truncate(1 + arg as usize % 4);
                tensors.push(Some(d));
            }
            continue;
        }
        tensors[i] = tensors[i].take().and_then(|t| edit(t, op, arg));
    }
    // One tensor per name (safetensors' serializer panics on duplicates: it indexes past its
    // name table; the file format cannot hold them anyway).
    let mut seen = std::collections::HashSet::new();
    let tensors: Vec<Tensor_> = tensors
        .into_iter()
        .flatten()
        .filter(|t| seen.insert(t.name.clone()))
        .collect();
    let md = metadata(meta, &mut b);
    let bytes: Vec<(String, Vec<u8>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), encode(t, value)))
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .filter_map(|(t, (name, raw))| {
            TensorView::new(t.dtype, t.shape.clone(), raw)
                .ok()
                .map(|v| (name.clone(), v))
        })
        .collect();
    let Ok(file) = safetensors::serialize(views, md) else {
        return;
    };
    let path = std::env::temp_dir().join(format!("committee-fuzz-{}.safetensors", std::process::id()));
    if std::fs::write(&path, &file).is_err() {
        return;
    }
    let img = [None, Some(32), Some(48), Some(64)][(opt % 4) as usize];
    let opts = LoadOptions {
        num_classes: (opt & 4 != 0).then_some(10),
        img_size: img.map(|s| [s, s]),
        ..LoadOptions::default()
    };
    if let Ok(loaded) = committee_zoo::load(MODELS[m], &path, &opts, device()) {
        let [h, w] = loaded.img_size;
        if h * w <= 64 * 64 {
            let x = Tensor::<4>::zeros([1, loaded.options.in_chans, h, w], device());
            let y = loaded.model.forward(x);
            assert_eq!(y.dims()[0], 1);
        }
    }
});
