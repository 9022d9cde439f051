//! A checkpoint as named f32 tensors, and the safetensors parser.
//!
//! Depends on nothing but `safetensors` and `half`, so the fuzz target (`fuzz/`) builds it
//! without Burn.

use std::collections::BTreeMap;

/// A tensor read from a checkpoint, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Named tensors of a checkpoint, plus what was skipped on purpose.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    pub tensors: BTreeMap<String, RawTensor>,
    /// Non-float entries such as `num_batches_tracked`, which no model here uses.
    pub ignored: Vec<String>,
}

/// Float element types a checkpoint may store; all are read as f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatKind {
    F32,
    F16,
    BF16,
    F64,
}

/// Little-endian bytes of `kind` to f32 (a trailing partial element is dropped; [`fits`]
/// then reports the length mismatch).
pub fn to_f32(kind: FloatKind, raw: &[u8]) -> Vec<f32> {
    match kind {
        FloatKind::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        FloatKind::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        FloatKind::BF16 => raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        FloatKind::F64 => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
    }
}

/// Whether `data` holds exactly the elements `shape` promises (overflow-safe).
pub fn fits(shape: &[usize], data: &[f32]) -> bool {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) == Some(data.len())
}

/// Parses safetensors bytes; never panics on malformed input (the fuzz target's entry).
pub fn parse_safetensors(bytes: &[u8]) -> Result<Checkpoint, String> {
    use safetensors::{Dtype, SafeTensors};
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("safetensors: {e}"))?;
    let mut ckpt = Checkpoint::default();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let kind = match view.dtype() {
            Dtype::F32 => FloatKind::F32,
            Dtype::F16 => FloatKind::F16,
            Dtype::BF16 => FloatKind::BF16,
            Dtype::F64 => FloatKind::F64,
            _ => {
                ckpt.ignored.push(name);
                continue;
            }
        };
        let data = to_f32(kind, raw);
        if !fits(&shape, &data) {
            return Err(format!(
                "tensor '{name}': data length does not match shape {shape:?}"
            ));
        }
        ckpt.tensors.insert(name, RawTensor { shape, data });
    }
    Ok(ckpt)
}
