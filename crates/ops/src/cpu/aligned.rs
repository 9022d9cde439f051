//! Buffers aligned to cache lines.

use std::mem::MaybeUninit;

/// A buffer whose elements start on a 64-byte boundary, so that every vector load lies inside
/// one cache line. Why: from wherever the allocator put a vector, each 64-byte load straddled
/// two lines (the same packed f32 product ran 1.5x apart from one process to the next).
pub(crate) struct Aligned<T = f32> {
    data: Vec<T>,
    at: usize,
}

/// Elements past the allocator's start the first 64-byte boundary can lie (the allocator
/// aligns to the element at least).
fn slack<T>() -> usize {
    64 / std::mem::size_of::<T>() - 1
}

impl<T: Copy + Default> Aligned<T> {
    /// `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Aligned<T> {
        let slack = slack::<T>();
        let data = vec![T::default(); len + slack];
        let at = data.as_ptr().align_offset(64).min(slack);
        Aligned { data, at }
    }

    /// `len` elements that `fill` writes whole (each one, none read first). Why: zeroed
    /// first, a blocked weight of ResNet's last stage (9.4 MB) was one more pass over memory.
    pub(crate) fn written(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Aligned<T> {
        let slack = slack::<T>();
        let mut data: Vec<T> = Vec::with_capacity(len + slack);
        let at = data.as_ptr().align_offset(64).min(slack);
        let spare = data.spare_capacity_mut();
        spare[..at].fill(MaybeUninit::new(T::default()));
        fill(&mut spare[at..at + len]);
        // SAFETY: the slack before `at` was filled here, the `len` elements after it by
        // `fill` (its contract).
        unsafe { data.set_len(at + len) };
        Aligned { data, at }
    }

    pub(crate) fn get(&self) -> &[T] {
        &self.data[self.at..]
    }

    pub(crate) fn get_mut(&mut self) -> &mut [T] {
        &mut self.data[self.at..]
    }

    /// Bytes allocated.
    pub(crate) fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<T>()
    }
}
