//! The C allocator, tuned for tensors.
//!
//! Why: glibc by default gives freed blocks of a few MB back to the kernel (each block above
//! a threshold is its own mapping, and the heap's top is trimmed past another), so the next
//! activation of the same size page-faults all of its pages in again, and every unmap sends
//! TLB-shootdown interrupts to the other threads (VM exits on this kind of machine). Those
//! kernel paths took ~10 % of an EfficientNet-B0 forward at batch 8 on 2 threads; keeping the
//! memory made it 1.2-1.5x faster (docs/benchmarks.md). The price: the process keeps the
//! memory of its largest step until it exits, which a CLI run does soon after.

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
