//! AMX: `tdpbf16ps` multiplies a 16x32 bf16 tile by a 32x16 (pair-interleaved) one into a
//! 16x16 f32 tile. Tile instructions are written as inline assembly (Rust's AMX intrinsics
//! are unstable); the compiler never uses tile registers, so they are ours.

use super::{BLOCK, b_offset};

/// AMX-TILE and AMX-BF16 in CPUID, and Linux's permission for this process to use tile data
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, asked for once: without it the
/// first tile instruction kills the process).
pub(super) fn available() -> bool {
    static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *A.get_or_init(|| {
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (bf16, tile) = (leaf7.edx >> 22 & 1 == 1, leaf7.edx >> 24 & 1 == 1);
        bf16 && tile && request_permission()
    })
}

#[cfg(target_os = "linux")]
fn request_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain syscall; it only changes which register state this process may use.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_permission() -> bool {
    false
}

/// Palette 1, all eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

static CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

/// Loads [`CONFIG`] into this thread's tile configuration, once per thread: nothing else in
/// the process touches tiles, and the OS keeps the configuration across context switches.
fn configure() {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !DONE.get() {
        // SAFETY: `available` was checked by the caller; CONFIG is a valid palette-1 config.
        unsafe {
            std::arch::asm!("ldtilecfg [{cfg}]", cfg = in(reg) CONFIG.0.as_ptr(), options(nostack));
        }
        DONE.set(true);
    }
}

/// `c [32, 32] = a [32, k_pad] x b` (see `super::block`): four accumulator tiles (2x2), two
/// tiles of `a` and two of `b` per step of 32 along k.
///
/// # Safety
/// [`available`] is true, and the slices hold what `super::block` asserts.
pub(super) unsafe fn block(
    a: &[u16],
    b: &[u16],
    jb: usize,
    k_pad: usize,
    c: &mut [f32; BLOCK * BLOCK],
) {
    assert!(k_pad.is_multiple_of(32));
    configure();
    // SAFETY: rows 0..32 of `a` (32 bf16 each step, k_pad/32 steps, rows k_pad apart) and the
    // tiles of column blocks jb, jb + 1 of `b` (1 KB each step), all inside the slices (the
    // caller's contract). The caller guarantees AMX is usable.
    unsafe {
        zero_accumulators();
        let (a0, b0) = (a.as_ptr(), b.as_ptr().add(b_offset(0, jb, k_pad)));
        let b1 = b.as_ptr().add(b_offset(0, jb + 1, k_pad));
        let a = Side {
            first: a0,
            second: a0.add(512),
            stride: 64,
            step: 2048,
        };
        let b = Side {
            first: b0,
            second: b1,
            stride: 64,
            step: 1024,
        };
        // Every other block of a row panel runs k backwards, starting with the steps the
        // block before it read last (still in L1: a 32-row panel of k = 768 fills L1 by
        // itself). ViT-B/16's layers at batch 8, alternated call by call, three runs:
        // 1.00-1.04x, none slower.
        let steps = k_pad / 32;
        if (jb / 2) % 2 == 1 && steps > 0 {
            accumulate(a.reversed(steps), b.reversed(steps), steps);
        } else {
            accumulate(a, b, steps);
        }
        store_accumulators(c);
    }
}

impl Side {
    /// The same tiles from the last step back to the first.
    ///
    /// # Safety
    /// `steps` steps of this side are readable.
    unsafe fn reversed(self, steps: usize) -> Side {
        let back = (steps - 1) * self.step / 2;
        // SAFETY: the last step's tiles lie inside what the forward order reads.
        unsafe {
            Side {
                first: self.first.add(back),
                second: self.second.add(back),
                stride: self.stride,
                step: self.step.wrapping_neg(),
            }
        }
    }
}

/// `c [32, 32] = sum over taps t of a_t [32, kc_pad] x image[.., j0 + offs[t] ..][.. 32]`: one
/// output block of a stride-1 convolution (see `super::taps`), the taps accumulated in the
/// same four tiles. `a` is a 32-row panel of rows `ka` long (tap `t`'s channels at
/// `t * kc_pad`); `image` holds `kc_pad / 2` channel pairs of `len` interleaved columns.
///
/// # Safety
/// [`available`] is true; `a` holds `32 * ka` elements with `ka >= offs.len() * kc_pad`;
/// `image` holds `kc_pad / 2 * len * 2` elements and `j0 + 32 + max(offs) <= len`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn block_taps(
    a: &[u16],
    ka: usize,
    kc_pad: usize,
    image: &[u16],
    len: usize,
    j0: usize,
    offs: &[usize],
    c: &mut [f32; BLOCK * BLOCK],
) {
    assert!(kc_pad.is_multiple_of(32) && a.len() >= BLOCK * ka && ka >= offs.len() * kc_pad);
    assert!(image.len() >= kc_pad * len && offs.iter().all(|o| j0 + BLOCK + o <= len));
    configure();
    // SAFETY: per tap and step, tiles of rows 0..32 of `a` at columns t * kc_pad + 32 s (32
    // bf16 each, inside the rows) and of 16 channel pairs of `image` at columns j0 + off ..
    // + 32 (64 bytes per pair, inside `len`): all asserted above. AMX is usable (the caller).
    unsafe {
        zero_accumulators();
        for (t, &off) in offs.iter().enumerate() {
            let (a0, b0) = (
                a.as_ptr().add(t * kc_pad / 32 * 1024),
                image.as_ptr().add((j0 + off) * 2),
            );
            let a = Side {
                first: a0,
                second: a0.add(512),
                stride: 64,
                step: 2048,
            };
            let b = Side {
                first: b0,
                second: b0.add(32),
                stride: len * 4,
                step: 64 * len,
            };
            accumulate(a, b, kc_pad / 32);
        }
        store_accumulators(c);
    }
}

