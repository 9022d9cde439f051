//! The C allocator, tuned for tensors.
//!
//! Why: glibc by default gives freed blocks of a few MB back to the kernel (each block above
//! a threshold is its own mapping, and the heap's top is trimmed past another), so the next
//! activation of the same size page-faults all of its pages in again, and every unmap sends
//! TLB-shootdown interrupts to the other threads (VM exits on this kind of machine). Those
//! kernel paths took ~10 % of an EfficientNet-B0 forward at batch 8 on 2 threads; keeping the
//! memory made it 1.2-1.5x faster (docs/benchmarks.md). The price: the process keeps the
//! memory of its largest step until it exits, which a CLI run does soon after.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks up to this size come from the heap and are reused; glibc's largest allowed value
/// on 64-bit (`DEFAULT_MMAP_THRESHOLD_MAX`). Larger ones stay separate mappings.
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Freed memory at the heap's top is kept up to this much (the largest value `mallopt`'s
/// `int` takes, 2 GiB).
pub const TRIM_THRESHOLD: usize = i32::MAX as usize;

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapTuning {
    /// Both thresholds set.
    Applied,
    /// `GLIBC_TUNABLES` names a `glibc.malloc` setting: the user's choice stands.
    UserTunables,
    /// Not glibc (musl, macOS, Windows): nothing to do.
    Unsupported,
    /// glibc refused a value (it returns 0 for out-of-range values).
    Refused,
}

