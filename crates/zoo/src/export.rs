//! Writing a model as a timm-style state dict in safetensors, so trained members load back
//! into `committee` (and into timm) by name. The file's metadata carries the eval
//! preprocessing the model was trained for, which the commands use instead of the registry's.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::keys::{Key, KeyVisitor, walk};
use crate::registry::EvalConfig;

/// Metadata key holding the model's eval preprocessing as JSON.
pub const EVAL_KEY: &str = "committee.eval";
/// Metadata key holding the registry name the weights belong to.
pub const MODEL_KEY: &str = "committee.model";

/// One named tensor of a state dict, in PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Default)]
struct Collect {
    out: Vec<NamedTensor>,
    bns: Vec<String>,
}

impl KeyVisitor for Collect {
    fn visit<const D: usize>(&mut self, key: Key, param: &Param<Tensor<D>>) {
        if key.batch_norm && key.leaf == "running_var" {
            self.bns.push(key.module.clone());
        }
        let t = param.val();
        let mut shape = t.dims().to_vec();
        let mut data = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        if key.linear_weight && D == 2 {
            // Burn stores Linear as [in, out]; PyTorch as [out, in].
            let (i, o) = (shape[0], shape[1]);
            let mut tr = vec![0f32; data.len()];
            for r in 0..i {
                for c in 0..o {
                    tr[c * i + r] = data[r * o + c];
                }
            }
            data = tr;
            shape.swap(0, 1);
        }
        self.out.push(NamedTensor {
            name: key.name,
            shape,
            data,
        });
    }
}

/// The model's tensors under timm's state-dict names (Linear transposed, BN renamed), plus
/// the names of its BatchNorms (timm's strict loading wants a `num_batches_tracked` for each).
pub fn state_dict<M: Module>(model: &M) -> (Vec<NamedTensor>, Vec<String>) {
    let mut c = Collect::default();
    walk(model, &mut c);
    (c.out, c.bns)
}

/// Safetensors bytes of `model` with `metadata`. Byte-for-byte reproducible (tensors and
/// metadata sorted by name), so equal weights give equal files and equal SHA-256s.
pub fn to_safetensors<M: Module>(
    model: &M,
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let (tensors, bns) = state_dict(model);
    let mut entries: Vec<Entry> = tensors.into_iter().map(Entry::from).collect();
    entries.extend(bns.into_iter().map(|bn| Entry {
        name: format!("{bn}.num_batches_tracked"),
        dtype: "I64",
        shape: vec![],
        bytes: 0i64.to_le_bytes().to_vec(),
    }));
    serialize(entries, &metadata)
}

/// One tensor to serialise: safetensors dtype name ("F32", "I64", "U8"), shape, raw bytes.
pub struct Entry {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl From<NamedTensor> for Entry {
    fn from(t: NamedTensor) -> Self {
        Entry {
            name: t.name,
            dtype: "F32",
            shape: t.shape,
            bytes: t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// The safetensors format with a deterministic header: entries sorted by name, keys in
/// order, the header padded with spaces to a multiple of 8 (as the reference writer does).
pub fn serialize(
    mut entries: Vec<Entry>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0usize;
    for e in &entries {
        let elems: usize = e.shape.iter().product();
        let width = match e.dtype {
            "F32" => 4,
            "I64" => 8,
            "U8" => 1,
            other => return Err(format!("unsupported dtype {other}")),
        };
        if elems * width != e.bytes.len() {
            return Err(format!(
                "tensor {}: {} bytes for shape {:?}",
                e.name,
                e.bytes.len(),
                e.shape
            ));
        }
        header.insert(
            e.name.clone(),
            serde_json::json!({"dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.bytes.len()]}),
        );
        offset += e.bytes.len();
    }
    let mut h = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + offset);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for e in entries {
        out.extend_from_slice(&e.bytes);
    }
    Ok(out)
}

/// Metadata for an exported model: its registry name and eval preprocessing.
pub fn metadata(model_name: &str, eval: &EvalConfig) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), "pt".into());
    m.insert(MODEL_KEY.into(), model_name.into());
    m.insert(
        EVAL_KEY.into(),
        serde_json::to_string(eval).unwrap_or_default(),
    );
    m
}

/// The eval preprocessing stored in a safetensors file's metadata (reads only the header):
/// `Ok(None)` where there is none (timm's checkpoints; files that are no safetensors, which
/// the loader then reports), `Err` where the field is there but damaged or out of range: a
/// damaged field must not fall back to defaults silently.
pub fn eval_config(path: &Path) -> Result<Option<EvalConfig>, String> {
    let Some(s) = stored_eval(path) else {
        return Ok(None);
    };
    let eval: EvalConfig = serde_json::from_str(&s)
        .map_err(|e| format!("metadata '{EVAL_KEY}' is not an eval config: {e}"))?;
    eval.validate()
        .map_err(|e| format!("metadata '{EVAL_KEY}': {e}"))?;
    Ok(Some(eval))
}

/// The raw `committee.eval` metadata string, if the file has one.
fn stored_eval(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return None;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    Some(v.get("__metadata__")?.get(EVAL_KEY)?.as_str()?.to_string())
}