/// Where one operand's two tiles of each step are read: the first and second tile's start,
/// the bytes between a tile's rows, and the bytes from one step to the next (as two's
/// complement when k runs backwards, see [`Side::reversed`]).
#[derive(Clone, Copy)]
struct Side {
    first: *const u16,
    second: *const u16,
    stride: usize,
    step: usize,
}

/// Zeroes the four accumulator tiles (tmm0-3). No other code uses tile registers, so they
/// keep their values from one asm block to the next.
///
/// # Safety
/// AMX is usable and this thread's tiles are configured.
unsafe fn zero_accumulators() {
    // SAFETY: the caller's contract.
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
    }
}

/// `steps` steps of 32 along k into the accumulators: per step, the tiles of `a` (rows 0-15
/// and 16-31) times those of `b` (columns 0-15 and 16-31), 2x2. Software-pipelined: each tile
/// of the next step is loaded as soon as this step's last product reading it has been
/// issued, so the loads (from L2: the operands of a 32x32 block do not fit L1) overlap the
/// remaining products instead of all four waiting at the top of the step. Against the
/// four-loads-then-four-products loop, alternated call by call (`examples/bf16_rate.rs`,
/// ViT-B/16's layers at batch 8): qkv 1.17-1.25x, attention proj 1.07-1.24x, fc2 1.15-1.17x,
/// fc1 1.00-1.08x.
///
/// # Safety
/// As [`zero_accumulators`]; every tile `a` and `b` describe over `steps` steps is readable.
unsafe fn accumulate(a: Side, b: Side, steps: usize) {
    if steps == 0 {
        return;
    }
    // SAFETY: the caller's contract; the loop loads step s + 1's tiles only while s + 1 <
    // steps (the last step's products run after it).
    unsafe {
        std::arch::asm!(
            "tileloadd tmm4, [{a0} + {lda}]",
            "tileloadd tmm6, [{b0} + {ldb}]",
            "tileloadd tmm7, [{b1} + {ldb}]",
            "tileloadd tmm5, [{a1} + {lda}]",
            "dec {steps}",
            "jz 3f",
            "2:",
            "add {a0}, {astep}",
            "add {a1}, {astep}",
            "add {b0}, {bstep}",
            "add {b1}, {bstep}",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm4, [{a0} + {lda}]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tileloadd tmm6, [{b0} + {ldb}]",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm7, [{b1} + {ldb}]",
            "tileloadd tmm5, [{a1} + {lda}]",
            "dec {steps}",
            "jnz 2b",
            "3:",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = inout(reg) a.first => _,
            a1 = inout(reg) a.second => _,
            b0 = inout(reg) b.first => _,
            b1 = inout(reg) b.second => _,
            astep = in(reg) a.step,
            bstep = in(reg) b.step,
            steps = inout(reg) steps => _,
            lda = in(reg) a.stride,
            ldb = in(reg) b.stride,
            options(nostack, readonly),
        );
    }
}

/// Stores the accumulators into `c`'s 32 x 32 floats (rows of 128 bytes).
///
/// # Safety
/// As [`zero_accumulators`].
unsafe fn store_accumulators(c: &mut [f32; BLOCK * BLOCK]) {
    // SAFETY: the caller's contract; the stores stay inside `c`.
    unsafe {
        std::arch::asm!(
            "tilestored [{c} + {ldc}], tmm0",
            "add {c}, 64",
            "tilestored [{c} + {ldc}], tmm1",
            "add {c}, 1984",
            "tilestored [{c} + {ldc}], tmm2",
            "add {c}, 64",
            "tilestored [{c} + {ldc}], tmm3",
            c = inout(reg) c.as_mut_ptr() => _,
            ldc = in(reg) BLOCK * 4,
            options(nostack),
        );
    }
}
