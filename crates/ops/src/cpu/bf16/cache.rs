//! Packed bf16 copies of weights, made at a weight's first bf16 product and kept.
//!
//! Why: packing reads every weight once; ResNet-50's 25 M per forward at batch 1 costs about
//! as much as the bf16 products themselves. A weight is known by its parameter id and the
//! address and length of its storage: a parameter whose value changes (an optimiser step)
//! gets new storage, so a stale copy is never found.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::module::Param;
use burn::tensor::Tensor;

use super::{PackedA, PackedB};

/// The packed copies together stop growing past this: the cache is emptied and refilled by
/// the model in use (a process that evaluates many models one after another).
const MAX_BYTES: usize = 2 << 30;

type Key = (u64, usize, usize);

#[derive(Default)]
struct Cache {
    left: HashMap<Key, Arc<PackedA>>,
    right: HashMap<Key, Arc<PackedB>>,
    bytes: usize,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fn key<const D: usize>(param: &Param<Tensor<D>>, data: &[f32]) -> Key {
    (param.id.val(), data.as_ptr() as usize, data.len())
}

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    // A panic while holding the lock leaves a consistent map (each change is one call).
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Cache::default))
}

/// Makes room for `bytes` more.
fn reserve(cache: &mut Cache, bytes: usize) {
    if cache.bytes + bytes > MAX_BYTES {
        *cache = Cache::default();
    }
    cache.bytes += bytes;
}

/// `param`'s value, the row-major `[m, k]` matrix in `data`, as a left operand.
pub(crate) fn left<const D: usize>(
    param: &Param<Tensor<D>>,
    data: &[f32],
    m: usize,
    k: usize,
) -> Arc<PackedA> {
    let key = key(param, data);
    if let Some(p) = with_cache(|c| c.left.get(&key).cloned()) {
        return p;
    }
    // Packed outside the lock (it is parallel); two threads may both pack, one copy is kept.
    let p = Arc::new(PackedA::pack(data, m, k));
    with_cache(|c| {
        reserve(c, p.bytes());
        c.left.entry(key).or_insert(p).clone()
    })
}

/// `param`'s value, the row-major `[k, n]` matrix in `data`, as a right operand.
pub(crate) fn right<const D: usize>(
    param: &Param<Tensor<D>>,
    data: &[f32],
    k: usize,
    n: usize,
) -> Arc<PackedB> {
    let key = key(param, data);
    if let Some(p) = with_cache(|c| c.right.get(&key).cloned()) {
        return p;
    }
    let p = Arc::new(PackedB::pack(data, k, n));
    with_cache(|c| {
        reserve(c, p.bytes());
        c.right.entry(key).or_insert(p).clone()
    })
}
