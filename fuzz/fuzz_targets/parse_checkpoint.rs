//! Fuzzes the checkpoint parser: any bytes must give a checkpoint or an error, never a panic.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run parse_checkpoint -- -max_total_time=300`
//! (cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them).
#![no_main]

#[path = "../../crates/zoo/src/checkpoint.rs"]
mod checkpoint;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = checkpoint::parse_safetensors(data) {
        for t in ck.tensors.values() {
            assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
        }
    }
});