/// Makes glibc keep freed memory for reuse instead of returning it to the kernel (see the
/// module doc). Call once at start-up, before threads allocate. Setting either threshold
/// also turns off glibc's own adaptive threshold, so both are set, never one alone (one
/// alone measured slower than the default).
pub fn keep_freed_memory() -> HeapTuning {
    // Large blocks are kept by [`KeepLarge`] where it is the global allocator.
    keep_large_blocks(std::env::var("COMMITTEE_KEEP_LARGE_BLOCKS").map_or(true, |v| v != "0"));
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc")) {
        return HeapTuning::UserTunables;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> HeapTuning {
    // SAFETY: mallopt only changes allocator parameters; both values are in range for
    // 64-bit glibc (checked by its return value).
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    };
    if ok {
        HeapTuning::Applied
    } else {
        HeapTuning::Refused
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> HeapTuning {
    HeapTuning::Unsupported
}

/// The global allocator the CLI installs: the system's, except that freed blocks of
/// [`MMAP_THRESHOLD`] or more are kept for the next request of their size class instead of
/// being unmapped. Why: glibc cannot keep those (32 MB is the largest threshold it takes),
/// so each such activation (MobileNetV2's and EfficientNet-B0's 96-channel 112x112 maps at
/// batch 8: 38.5 MB) was mapped afresh and its pages faulted in and zeroed by the kernel on
/// every use: `perf` put 10-14 % of a MobileNetV2 training step in those kernel paths.
/// Kept blocks are rounded up to [`CLASS`] (so nearly equal sizes share them), at most
/// [`SLOTS`] of them and [`MAX_KEPT`] bytes; [`keep_freed_memory`] turns the keeping on
/// (`COMMITTEE_KEEP_LARGE_BLOCKS=0` leaves it off).
pub struct KeepLarge;

/// Size classes of kept blocks.
pub const CLASS: usize = 2 << 20;
/// Blocks kept at most.
pub const SLOTS: usize = 64;
/// Bytes kept at most (glibc's own trim threshold above).
pub const MAX_KEPT: usize = TRIM_THRESHOLD;
/// Alignment of the large blocks (a request for more bypasses the pool).
const ALIGN: usize = 64;

static KEEP: AtomicBool = AtomicBool::new(false);

/// Kept blocks: `(address, size)`, `size` 0 for an empty slot.
struct Pool {
    blocks: [(usize, usize); SLOTS],
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    blocks: [(0, 0); SLOTS],
    bytes: 0,
});

/// Turns keeping freed large blocks on or off (blocks already kept stay kept).
pub fn keep_large_blocks(on: bool) {
    KEEP.store(on, Ordering::Relaxed);
}

/// The layout a large block is allocated and freed with: its size rounded up to a class,
/// 64-byte aligned; `None` for other requests. Independent of [`KEEP`], so that a block is
/// freed with the layout it was allocated with whenever the switch changes.
fn large(layout: Layout) -> Option<Layout> {
    if layout.size() < MMAP_THRESHOLD || layout.align() > ALIGN {
        return None;
    }
    Layout::from_size_align(layout.size().next_multiple_of(CLASS), ALIGN).ok()
}

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // The pool is consistent after every statement: a poisoned lock is still usable.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A kept block of exactly `size` bytes, taken out of the pool.
fn take(size: usize) -> Option<*mut u8> {
    if !KEEP.load(Ordering::Relaxed) {
        return None;
    }
    let mut p = pool();
    let slot = p.blocks.iter().position(|&(_, s)| s == size)?;
    let (addr, _) = std::mem::take(&mut p.blocks[slot]);
    p.bytes -= size;
    Some(addr as *mut u8)
}

/// Keeps a freed block; `false` when it is not kept (switched off, or the pool is full).
fn keep(ptr: *mut u8, size: usize) -> bool {
    if !KEEP.load(Ordering::Relaxed) {
        return false;
    }
    let mut p = pool();
    if p.bytes + size > MAX_KEPT {
        return false;
    }
    let Some(slot) = p.blocks.iter().position(|&(_, s)| s == 0) else {
        return false;
    };
    p.blocks[slot] = (ptr as usize, size);
    p.bytes += size;
    true
}

// SAFETY: every block comes from `System` with the layout it is freed with (`large` maps a
// request to the same layout on both sides); a kept block is handed to one caller at a time
// (taken out of the pool under its lock) and only for a request whose layout maps to the
// same size and alignment.
unsafe impl GlobalAlloc for KeepLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match large(layout) {
            Some(l) => take(l.size()).unwrap_or_else(|| unsafe { System.alloc(l) }),
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match large(layout) {
            Some(l) => match take(l.size()) {
                Some(p) => {
                    // SAFETY: the kept block holds `l.size() >= layout.size()` bytes.
                    unsafe { p.write_bytes(0, layout.size()) };
                    p
                }
                None => unsafe { System.alloc_zeroed(l) },
            },
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match large(layout) {
            Some(l) => {
                if !keep(ptr, l.size()) {
                    unsafe { System.dealloc(ptr, l) }
                }
            }
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align(new_size, layout.align());
        match new {
            // Neither side large: the system's own (in place where it can).
            Ok(n) if large(layout).is_none() && large(n).is_none() => unsafe {
                System.realloc(ptr, layout, new_size)
            },
            // Both in one size class: the block already holds the new size.
            Ok(n) if large(layout).is_some() && large(layout) == large(n) => ptr,
            Ok(n) => {
                // SAFETY: a fresh block of the new layout, the old one's bytes copied (the
                // shorter of the two), then the old one freed with its own layout.
                unsafe {
                    let p = self.alloc(n);
                    if !p.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    p
                }
            }
            Err(_) => std::ptr::null_mut(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept_bytes() -> usize {
        pool().bytes
    }

    /// A freed large block comes back for the next request of its size class (zeroed where
    /// asked), smaller and over-aligned requests never enter the pool, nothing is kept while
    /// switched off, and a reallocation across the threshold keeps the bytes.
    #[test]
    fn large_blocks_are_kept_and_reused() {
        let a = KeepLarge;
        let big = Layout::from_size_align(MMAP_THRESHOLD + 5, 16).expect("layout");
        let same_class = Layout::from_size_align(MMAP_THRESHOLD + 1000, 8).expect("layout");
        keep_large_blocks(true);
        let before = kept_bytes();
        // SAFETY: each block is used within its layout and freed once with that layout.
        unsafe {
            let p = a.alloc(big);
            assert!(!p.is_null());
            p.write_bytes(7, big.size());
            a.dealloc(p, big);
            assert_eq!(kept_bytes(), before + big.size().next_multiple_of(CLASS));
            let q = a.alloc_zeroed(same_class);
            assert_eq!(q, p, "the kept block comes back for its size class");
            assert_eq!(kept_bytes(), before);
            assert!(
                std::slice::from_raw_parts(q, same_class.size())
                    .iter()
                    .all(|&b| b == 0)
            );
            // Grown from small to large and shrunk back: the bytes travel.
            let small = Layout::from_size_align(4096, 8).expect("layout");
            let r = a.alloc(small);
            r.write_bytes(3, 4096);
            let r = a.realloc(r, small, MMAP_THRESHOLD + 7);
            assert!(std::slice::from_raw_parts(r, 4096).iter().all(|&b| b == 3));
            // Within its size class a block stays where it is.
            let class = Layout::from_size_align(MMAP_THRESHOLD + 7, 8).expect("layout");
            assert_eq!(a.realloc(r, class, MMAP_THRESHOLD + 9), r);
            let grown = Layout::from_size_align(MMAP_THRESHOLD + 9, 8).expect("layout");
            let r = a.realloc(r, grown, 100);
            assert!(std::slice::from_raw_parts(r, 100).iter().all(|&b| b == 3));
            a.dealloc(r, Layout::from_size_align(100, 8).expect("layout"));
            let kept = kept_bytes();
            // Over-aligned and small blocks bypass the pool.
            let aligned = Layout::from_size_align(MMAP_THRESHOLD, 4096).expect("layout");
            let s = a.alloc(aligned);
            a.dealloc(s, aligned);
            assert_eq!(kept_bytes(), kept);
            // Switched off: freed blocks go back to the system.
            keep_large_blocks(false);
            a.dealloc(q, same_class);
            assert_eq!(kept_bytes(), kept);
        }
        keep_large_blocks(true);
    }
}
