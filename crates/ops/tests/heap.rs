//! The allocator tuning, checked through glibc's own statistics (its own process: the
//! setting is global).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn freed_activation_sized_blocks_stay_for_reuse() {
    use committee_ops::heap::{HeapTuning, keep_freed_memory};
    const SIZE: usize = 20 << 20;
    // The test's environment must not preset glibc's malloc tunables.
    assert_eq!(keep_freed_memory(), HeapTuning::Applied);
    let stats = || unsafe { libc::mallinfo2() };
    let before = stats();
    let block = std::hint::black_box(vec![1u8; SIZE]);
    let during = stats();
    // From the heap, not a mapping of its own (glibc's default for blocks this size).
    assert_eq!(during.hblkhd, before.hblkhd, "a 20 MB block was mmapped");
    drop(block);
    let after = stats();
    // Freed but kept: the heap did not shrink and holds the block as free bytes.
    assert_eq!(after.arena, during.arena, "the heap was trimmed");
    assert!(
        after.fordblks >= SIZE,
        "free heap bytes {}: the block went back to the kernel",
        after.fordblks
    );
    let again = std::hint::black_box(vec![2u8; SIZE]);
    assert_eq!(stats().arena, after.arena, "the second block grew the heap");
    drop(again);
}
