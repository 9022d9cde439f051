//! Packed bf16 copies of weights, made at a weight's first bf16 product and kept.
//!
//! Why: packing reads every weight once; ResNet-50's 25 M per forward at batch 1 costs about
//! as much as the bf16 products themselves. A weight is known by its parameter id and the
//! address and length of its storage. That does not tell a weight's values apart after an
//! optimiser step (committee's SGD and AdamW update weights in place, and the allocator may
//! hand a freed weight's address to its next value): whoever changes weights drops the
//! copies before the next inference ([`crate::precision::forget_packed_weights`]; the
//! trainer does, before every evaluation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::module::Param;
use burn::tensor::Tensor;

use super::{PackedA, PackedB};
use crate::cpu::aligned::Aligned;
#[cfg(target_arch = "x86_64")]
use crate::cpu::conv_taps;
use crate::cpu::linear_packed;
use crate::cpu::train::direct::{self, Direct};

/// The packed copies together stop growing past this: the cache is emptied and refilled by
/// the model in use (a process that evaluates many models one after another).
const MAX_BYTES: usize = 2 << 30;

type Key = (u64, usize, usize);

#[derive(Default)]
struct Cache {
    left: HashMap<Key, Arc<PackedA>>,
    taps: HashMap<Key, Arc<PackedA>>,
    right: HashMap<Key, Arc<PackedB>>,
    /// f32 weights packed for [`crate::cpu::conv_taps`] (the same budget and lifetime).
    #[cfg(target_arch = "x86_64")]
    f32_taps: HashMap<Key, Arc<conv_taps::Packed>>,
    /// f32 linear weights packed for [`linear_packed::linear_into`].
    f32_right: HashMap<Key, Arc<linear_packed::PackedW>>,
    /// f32 convolution weights blocked for [`direct::conv_finished`].
    f32_direct: HashMap<Key, Arc<Aligned>>,
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

/// The packed copy `map` (one side of the cache) holds under `key`, or `pack()`'s, kept.
fn cached<T>(
    key: Key,
    map: fn(&mut Cache) -> &mut HashMap<Key, Arc<T>>,
    pack: impl FnOnce() -> T,
    bytes: fn(&T) -> usize,
) -> Arc<T> {
    if let Some(p) = with_cache(|c| map(c).get(&key).cloned()) {
        return p;
    }
    // Packed outside the lock (it is parallel); two threads may both pack, one copy is kept.
    let p = Arc::new(pack());
    with_cache(|c| {
        if c.bytes + bytes(&p) > MAX_BYTES {
            *c = Cache::default();
        }
        c.bytes += bytes(&p);
        map(c).entry(key).or_insert(p).clone()
    })
}

/// Empties the cache (see [`crate::precision::forget_packed_weights`]).
pub(crate) fn clear() {
    with_cache(|c| *c = Cache::default());
}

/// `param`'s value, the row-major `[m, k]` matrix in `data`, as a left operand.
pub(crate) fn left<const D: usize>(
    param: &Param<Tensor<D>>,
    data: &[f32],
    m: usize,
    k: usize,
) -> Arc<PackedA> {
    let pack = || PackedA::pack(data, m, k);
    cached(key(param, data), |c| &mut c.left, pack, PackedA::bytes)
}

/// `param`'s value, the row-major `[k, n]` matrix in `data`, as a right operand.
pub(crate) fn right<const D: usize>(
    param: &Param<Tensor<D>>,
    data: &[f32],
    k: usize,
    n: usize,
) -> Arc<PackedB> {
    let pack = || PackedB::pack(data, k, n);
    cached(key(param, data), |c| &mut c.right, pack, PackedB::bytes)
}

/// `param`'s value, a convolution weight `[m, c, taps]` (row-major, in `data`), as the left
/// operand of [`super::taps::conv_into`]: row `o` holds tap 0's `c` channels padded to a
/// multiple of 32, then tap 1's, and so on.
pub(crate) fn left_taps<const D: usize>(
    param: &Param<Tensor<D>>,
    data: &[f32],
    m: usize,
    c: usize,
    taps: usize,
) -> Arc<PackedA> {
    let pack = || super::taps::pack_weights(data, m, c, taps);
    cached(key(param, data), |c| &mut c.taps, pack, PackedA::bytes)
}

/// `param`'s value, a stride-2 convolution weight `[m, c, kh, kw]` (row-major, in `data`), as
/// the left operand of [`super::taps::conv_into`] over the image's four phases
/// ([`super::taps::phase_weights`]).
pub(crate) fn left_phases<const D: usize>(
    param: &Param<Tensor<D>>,
    data: &[f32],
    m: usize,
    c: usize,
    [kh, kw]: [usize; 2],
) -> Arc<PackedA> {
    let pack = || {
        let w = super::taps::phase_weights(data, m, c, [kh, kw]);
        super::taps::pack_weights(&w, m, 4 * c, kh.div_ceil(2) * kw.div_ceil(2))
    };
    cached(key(param, data), |c| &mut c.taps, pack, PackedA::bytes)
}

/// `param`'s value, a convolution weight `[m, c, taps]` (row-major, in `data`), packed for
/// the f32 tap-offset convolution ([`conv_taps::conv`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn f32_taps<const D: usize>(
    param: &Param<Tensor<D>>,
    data: &[f32],
    m: usize,
    c: usize,
    taps: usize,
) -> Arc<conv_taps::Packed> {
    let pack = || conv_taps::Packed::new(data, m, c, taps);
    cached(
        key(param, data),
        |c| &mut c.f32_taps,
        pack,
        conv_taps::Packed::bytes,
    )
}

/// `param`'s value, a linear weight `[k, n]` (row-major, in `data`), packed for
/// [`linear_packed::linear_into`].
pub(crate) fn f32_right<const D: usize>(
    param: &Param<Tensor<D>>,
    data: &[f32],
    k: usize,
    n: usize,
) -> Arc<linear_packed::PackedW> {
    let pack = || linear_packed::PackedW::new(data, k, n);
    cached(
        key(param, data),
        |c| &mut c.f32_right,
        pack,
        linear_packed::PackedW::bytes,
    )
}

/// `param`'s value, a convolution weight `[c_out, c_in, kh, kw]` (row-major, in `data`), blocked
/// for the direct convolution of `d` ([`direct::conv_finished`]).
pub(crate) fn f32_direct<const D: usize>(
    param: &Param<Tensor<D>>,
    data: &[f32],
    d: &Direct,
) -> Arc<Aligned> {
    let pack = || direct::blocked(data, d);
    cached(
        key(param, data),
        |c| &mut c.f32_direct,
        pack,
        Aligned::bytes,
    )
}
