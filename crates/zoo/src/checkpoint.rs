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

/// Parses safetensors bytes; never panics on malformed input (the fuzz target's entry).
pub fn parse_safetensors(bytes: &[u8]) -> Result<Checkpoint, String> {
    use safetensors::{Dtype, SafeTensors};
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("safetensors: {e}"))?;
    let mut ckpt = Checkpoint::default();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            _ => {
                ckpt.ignored.push(name);
                continue;
            }
        };
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel != Some(data.len()) {
            return Err(format!(
                "tensor '{name}': data length does not match shape {shape:?}"
            ));
        }
        ckpt.tensors.insert(name, RawTensor { shape, data });
    }
    Ok(ckpt)
}
