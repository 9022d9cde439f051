//! Matrix products with bf16 operands and f32 accumulation (`--dtype bf16` on flex).
//!
//! Why: PyTorch's best CPU configuration (bf16 autocast) ran 1.6-3x faster than our f32 on a
//! Xeon with AMX (issue 20). One instruction does a 16x16x32 product on AMX tiles
//! (`tdpbf16ps`) and a 16-lane pair-wise dot on AVX512-BF16 (`vdpbf16ps`); both accumulate in
//! f32. The kernel is picked at run time ([`Bf16Kernel::detect`]); a CPU with neither keeps
//! f32 (emulating bf16 there would be slower than f32 and no closer to anything).
//!
//! Operands are packed once into the layouts the instructions read: the left one as rows of
//! bf16 padded to 32 rows and 32 columns ([`PackedA`]), the right one as blocks of 16 columns
//! with pairs of rows interleaved ([`PackedB`], the "VNNI" layout). Weights are packed at
//! their first use and kept ([`cache`]); activations are packed per call.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod cache;
#[cfg(target_arch = "x86_64")]
pub mod taps;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::isa::{Epilogue, Isa, epilogue};

/// Rows and columns of one output block (2x2 AMX tiles of 16x16).
const BLOCK: usize = 32;
/// Columns of one packed right-operand block: one AMX tile's / one zmm register's width.
const NB: usize = 16;
/// Where row pair `p` of column block `jb` (of 16 columns) of a packed right operand starts:
/// each column block's `k_pad / 2` row pairs contiguous.
fn b_offset(p: usize, jb: usize, k_pad: usize) -> usize {
    jb * k_pad * NB + p * 2 * NB
}

/// Which instructions run the bf16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX tiles (`tdpbf16ps`): Intel Sapphire Rapids and later.
    Amx,
    /// AVX512-BF16 (`vdpbf16ps`): Intel Cooper Lake and later, AMD Zen 4 and later.
    Avx512,
    /// Plain f32 arithmetic on the bf16 values: the reference the tests compare the others
    /// with, and a way to check the packing on any CPU. Never chosen by [`detect`](Self::detect).
    Emulated,
}

impl Bf16Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Bf16Kernel; 3] = [Self::Amx, Self::Avx512, Self::Emulated];

    /// The kernel [`name`](Self::name) calls `name`.
    pub fn from_name(name: &str) -> Option<Bf16Kernel> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The fastest kernel this CPU and OS allow, or `None` (then products stay in f32).
    pub fn detect() -> Option<Bf16Kernel> {
        static K: std::sync::OnceLock<Option<Bf16Kernel>> = std::sync::OnceLock::new();
        *K.get_or_init(|| {
            if Self::Amx.available() {
                Some(Self::Amx)
            } else if Self::Avx512.available() {
                Some(Self::Avx512)
            } else {
                None
            }
        })
    }

    /// Whether this kernel can run here (AMX also needs the kernel's permission for the
    /// process, asked for once).
    pub fn available(self) -> bool {
        match self {
            Self::Emulated => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => avx512::available(),
            #[cfg(target_arch = "x86_64")]
            Self::Amx => avx512::available() && amx::available(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The name `COMMITTEE_BF16_KERNEL` and the printouts use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Amx => "amx",
            Self::Avx512 => "avx512-bf16",
            Self::Emulated => "emulated",
        }
    }
}

/// `x` rounded to the nearest bf16 (ties to even), NaN kept quiet: PyTorch's `c10::BFloat16`.
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        ((b >> 16) | 0x40) as u16
    } else {
        (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// An activation's element as the kernels read and write it: f32, or bf16 as its bits (`u16`;
/// `--dtype bf16` keeps a ResNet's activations in bf16 between layers, as PyTorch's autocast
/// does). Why: in f32, each layer's output and the next one's packing moved twice the bytes
/// PyTorch moves, and a bottleneck's 1x1 convolutions are bound by those bytes.
pub trait Elem: Copy + Default + Send + Sync + 'static + sealed::Sealed {
    /// Whether this is bf16 (known at compile time: the kernels branch on it for free).
    const BF16: bool;
    fn to_f32(self) -> f32;
    /// `v` as this type (rounded to the nearest bf16 for bf16).
    fn from_f32(v: f32) -> Self;
    /// `x` as the slice it is, for code written once per element type.
    fn view(x: &[Self]) -> View<'_>;
    fn view_mut(x: &mut [Self]) -> ViewMut<'_>;
}

/// A slice of [`Elem`]s as what it is.
pub enum View<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

/// A mutable slice of [`Elem`]s as what it is.
pub enum ViewMut<'a> {
    F32(&'a mut [f32]),
    Bf16(&'a mut [u16]),
}

mod sealed {
    /// Only f32 and u16 (bf16's bits) are elements: the tensor conversions rely on it.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u16 {}
}

impl Elem for f32 {
    const BF16: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    fn view(x: &[f32]) -> View<'_> {
        View::F32(x)
    }
    fn view_mut(x: &mut [f32]) -> ViewMut<'_> {
        ViewMut::F32(x)
    }
}

impl Elem for u16 {
    const BF16: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        from_bf16(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        to_bf16(v)
    }
    fn view(x: &[u16]) -> View<'_> {
        View::Bf16(x)
    }
    fn view_mut(x: &mut [u16]) -> ViewMut<'_> {
        ViewMut::Bf16(x)
    }
}

/// `src` rounded to bf16 into `dst` (same length), vectorised where AVX512-BF16 exists.
pub(crate) fn convert(src: &[f32], dst: &mut [u16]) {
    assert!(dst.len() >= src.len(), "destination too short");
    // SAFETY: `dst` holds `src.len()` elements.
    unsafe { convert_to(src, dst.as_mut_ptr()) }
}

/// [`convert`] into `src.len()` elements at `dst`, which need not be initialised.
///
/// # Safety
/// `dst` is valid for `src.len()` writes.
unsafe fn convert_to(src: &[f32], dst: *mut u16) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the features it enables were detected; the caller's contract.
        return unsafe { avx512::convert(src, dst) };
    }
    for (i, s) in src.iter().enumerate() {
        // SAFETY: the caller's contract.
        unsafe { dst.add(i).write(to_bf16(*s)) };
    }
}

/// Where element `(r, kk)` of a packed left operand lies ([`PackedA`]'s layout): panels of 32
/// rows, each a run of steps of 32 columns, each step two 16 x 32 tiles (rows 0-15, then
/// 16-31) of 1 KB, every tile contiguous. Why: AMX then loads a tile as one piece; loading it
/// from rows `k_pad` apart ran 1.01-1.27x slower with the operands in L2 (a probe of the
/// block kernel, two threads, alternated).
#[inline(always)]
fn a_offset(r: usize, kk: usize, k_pad: usize) -> usize {
    (r / BLOCK) * BLOCK * k_pad
        + (kk / 32) * 1024
        + (r % BLOCK / 16) * 512
        + (r % 16) * 32
        + kk % 32
}

/// Zeros in one packed panel of 32 rows (see [`a_offset`]) wherever no value goes: rows from
/// `rows` on, and in the rows below, columns `k..seg` of each segment of `seg` columns (one
/// segment, `seg == k_pad`, but for [`PackedA::pack_segments`]). Why not zero the whole
/// operand first: that was a pass over it (2 % of ViT-B/16's bf16 forward in `memset`) whose
/// zeros the packing then overwrote.
fn zero_padding(panel: &mut [MaybeUninit<u16>], rows: usize, k: usize, [seg, k_pad]: [usize; 2]) {
    let zero = MaybeUninit::new(0);
    for r in 0..BLOCK {
        for s0 in (0..k_pad).step_by(seg.max(1)) {
            // Rows with values: the tail of each segment's last step; the rest: every step.
            let mut kk = s0 + if r < rows { k } else { 0 };
            while kk < s0 + seg {
                let at = a_offset(r, kk, k_pad);
                let run = 32 - kk % 32;
                panel[at..at + run].fill(zero);
                kk += run;
            }
        }
    }
}

/// The inner dimension of a packed operand made of segments (one per image, see
/// [`PackedA::pack_segments`] and [`PackedB::pack_transposed_segments`]).
struct Segments {
    /// One segment's `k`, rounded up to 32.
    seg: usize,
    /// All segments' padded length.
    k_pad: usize,
    /// The operand's `k`: the segment's own for one segment, else the padded whole (the
    /// zeros between segments are part of it).
    k_all: usize,
}

impl Segments {
    /// The layout of `segs`, after checking that each holds `lines` lines of `k` values `ld`
    /// apart: the rows of a left operand, the columns of a right one (`[side, line]`).
    fn check(segs: &[&[f32]], lines: usize, k: usize, ld: usize, names: [&str; 2]) -> Segments {
        let [side, line] = names;
        assert!(ld >= k, "{line} stride shorter than a {line}");
        for src in segs {
            assert!(
                lines == 0 || src.len() >= (lines - 1) * ld + k,
                "{side} operand too short"
            );
        }
        let seg = k.div_ceil(BLOCK) * BLOCK;
        let k_pad = segs.len() * seg;
        let k_all = if segs.len() == 1 { k } else { k_pad };
        Segments { seg, k_pad, k_all }
    }
}

/// The left operand `[m, k]` in bf16: `k_pad` columns (a multiple of 32, zeros past `k`),
/// `m_pad` rows (a multiple of 32, zero rows past `m`), laid out in tiles (see [`a_offset`]).
pub struct PackedA {
    data: Vec<u16>,
    m: usize,
    k: usize,
    k_pad: usize,
}

impl PackedA {
    /// Packs the row-major `[m, k]` matrix in `src`'s first `m * k` elements.
    pub fn pack(src: &[f32], m: usize, k: usize) -> PackedA {
        Self::pack_strided(src, m, k, k)
    }

    /// Packs the `[m, k]` matrix whose row `r` is `src[r * ld..][..k]`: columns `k0..k0 + k` of
    /// a wider row-major matrix (`&src[k0..]`, `ld` its width), so a long product can be
    /// split along `k` into blocks whose panels stay in cache.
    pub fn pack_strided(src: &[f32], m: usize, k: usize, ld: usize) -> PackedA {
        Self::pack_segments(&[src], m, k, ld)
    }

    /// Packs the `[m, segs.len() * seg]` matrix whose columns are the segments' `[m, k]`
    /// matrices (row `r` of segment `s` at `segs[s][r * ld..][..k]`) side by side, each
    /// padded with zeros to `seg = k` rounded up to 32: a sum of products over several images
    /// as one product (with [`PackedB::pack_transposed_segments`]). One segment is
    /// [`PackedA::pack_strided`].
    pub fn pack_segments(segs: &[&[f32]], m: usize, k: usize, ld: usize) -> PackedA {
        let Segments { seg, k_pad, k_all } = Segments::check(segs, m, k, ld, ["left", "row"]);
        let m_pad = m.div_ceil(BLOCK) * BLOCK;
        let len = m_pad * k_pad;
        let mut data = Vec::with_capacity(len);
        if k > 0 {
            data.spare_capacity_mut()[..len]
                .par_chunks_mut(BLOCK * k_pad)
                .enumerate()
                .for_each(|(pb, panel)| {
                    let rows = (m - pb * BLOCK).min(BLOCK);
                    for r in 0..rows {
                        for (si, src) in segs.iter().enumerate() {
                            let row = &src[(pb * BLOCK + r) * ld..][..k];
                            for (s, part) in row.chunks(32).enumerate() {
                                let at = a_offset(r, si * seg + 32 * s, k_pad);
                                // SAFETY: the step's run of 32 lies inside the panel.
                                unsafe { convert_to(part, panel[at..at + 32].as_mut_ptr().cast()) };
                            }
                        }
                    }
                    zero_padding(panel, rows, k, [seg, k_pad]);
                });
        }
        // SAFETY: every panel's rows were converted and its padding zeroed (`zero_padding`),
        // covering all `len` elements (none when `k` is 0).
        unsafe { data.set_len(len) };
        PackedA {
            data,
            m,
            k: k_all,
            k_pad,
        }
    }

    /// Packs the transpose of the row-major `[k, m]` matrix in `src` (a weight gradient's
    /// `X^T`, a backward product's `W^T`) in 32x32 tiles converted straight into place: an
    /// f32 transpose first cost as much as the packing again and missed the cache on every
    /// store.
    pub fn pack_transposed(src: &[f32], m: usize, k: usize) -> PackedA {
        assert!(src.len() >= m * k, "left operand too short");
        let (m_pad, k_pad) = (m.div_ceil(BLOCK) * BLOCK, k.div_ceil(BLOCK) * BLOCK);
        let mut data = vec![0u16; m_pad * k_pad];
        if m == 0 || k == 0 {
            return PackedA { data, m, k, k_pad };
        }
        // Task `b` owns rows `32 b..` (source columns); a tile holds 32 source rows of them.
        data.par_chunks_mut(BLOCK * k_pad)
            .take(m.div_ceil(BLOCK))
            .enumerate()
            .for_each(|(b, rows)| {
                let (i0, w) = (b * BLOCK, (m - b * BLOCK).min(BLOCK));
                let mut tile = [0u16; BLOCK * BLOCK];
                for p0 in (0..k).step_by(BLOCK) {
                    let h = (k - p0).min(BLOCK);
                    for (pp, t) in tile.chunks_exact_mut(BLOCK).take(h).enumerate() {
                        convert(&src[(p0 + pp) * m + i0..][..w], &mut t[..w]);
                    }
                    for ii in 0..w {
                        let at = a_offset(ii, p0, k_pad);
                        for (pp, v) in rows[at..at + h].iter_mut().enumerate() {
                            *v = tile[pp * BLOCK + ii];
                        }
                    }
                }
            });
        PackedA { data, m, k, k_pad }
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }
}

/// The right operand `[k, n]`: blocks of 16 columns, each `[k_pad / 2][16][2]` bf16 (rows
/// `2p` and `2p + 1` of a column side by side), `k_pad` a multiple of 32, zeros past `k` and
/// `n`, and an even number of blocks (an output block is 32 columns wide). A block's column
/// panel is contiguous: the product streams it (with 16-row-pair tiles strided across the
/// operand instead, ViT's fc1 product ran 1.9x slower).
pub struct PackedB {
    data: Vec<u16>,
    k: usize,
    n: usize,
    k_pad: usize,
}

impl PackedB {
    /// Packs the row-major `[k, n]` matrix in `src`'s first `k * n` elements, each row pair
    /// woven straight from `src` (through a copy first, the copy was 17 % of MobileNetV2's
    /// bf16 forward: the row comes from memory either way, the copy's write was extra).
    pub fn pack<T: Elem>(src: &[T], k: usize, n: usize) -> PackedB {
        assert!(src.len() >= k * n, "right operand too short");
        Self::pack_pairs(k, n, |p, _, weave| {
            let row = |r: usize| &src[r * n..][..n];
            weave(row(2 * p), (2 * p + 1 < k).then(|| row(2 * p + 1)));
        })
    }

    /// Packs the `[k, n]` matrix whose row `r` `fill(r, row)` writes (all `n` of it): a
    /// convolution's unfolded image, one row pair at a time in two small buffers instead of
    /// the whole f32 matrix first (which for a 3x3 convolution is 9x the image).
    pub fn pack_rows<T: Elem>(
        k: usize,
        n: usize,
        fill: impl Fn(usize, &mut [T]) + Sync,
    ) -> PackedB {
        Self::pack_pairs(k, n, |p, (r0, r1), weave| {
            fill(2 * p, r0);
            let has_r1 = 2 * p + 1 < k;
            if has_r1 {
                fill(2 * p + 1, r1);
            }
            weave(r0, has_r1.then_some(&r1[..]));
        })
    }

    /// Packs the `[k, n]` matrix whose row pair `p` (rows `2p` and `2p + 1`, the second
    /// absent past `k`) `pair(p, buffers, weave)` hands to `weave`, borrowed from its input or
    /// written into the two `n`-long buffers it is given.
    fn pack_pairs<T: Elem>(
        k: usize,
        n: usize,
        pair: impl Fn(usize, &mut Rows<T>, Weave<T>) + Sync,
    ) -> PackedB {
        let (n_pad, k_pad) = (n.div_ceil(BLOCK) * BLOCK, k.div_ceil(BLOCK) * BLOCK);
        let len = n_pad * k_pad;
        let mut data: Vec<u16> = Vec::with_capacity(len);
        let out = Out16(data.as_mut_ptr());
        // Zeros only where no row pair is woven: the pairs past `k` in each woven column
        // block, and the blocks past `n` (zeroing all of it first was 3-6 % of a ResNet
        // bottleneck's 1x1 convolution, every element then written again).
        let (pairs, blocks) = (k.div_ceil(2), n.div_ceil(NB));
        // SAFETY: each range lies inside the `len` elements of `data`'s allocation.
        unsafe {
            for jb in 0..blocks {
                let from = b_offset(pairs, jb, k_pad);
                out.get()
                    .add(from)
                    .write_bytes(0, b_offset(0, jb + 1, k_pad) - from);
            }
            let from = b_offset(0, blocks, k_pad);
            out.get().add(from).write_bytes(0, len - from);
        }
        (0..pairs).into_par_iter().for_each_init(
            || (vec![T::default(); n], vec![T::default(); n]),
            // SAFETY: row pair `p` of every column block: inside `data` (n_pad * k_pad
            // long, the rows `n` long), written by this task alone.
            |bufs, p| {
                pair(p, bufs, &mut |r0, r1| unsafe {
                    weave(r0, r1, out.get(), p, k_pad)
                })
            },
        );
        // SAFETY: the woven row pairs (every column of the woven blocks, zeros past `n`)
        // and the zeros above cover all `len` elements.
        unsafe { data.set_len(len) };
        PackedB { data, k, n, k_pad }
    }

    /// Packs the `[k, n]` matrix whose column `j` is `src[j * ld..][..k]`: the transpose of a
    /// row-major `[n, k]` matrix (`ld = k`; a backward product's `W^T`), or of columns
    /// `p0..p0 + k` of a wider one (`&src[p0..]`, `ld` its width; a weight gradient's
    /// `dY^T`). Each column converts as one contiguous run; gathered element by element
    /// across rows instead, it was the costliest part of a bf16 weight gradient.
    pub fn pack_transposed(src: &[f32], k: usize, n: usize, ld: usize) -> PackedB {
        Self::pack_transposed_segments(&[src], k, n, ld)
    }

    /// Packs the `[segs.len() * seg, n]` matrix whose rows are the segments' `[k, n]`
    /// matrices (column `j` of segment `s` at `segs[s][j * ld..][..k]`) one above the other,
    /// each padded with zeros to `seg = k` rounded up to 32: the right operand of
    /// [`PackedA::pack_segments`]'s product. One segment is [`PackedB::pack_transposed`].
    pub fn pack_transposed_segments(segs: &[&[f32]], k: usize, n: usize, ld: usize) -> PackedB {
        let Segments { seg, k_pad, k_all } = Segments::check(segs, n, k, ld, ["right", "column"]);
        let n_pad = n.div_ceil(BLOCK) * BLOCK;
        if n == 0 || k == 0 {
            return PackedB {
                data: vec![0u16; n_pad * k_pad],
                k: k_all,
                n,
                k_pad,
            };
        }
        // Column block `jb` (16 columns) is one contiguous run of `data` (see `b_offset`):
        // its columns converted into `cols` (zeros past each segment's `k`: never written),
        // then woven pair by pair; the blocks past `n` zeros. Every element written once: a
        // zeroed operand first was half of the `memset` of a ResNet-50 bf16 training step.
        let (len, blocks) = (n_pad * k_pad, n.div_ceil(NB));
        let mut data: Vec<u16> = Vec::with_capacity(len);
        data.spare_capacity_mut()[..len]
            .par_chunks_mut(k_pad * NB)
            .enumerate()
            .for_each_init(Vec::<u16>::new, |cols, (jb, block)| {
                if jb >= blocks {
                    block.fill(MaybeUninit::new(0));
                    return;
                }
                let w = (n - jb * NB).min(NB);
                #[cfg(target_arch = "x86_64")]
                if avx512::available() && transpose_in_registers() {
                    // SAFETY: the features it enables were detected; the segments hold
                    // columns `jb * 16..+ w` (asserted above), `block` is `k_pad * 16`
                    // long, `seg` a multiple of 32 and at least `k`.
                    return unsafe {
                        avx512::transposed_block(
                            segs,
                            (k, seg, ld),
                            (jb * NB, w),
                            block.as_mut_ptr().cast(),
                        )
                    };
                }
                cols.resize(NB * k_pad, 0);
                for (jj, col) in cols.chunks_exact_mut(k_pad).enumerate() {
                    if jj >= w {
                        col.fill(0);
                        continue;
                    }
                    for (si, src) in segs.iter().enumerate() {
                        convert(&src[(jb * NB + jj) * ld..][..k], &mut col[si * seg..][..k]);
                    }
                }
                for (p, pair) in block.chunks_exact_mut(2 * NB).enumerate() {
                    for (jj, v) in pair.chunks_exact_mut(2).enumerate() {
                        v.write_copy_of_slice(&cols[jj * k_pad + 2 * p..][..2]);
                    }
                }
            });
        // SAFETY: every block was written whole above (its `k_pad / 2` pairs of 16 columns, or
        // zeros past `n`), covering all `len` elements.
        unsafe { data.set_len(len) };
        PackedB {
            data,
            k: k_all,
            n,
            k_pad,
        }
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }
}

/// Whether a transposed right operand is woven in registers, 16 columns at a time
/// (`avx512::transposed_block`), instead of pair by pair through a buffer
/// (`COMMITTEE_BF16_TRANSPOSE_REGISTERS=0`): kept to time the two in one process.
fn transpose_in_registers() -> bool {
    TRANSPOSE_REGISTERS.on()
}

/// Sets [`transpose_in_registers`] (`examples/ab_train.rs` in committee-train, switch
/// `transpose-registers`).
pub fn set_transpose_in_registers(on: bool) {
    TRANSPOSE_REGISTERS.set(on);
}

static TRANSPOSE_REGISTERS: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_BF16_TRANSPOSE_REGISTERS"));

/// Two row buffers of a packing task.
type Rows<T> = (Vec<T>, Vec<T>);

/// Where a packing task hands one row pair (the second absent past `k`).
type Weave<'w, T> = &'w mut dyn FnMut(&[T], Option<&[T]>);

/// Row pair `p` of a packed right operand at `out`, every column block of it: `out[at + 2c] =
/// bf16(r0[j])`, `out[at + 2c + 1] = bf16(r1[j])` (0 where `r1` is absent) for column
/// `j = 16 jb + c` of block `jb` at `at = b_offset(p, jb, k_pad)` (the packed operand's zeros
/// past the row's end kept). One call per row pair: called per block of 16 columns, the
/// dispatch was 5 % of ResNet-50's bf16 forward.
///
/// # Safety
/// `out` holds `r0.len().div_ceil(16)` column blocks of `k_pad * 16`, `p < k_pad / 2`, and no
/// one else writes row pair `p` meanwhile; `r1`, when present, is as long as `r0`.
unsafe fn weave<T: Elem>(r0: &[T], r1: Option<&[T]>, out: *mut u16, p: usize, k_pad: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the features it enables were detected; the rest is the caller's contract.
        return unsafe { avx512::weave(r0, r1, out, p, k_pad) };
    }
    for (jb, j0) in (0..r0.len()).step_by(NB).enumerate() {
        let w = (r0.len() - j0).min(NB);
        // SAFETY: the caller's contract; zeroed first (the packed operand is not: the zeros
        // also stand past the row's end), then borrowed.
        let dst = unsafe {
            let at = out.add(b_offset(p, jb, k_pad));
            at.write_bytes(0, 2 * NB);
            std::slice::from_raw_parts_mut(at.cast(), 2 * NB)
        };
        interleave_row(&r0[j0..j0 + w], r1.map(|r| &r[j0..j0 + w]), dst);
    }
}

/// `out[2c] = bf16(r0[c])`, `out[2c + 1] = bf16(r1[c])` (0 where `r1` is absent) along a
/// whole row; past `2 * r0.len()`, up to 30 more elements of `out` may be overwritten with
/// zeros (so `out` must be that long). `out` may be memory not yet written.
fn interleave_row<T: Elem>(r0: &[T], r1: Option<&[T]>, out: &mut [MaybeUninit<u16>]) {
    assert!(
        out.len() >= r0.len().div_ceil(NB) * 2 * NB,
        "row too long for its place"
    );
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        for (j0, out) in (0..r0.len()).step_by(NB).zip(out.chunks_exact_mut(2 * NB)) {
            let w = (r0.len() - j0).min(NB);
            // SAFETY: the features it enables were detected; `out` is 32 long.
            unsafe {
                avx512::interleave(
                    &r0[j0..j0 + w],
                    r1.map(|r| &r[j0..j0 + w]),
                    out.as_mut_ptr().cast(),
                )
            };
        }
        return;
    }
    for (c, v) in r0.iter().enumerate() {
        out[2 * c].write(to_bf16(v.to_f32()));
        out[2 * c + 1].write(r1.map_or(0, |r| to_bf16(r[c].to_f32())));
    }
}

/// Raw pointer to a packed operand shared by the packing tasks, each of which writes
/// disjoint row pairs.
#[derive(Clone, Copy)]
struct Out16(*mut u16);
// SAFETY: tasks write disjoint parts (see `PackedB::pack_rows`).
unsafe impl Send for Out16 {}
unsafe impl Sync for Out16 {}

impl Out16 {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not its field).
    fn get(&self) -> *mut u16 {
        self.0
    }
}

/// Raw output pointer shared by the block tasks, each of which writes a disjoint block.
#[derive(Clone, Copy)]
pub(crate) struct Out(pub(crate) *mut f32);
// SAFETY: tasks write disjoint blocks (see `gemm`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not its field).
    pub(crate) fn get(&self) -> *mut f32 {
        self.0
    }

    /// Elements `at..at + len` as memory to write (a task's part of an output not yet
    /// initialised).
    ///
    /// # Safety
    /// They lie inside the allocation, and no one else reads or writes them while the slice
    /// lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part<'a>(&self, at: usize, len: usize) -> &'a mut [MaybeUninit<f32>] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at).cast(), len) }
    }
}

/// Bytes of right-operand panels one task keeps in its core's L2 while one left panel meets
/// them all (a quarter of the 2 MB of a Sapphire Rapids core, 1 MB of a Zen 4 one).
const PANELS_BYTES: usize = 512 << 10;

/// What a product's output holds before the product is added.
#[derive(Debug, Clone, Copy)]
pub enum Bias<'a> {
    /// Nothing: the output is the product alone.
    None,
    /// `bias[j]` in every row's column `j` (a linear layer: rows are tokens).
    Columns(&'a [f32]),
    /// `bias[i]` along row `i` (a convolution: rows are output channels).
    Rows(&'a [f32]),
    /// `bias[i]` along row `i` plus `plus[i * n + j]`: a convolution's bias and a residual
    /// branch, added before the activation (a ResNet block's last convolution).
    RowsPlus(&'a [f32], &'a [f32]),
    /// [`Bias::RowsPlus`] with the residual in bf16 (its bits): a ResNet block whose
    /// activations stay in bf16, the sum rounded once, as it is written.
    RowsPlusBf16(&'a [f32], &'a [u16]),
}

impl Bias<'_> {
    /// Panics unless the addends cover an `[m, n]` output.
    fn assert_fits(self, m: usize, n: usize) {
        match self {
            Bias::Columns(v) => assert!(v.len() >= n, "bias shorter than a row"),
            Bias::Rows(v) => assert!(v.len() >= m, "bias shorter than a column"),
            Bias::RowsPlus(v, p) => {
                assert!(v.len() >= m, "bias shorter than a column");
                assert!(p.len() >= m * n, "residual shorter than the output");
            }
            Bias::RowsPlusBf16(v, p) => {
                assert!(v.len() >= m, "bias shorter than a column");
                assert!(p.len() >= m * n, "residual shorter than the output");
            }
            Bias::None => {}
        }
    }
}

/// `dst [m, n] (row-major) = ep(a x b)`, plus what `dst` holds before `ep` when
/// `accumulate` (a running sum), on `kernel`.
pub fn gemm(
    kernel: Bf16Kernel,
    a: &PackedA,
    b: &PackedB,
    dst: &mut [f32],
    accumulate: bool,
    ep: Epilogue,
) {
    assert!(dst.len() >= a.m * b.n, "output too short");
    let start = if accumulate {
        Start::Dst
    } else {
        Start::Bias(Bias::None)
    };
    // SAFETY: `dst` is initialised and holds `m * n` elements (asserted).
    unsafe {
        run(
            kernel,
            a,
            b,
            Dst::F32(Out(dst.as_mut_ptr()), b.n),
            start,
            ep,
        )
    }
}

/// `ep(bias + a x b)` as a new row-major `[m, n]` vector: each element written once, by the
/// block that computes it. Why: preloading the bias into the output first, then adding each
/// block to it, was two more passes over memory (an fc1 of ViT-B/16 at batch 8: 19 MB each,
/// the first in fresh pages), 18 % of that layer's time.
pub fn gemm_new(
    kernel: Bf16Kernel,
    a: &PackedA,
    b: &PackedB,
    bias: Bias,
    ep: Epilogue,
) -> Vec<f32> {
    let len = a.m * b.n;
    let mut out = Vec::with_capacity(len);
    gemm_into(kernel, a, b, &mut out.spare_capacity_mut()[..len], bias, ep);
    // SAFETY: `gemm_into` wrote all `m * n` elements.
    unsafe { out.set_len(len) };
    out
}

/// [`gemm_new`] into `dst` (`m * n` long, its contents never read), in f32 or rounded to
/// bf16 (a convolution whose activations stay in bf16, see [`Elem`]).
pub fn gemm_into<T: Elem>(
    kernel: Bf16Kernel,
    a: &PackedA,
    b: &PackedB,
    dst: &mut [MaybeUninit<T>],
    bias: Bias,
    ep: Epilogue,
) {
    assert!(dst.len() >= a.m * b.n, "output too short");
    bias.assert_fits(a.m, b.n);
    let dst = match T::BF16 {
        true => Dst::Bf16Rows(Out16(dst.as_mut_ptr().cast()), b.n),
        false => Dst::F32(Out(dst.as_mut_ptr().cast()), b.n),
    };
    // SAFETY: `dst` holds `m * n` elements (asserted) of its kind; `Start::Bias` never reads
    // them.
    unsafe { run(kernel, a, b, dst, Start::Bias(bias), ep) }
}

/// [`gemm_into`] into rows `ld` apart: row `i` of the product at `dst + i * ld`, its `n`
/// columns written, the others untouched (one head of an attention into its columns of the
/// heads' joint output, by tasks that each write their own columns of the same rows).
///
/// # Safety
/// `dst + i * ld + j` is writable for `i < m`, `j < n`, `ld >= n`, and no one else reads or
/// writes those elements during the call.
pub(crate) unsafe fn gemm_into_rows(
    kernel: Bf16Kernel,
    a: &PackedA,
    b: &PackedB,
    dst: *mut f32,
    ld: usize,
    bias: Bias,
    ep: Epilogue,
) {
    assert!(ld >= b.n, "row stride shorter than a row");
    assert!(
        matches!(bias, Bias::None | Bias::Columns(_)),
        "only column biases in strided rows"
    );
    bias.assert_fits(a.m, b.n);
    // SAFETY: the caller's contract; `Start::Bias` never reads the output.
    unsafe { run(kernel, a, b, Dst::F32(Out(dst), ld), Start::Bias(bias), ep) }
}

/// [`gemm_into`] with the right operand the row-major `[a.k, n]` matrix `x` (bf16, or f32
/// rounded as [`PackedB::pack`] rounds) read where it lies: each task weaves one 32-column
/// block of it into a buffer that stays in L1 (`avx512::weave_block`) and meets a run of row
/// panels with it. Why: a 1x1 convolution is this product over its image, and packing the
/// whole image first wrote it out and read it back per row panel. Alone, ResNet-50's 1x1
/// layers ran 1.02-1.21x faster this way (one thread, one image); in the whole bf16 forward,
/// where the packing was 1.4 % of the time, 1.01x (docs/benchmarks.md). Blocks with a row
/// bias and a clamp are finished as they leave the registers (1.04x more). On AMX and
/// the emulated kernel `x` is packed and multiplied as [`gemm_into`] does.
pub fn gemm_rows_into<S: Elem, T: Elem>(
    kernel: Bf16Kernel,
    a: &PackedA,
    x: &[S],
    n: usize,
    dst: &mut [MaybeUninit<T>],
    bias: Bias,
    ep: Epilogue,
) {
    let (m, k, k_pad) = (a.m, a.k, a.k_pad);
    assert!(x.len() >= k * n, "right operand too short");
    #[cfg(target_arch = "x86_64")]
    if kernel == Bf16Kernel::Avx512 {
        assert!(kernel.available(), "bf16 kernel avx512-bf16 unavailable");
        assert!(dst.len() >= m * n, "output too short");
        bias.assert_fits(m, n);
        let (mb, nb) = (m.div_ceil(BLOCK), n.div_ceil(BLOCK));
        // Each task weaves one column block and meets a run of row panels with it; the runs
        // as long as keeps ~8 tasks per thread (all the panels of a 56x56 map's product).
        let run = (mb * nb / (8 * rayon::current_num_threads())).clamp(1, mb.max(1));
        let runs = mb.div_ceil(run);
        let out = Out(dst.as_mut_ptr().cast());
        // Whether blocks are finished in registers, and with what (the same for every block).
        let finished = match finish_on() {
            true => ep.clamp_bounds().zip(finished_addends(bias)),
            false => None,
        };
        // Run-major: neighbouring tasks share their left panels (in L2).
        (0..runs * nb).into_par_iter().for_each_init(
            || (Block([0f32; BLOCK * BLOCK]), vec![0u16; 2 * NB * k_pad]),
            |(c, woven), t| {
                let (r, jb) = (t / nb, t % nb);
                let (j0, cols) = (jb * BLOCK, (n - jb * BLOCK).min(BLOCK));
                // SAFETY: the features were detected; `weave_block` asserts its extents.
                unsafe { avx512::weave_block(x, (k, n), (j0, cols), k_pad, woven) };
                for ib in r * run..((r + 1) * run).min(mb) {
                    let i0 = ib * BLOCK;
                    let pa = &a.data[i0 * k_pad..][..BLOCK * k_pad];
                    let rows = (m - i0).min(BLOCK);
                    if let Some((bounds, (b, res))) = finished {
                        assert!(pa.len() >= BLOCK * k_pad && woven.len() >= 2 * NB * k_pad);
                        // SAFETY: the features were detected; `pa` and `woven` hold what
                        // `block` reads (asserted); the addends cover `m x n` (asserted
                        // above), and rows i0..i0+rows, columns j0..j0+cols of the output are
                        // this block's alone.
                        unsafe {
                            avx512::block_finished(
                                pa,
                                woven,
                                k_pad,
                                b,
                                res,
                                bounds,
                                ([i0, j0], [rows, cols], n),
                                out.get().cast::<T>(),
                            )
                        };
                        continue;
                    }
                    block(kernel, pa, woven, 0, k_pad, &mut c.0);
                    let place = ([i0, j0], [rows, cols], (i0 * n + j0, n), n);
                    // SAFETY: rows i0.., columns j0..j0+cols of the `m x n` output (asserted
                    // inside `dst`) belong to this block alone; `Start::Bias` reads none.
                    unsafe {
                        write_plain(
                            &mut c.0,
                            place,
                            Start::Bias(bias),
                            ep,
                            out.get().cast::<T>(),
                        )
                    };
                }
            },
        );
        return;
    }
    let b = PackedB::pack(&x[..k * n], k, n);
    gemm_into(kernel, a, &b, dst, bias, ep);
}

/// A row bias (or none) and a bf16 residual (or none): what [`avx512::block_finished`] adds.
#[cfg(target_arch = "x86_64")]
type RowAddends<'a> = (Option<&'a [f32]>, Option<&'a [u16]>);

/// The addends [`avx512::block_finished`] applies; `None` for the others.
#[cfg(target_arch = "x86_64")]
fn finished_addends(bias: Bias<'_>) -> Option<RowAddends<'_>> {
    match bias {
        Bias::None => Some((None, None)),
        Bias::Rows(b) => Some((Some(b), None)),
        Bias::RowsPlusBf16(b, r) => Some((Some(b), Some(r))),
        Bias::Columns(_) | Bias::RowsPlus(..) => None,
    }
}

/// Whether [`gemm_rows_into`] finishes its blocks in registers
/// ([`avx512::block_finished`]) rather than storing them for the write-back;
/// `COMMITTEE_BF16_FINISH_IN_REGISTERS=0` stores them, to time one against the other.
#[cfg(target_arch = "x86_64")]
fn finish_on() -> bool {
    FINISH.on()
}

#[cfg(target_arch = "x86_64")]
static FINISH: crate::kernel::Switch =
    crate::kernel::Switch::new(true, Some("COMMITTEE_BF16_FINISH_IN_REGISTERS"));

/// Turns [`finish_on`] on or off for the process, over `COMMITTEE_BF16_FINISH_IN_REGISTERS`
/// (`examples/ab_f32_taps.rs` in committee-zoo, switch `finish-registers`).
pub fn set_finish_in_registers(on: bool) {
    #[cfg(target_arch = "x86_64")]
    FINISH.set(on);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = on;
}

/// `ep(bias + a x b)` rounded to bf16 as the left operand of the next product (the hidden
/// layer of an MLP), written by the blocks that compute it. Why: the f32 output and then
/// packing it read and wrote the hidden activation three times in all (ViT-B/16's fc1 at
/// batch 8: 19 MB of f32); this writes it once, at half the size. The values equal
/// [`PackedA::pack`] of [`gemm_new`]'s output bit for bit (the same rounding of the same
/// floats).
pub fn gemm_packed(
    kernel: Bf16Kernel,
    a: &PackedA,
    b: &PackedB,
    bias: Bias,
    ep: Epilogue,
) -> PackedA {
    let (m, n) = (a.m, b.n);
    assert!(
        !matches!(bias, Bias::RowsPlus(..) | Bias::RowsPlusBf16(..)),
        "a residual is not packed"
    );
    bias.assert_fits(m, n);
    let (m_pad, k_pad) = (m.div_ceil(BLOCK) * BLOCK, n.div_ceil(BLOCK) * BLOCK);
    let len = m_pad * k_pad;
    let mut data: Vec<u16> = Vec::with_capacity(len);
    // The padding rows and columns must read as zeros in the next product; zeroed alone
    // (zeroing all of it first was a pass over the hidden layer for nothing).
    if n > 0 {
        data.spare_capacity_mut()[..len]
            .par_chunks_mut(BLOCK * k_pad)
            .enumerate()
            .for_each(|(pb, panel)| {
                zero_padding(panel, (m - pb * BLOCK).min(BLOCK), n, [k_pad; 2])
            });
    }
    // SAFETY: `data` holds `m` rows of `k_pad >= n` elements; `Start::Bias` reads nothing.
    unsafe {
        run(
            kernel,
            a,
            b,
            Dst::Bf16(Out16(data.as_mut_ptr()), k_pad),
            Start::Bias(bias),
            ep,
        );
        // `run` wrote rows below `m`, columns below `n`; the padding is zeroed above.
        data.set_len(len);
    }
    PackedA {
        data,
        m,
        k: n,
        k_pad,
    }
}

/// Where [`run`] writes its blocks.
#[derive(Clone, Copy)]
enum Dst {
    /// f32 rows of `n` at the given stride (at least `n`).
    F32(Out, usize),
    /// A [`PackedA`]'s data with the given `k_pad` (at least `n`).
    Bf16(Out16, usize),
    /// bf16 rows of `n` at the given stride (at least `n`).
    Bf16Rows(Out16, usize),
}

/// Where an output block's values start.
#[derive(Clone, Copy)]
pub(crate) enum Start<'a> {
    /// What the output holds.
    Dst,
    Bias(Bias<'a>),
}

/// The product into `dst` (`m * n` floats, row-major; initialised where `start` is `Dst`).
///
/// Each rayon task takes one 32-row panel of `a` and a group of 32-column panels of `b` that
/// fit [`PANELS_BYTES`], and computes their 32x32 blocks one after another: the left panel
/// stays in L1, the group in L2, and the tasks of one group (neighbours, so mostly one
/// thread's) reuse it. One task per block instead streamed all of `a` from memory once per
/// column panel: ViT-B/16's fc1 at batch 8 ran 2.5x slower. The bias and activation are
/// applied to each finished block while it is in L1: a separate pass over ViT's fc1 output
/// (GELU) took as long as the bf16 product itself.
///
/// # Safety
/// `dst` points to `m` writable rows of `n` (or its row length) elements, initialised when
/// `start` is [`Start::Dst`] (f32 only).
unsafe fn run(kernel: Bf16Kernel, a: &PackedA, b: &PackedB, dst: Dst, start: Start, ep: Epilogue) {
    let (m, n) = (a.m, b.n);
    assert_eq!(a.k, b.k, "inner dimensions differ");
    assert_eq!(a.k_pad, b.k_pad);
    assert!(
        kernel.available(),
        "bf16 kernel {} unavailable",
        kernel.name()
    );
    assert!(
        matches!(dst, Dst::F32(..)) || !matches!(start, Start::Dst),
        "a bf16 output has no running sum"
    );
    if let Dst::F32(_, ld) | Dst::Bf16Rows(_, ld) = dst {
        assert!(ld >= n, "row stride shorter than a row");
    }
    let k_pad = a.k_pad;
    for_each_block(a, n, |i0, pa, j0, c| {
        block(kernel, pa, &b.data, 2 * (j0 / BLOCK), k_pad, &mut c.0);
        let (rows, cols) = ((m - i0).min(BLOCK), (n - j0).min(BLOCK));
        // The block's rows are `stride` apart in the output; in the packed layout (`k_pad
        // >= n`) a block's row is one contiguous step and the rows 32 apart (`a_offset`).
        let (at, stride) = match dst {
            Dst::F32(_, ld) | Dst::Bf16Rows(_, ld) => (i0 * ld + j0, ld),
            Dst::Bf16(_, k_pad) => (a_offset(i0, j0, k_pad), 32),
        };
        let place = ([i0, j0], [rows, cols], (at, stride), n);
        // SAFETY: rows i0..i0+rows, columns j0..j0+cols of `dst` (inside m x n, the caller's
        // contract) belong to this block, computed by this task alone.
        unsafe {
            match dst {
                Dst::F32(out, _) => write_plain(&mut c.0, place, start, ep, out.get()),
                Dst::Bf16Rows(out, _) | Dst::Bf16(out, _) => {
                    write_plain(&mut c.0, place, start, ep, out.get())
                }
            }
        }
    });
}

/// Where a block whose columns are one run goes: its first row and column `[i0, j0]`, its
/// `[rows, cols]`, its first output element and the output's row stride, and the width `n`
/// of the residual (read from `i0 * n + j0`, rows `n` apart).
pub(crate) type Plain = ([usize; 2], [usize; 2], (usize, usize), usize);

/// [`write_block`] for a block whose columns are one run (a product's block, not a
/// convolution's grid with columns to drop).
///
/// # Safety
/// As [`write_block`].
pub(crate) unsafe fn write_plain<T: Elem>(
    c: &mut [f32; BLOCK * BLOCK],
    ([i0, j0], [rows, cols], (at, stride), n): Plain,
    start: Start,
    ep: Epilogue,
    out: *mut T,
) {
    let seg = [Seg {
        col: 0,
        len: cols,
        at,
        res_at: i0 * n + j0,
    }];
    let rows = BlockRows {
        i0,
        j0,
        rows,
        segs: &seg,
        stride,
        res_stride: n,
    };
    // SAFETY: the caller's.
    unsafe { write_block(c, &rows, start, ep, out) }
}

/// A run of a finished block's columns: `len` of them from column `col`, written for the
/// block's row `r` at `at + r * stride` of the output, its residual (if any) read at
/// `res_at + r * res_stride` (see [`BlockRows`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seg {
    pub(crate) col: usize,
    pub(crate) len: usize,
    pub(crate) at: usize,
    pub(crate) res_at: usize,
}

/// Where a finished block goes: its first output row `i0` (for row addends) and column `j0`
/// (for column addends), its `rows`, and the runs of its columns (one for a product, one per
/// map row for a convolution read at tap offsets, whose grid has columns to drop).
pub(crate) struct BlockRows<'a> {
    pub(crate) i0: usize,
    pub(crate) j0: usize,
    pub(crate) rows: usize,
    pub(crate) segs: &'a [Seg],
    pub(crate) stride: usize,
    pub(crate) res_stride: usize,
}

/// `ep(c + start)` for every row and run of a finished block (`c` 32 floats a row), into
/// the output at `out`, as f32 or rounded to bf16. Why one call per block: written row by
/// row, the per-row dispatch (kind of addend, instruction set, output type) took longer than
/// the products of a layer with few inputs (a ResNet 64 -> 256 convolution: the write-back
/// was a third of the layer, the products under half).
///
/// # Safety
/// Every element the runs name is inside the output at `out` and written by this call alone;
/// [`Start::Dst`] only for an initialised f32 output.
pub(crate) unsafe fn write_block<T: Elem>(
    c: &mut [f32; BLOCK * BLOCK],
    b: &BlockRows,
    start: Start,
    ep: Epilogue,
    out: *mut T,
) {
    if let Start::Bias(bias) = start {
        for s in b.segs {
            assert!(s.col + s.len <= BLOCK, "a run past the block");
            let last = (b.rows.max(1) - 1) * b.res_stride + s.res_at + s.len;
            match bias {
                Bias::None => {}
                Bias::Columns(v) => assert!(v.len() >= b.j0 + s.col + s.len, "bias too short"),
                Bias::Rows(v) => assert!(v.len() >= b.i0 + b.rows, "bias too short"),
                Bias::RowsPlus(v, p) => assert!(v.len() >= b.i0 + b.rows && p.len() >= last),
                Bias::RowsPlusBf16(v, p) => {
                    assert!(v.len() >= b.i0 + b.rows && p.len() >= last)
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if let (Isa::Avx512, true) = (Isa::get(), avx512::available()) {
            // SAFETY: the features were detected; addends checked above; the caller's
            // contract for the output.
            unsafe {
                if let Some(bounds) = ep.clamp_bounds() {
                    return avx512::write_block(c, b, bias, bounds, out);
                }
                // GELU, SiLU, exp: the sums in place, the activation over the whole block
                // in one call, then stored (per row, three calls per 32 floats took a
                // tenth of ViT-B/16's bf16 forward).
                avx512::add_in_place(c, b, bias);
                super::isa::epilogue_avx512(&mut c[..b.rows * BLOCK], ep);
                let open = [f32::NEG_INFINITY, f32::INFINITY];
                return avx512::write_block(c, b, Bias::None, open, out);
            }
        }
    }
    for r in 0..b.rows {
        for s in b.segs {
            let res = s.res_at + r * b.res_stride;
            let add = match start {
                Start::Dst => Add::Dst,
                Start::Bias(Bias::None) => Add::None,
                Start::Bias(Bias::Columns(v)) => Add::Columns(&v[b.j0 + s.col..][..s.len]),
                Start::Bias(Bias::Rows(v)) => Add::Row(v[b.i0 + r]),
                Start::Bias(Bias::RowsPlus(v, p)) => Add::RowPlus(v[b.i0 + r], &p[res..][..s.len]),
                Start::Bias(Bias::RowsPlusBf16(v, p)) => {
                    Add::RowPlusBf16(v[b.i0 + r], &p[res..][..s.len])
                }
            };
            let row = &mut c[r * BLOCK + s.col..][..s.len];
            // SAFETY: the caller's contract.
            unsafe { finish_to(row, add, ep, out.add(s.at + r * b.stride)) };
        }
    }
}

/// `ep(s + add)` into the `s.len()` (at most 32) elements at `dst`: as f32, or rounded to
/// bf16. `s` may be overwritten; `add` is [`Add::Dst`] only for an initialised f32 output.
/// (Row by row: where [`write_block`] has no one-call path.)
///
/// # Safety
/// `dst` is valid for `s.len()` writes (and reads, for [`Add::Dst`]) and no one else accesses
/// those elements meanwhile.
pub(crate) unsafe fn finish_to<T: Elem>(s: &mut [f32], add: Add, ep: Epilogue, dst: *mut T) {
    let n = s.len();
    if T::BF16 {
        assert!(
            n <= BLOCK && !matches!(add, Add::Dst),
            "a bf16 row of a block"
        );
        let mut row = [MaybeUninit::<f32>::uninit(); BLOCK];
        finish_row(s, add, ep, &mut row[..n]);
        // SAFETY: `finish_row` wrote `row[..n]`; the caller's contract for `dst`.
        unsafe { convert_to(row[..n].assume_init_ref(), dst.cast()) }
    } else {
        // SAFETY: the caller's contract; `T` is f32.
        let d = unsafe { std::slice::from_raw_parts_mut(dst.cast::<MaybeUninit<f32>>(), n) };
        finish_row(s, add, ep, d);
    }
}

/// The 32x32 output blocks of an `[a.m, n]` product, in the tasks [`run`] describes:
/// `f(i0, panel, j0, c)` computes and writes the block at row `i0`, column `j0`, `panel` being
/// rows `i0..i0 + 32` of `a` and `c` its task's block buffer.
fn for_each_block(a: &PackedA, n: usize, f: impl Fn(usize, &[u16], usize, &mut Block) + Sync) {
    let (mb, nb) = (a.m.div_ceil(BLOCK), n.div_ceil(BLOCK));
    let k_pad = a.k_pad;
    let group = (PANELS_BYTES / (BLOCK * 2 * k_pad.max(1))).clamp(1, nb.max(1));
    (0..nb.div_ceil(group) * mb).into_par_iter().for_each(|t| {
        let (g, ib) = (t / mb, t % mb);
        let i0 = ib * BLOCK;
        let panel = &a.data[i0 * k_pad..][..BLOCK * k_pad];
        let mut c = Block([0f32; BLOCK * BLOCK]);
        for jb in g * group..((g + 1) * group).min(nb) {
            f(i0, panel, jb * BLOCK, &mut c);
        }
    });
}

/// What [`finish_row`] adds to a block's row.
#[derive(Clone, Copy)]
pub(crate) enum Add<'a> {
    None,
    /// What the output row holds (initialised).
    Dst,
    Columns(&'a [f32]),
    Row(f32),
    /// A row's bias and its residual.
    RowPlus(f32, &'a [f32]),
    /// A row's bias and its residual in bf16 (its bits).
    RowPlusBf16(f32, &'a [u16]),
}

/// `d = ep(s + add)` for one row of a finished block; `s` may be overwritten.
pub(crate) fn finish_row(s: &mut [f32], add: Add, ep: Epilogue, d: &mut [MaybeUninit<f32>]) {
    if let Add::RowPlusBf16(b, p) = add {
        // Widened first (a row of a block: at most 32); `avx512::write_block` reads it in
        // place.
        let mut wide = [0f32; BLOCK];
        let n = s.len();
        assert!(n <= BLOCK && p.len() >= n, "a block's row and its residual");
        for (w, &h) in wide.iter_mut().zip(&p[..n]) {
            *w = from_bf16(h);
        }
        return finish_row(s, Add::RowPlus(b, &wide[..n]), ep, d);
    }
    #[cfg(target_arch = "x86_64")]
    if let Isa::Avx512 = Isa::get() {
        let bounds = ep.clamp_bounds();
        // SAFETY: `Isa::get` detected AVX-512.
        unsafe { finish_row_clamped(s, add, bounds, d) };
        if bounds.is_none() {
            // SiLU, GELU, exp: on the output row just written (in L1), not on `s` and then
            // copied.
            // SAFETY: `finish_row_clamped` initialised `d[..s.len()]`.
            let d = unsafe { std::slice::from_raw_parts_mut(d.as_mut_ptr().cast(), s.len()) };
            Isa::Avx512.epilogue(d, ep);
        }
        return;
    }
    finish_row_widest(s, add, ep, d);
}

crate::cpu::isa::widest!(
    fn finish_row_widest(s: &mut [f32], add: Add, ep: Epilogue, d: &mut [MaybeUninit<f32>]) =
        finish_row_body
);

/// [`finish_row`] up to a clamp to `bounds` (no activation, ReLU or ReLU6; none for the
/// others), in one pass from `s` to `d` sixteen lanes at a time. Why: applied in place on `s` and then copied, the write-back was a fifth of
/// ResNet-50's bf16 forward at batch 8 (`finish_row` 21 %, its copy in `memmove` 5 %), and
/// rows of 56 or 28 (a map's width, on the tap path) ran their tails 8 and 1 lanes wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn finish_row_clamped(s: &[f32], add: Add, bounds: Option<[f32; 2]>, d: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let n = s.len();
    assert!(d.len() >= n, "output row too short");
    match add {
        Add::Columns(b) | Add::RowPlus(_, b) => assert!(b.len() >= n, "addend too short"),
        Add::None | Add::Dst | Add::Row(_) => {}
        Add::RowPlusBf16(..) => unreachable!("widened by `finish_row`"),
    }
    let [lo, hi] = bounds.unwrap_or([f32::NEG_INFINITY, f32::INFINITY]);
    // No activation: nothing to clamp.
    let clamp = lo > f32::NEG_INFINITY || hi < f32::INFINITY;
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let mut i = 0;
    while i < n {
        let k = ((1u32 << (n - i).min(16)) - 1) as __mmask16;
        // SAFETY: lanes i..i + 16 below `n` only (the mask); `d` and the addends hold `n`
        // (asserted), and `Add::Dst` only for an initialised output (see `run`).
        unsafe {
            let mut v = _mm512_maskz_loadu_ps(k, s.as_ptr().add(i));
            let at = |x: &[f32]| _mm512_maskz_loadu_ps(k, x.as_ptr().add(i));
            v = match add {
                Add::None => v,
                Add::Dst => _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, d.as_ptr().add(i).cast())),
                Add::Columns(b) => _mm512_add_ps(v, at(b)),
                Add::Row(b) => _mm512_add_ps(v, _mm512_set1_ps(b)),
                Add::RowPlus(b, p) => _mm512_add_ps(v, _mm512_add_ps(_mm512_set1_ps(b), at(p))),
                Add::RowPlusBf16(..) => v,
            };
            if clamp {
                // NaN kept (see `Epilogue::clamp_bounds`).
                v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
            }
            _mm512_mask_storeu_ps(d.as_mut_ptr().add(i).cast(), k, v);
        }
        i += 16;
    }
}

/// `d = ep(s + add)` for one row of a finished block (`s` in L1), vectorised for the widest
/// instruction set: the add ran as SSE, 4 lanes, in the task's closure (12 % of an fc1).
#[inline(always)]
fn finish_row_body(s: &mut [f32], add: Add, ep: Epilogue, d: &mut [MaybeUninit<f32>]) {
    match add {
        Add::None => {}
        // SAFETY: `Add::Dst` only for an initialised output (see `run`).
        Add::Dst => {
            for (s, d) in s.iter_mut().zip(d.iter()) {
                *s += unsafe { d.assume_init() };
            }
        }
        Add::Columns(b) => {
            for (s, b) in s.iter_mut().zip(b) {
                *s += b;
            }
        }
        Add::Row(b) => {
            for s in s.iter_mut() {
                *s += b;
            }
        }
        Add::RowPlus(b, p) => {
            for (s, p) in s.iter_mut().zip(p) {
                *s += b + p;
            }
        }
        Add::RowPlusBf16(b, p) => {
            for (s, p) in s.iter_mut().zip(p) {
                *s += b + from_bf16(*p);
            }
        }
    }
    // Inlined into each instruction set's copy of this function (through `Isa::epilogue`,
    // a call per 32-float row, ReLU alone was 10 % of ResNet-50's bf16 forward).
    match (ep, Isa::get()) {
        (Epilogue::None, _) => {}
        (_, Isa::Base) => epilogue::<false>(s, ep),
        _ => epilogue::<true>(s, ep),
    }
    d.write_copy_of_slice(s);
}

#[repr(C, align(64))]
struct Block([f32; BLOCK * BLOCK]);

/// `c [32, 32] (row-major) = a [32, k_pad] x b` for one packed row panel `a` and column
/// blocks `jb` and `jb + 1` of the packed right operand `b`.
fn block(
    kernel: Bf16Kernel,
    a: &[u16],
    b: &[u16],
    jb: usize,
    k_pad: usize,
    c: &mut [f32; BLOCK * BLOCK],
) {
    assert!(a.len() >= BLOCK * k_pad && b.len() >= b_offset(0, jb + 2, k_pad));
    match kernel {
        // SAFETY: `gemm` checked availability; the slices hold the extents the kernels read
        // (asserted above).
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Amx => unsafe { amx::block(a, b, jb, k_pad, c) },
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Avx512 => unsafe { avx512::block(a, b, jb, k_pad, c) },
        #[cfg(not(target_arch = "x86_64"))]
        Bf16Kernel::Amx | Bf16Kernel::Avx512 => unreachable!("not available"),
        Bf16Kernel::Emulated => emulated_block(a, b, jb, k_pad, c),
    }
}

fn emulated_block(a: &[u16], b: &[u16], jb: usize, k_pad: usize, c: &mut [f32; BLOCK * BLOCK]) {
    for r in 0..BLOCK {
        for col in 0..BLOCK {
            let mut acc = 0f32;
            for p in 0..k_pad / 2 {
                let at = b_offset(p, jb + col / NB, k_pad) + 2 * (col % NB);
                let pair = a_offset(r, 2 * p, k_pad);
                acc += from_bf16(a[pair]) * from_bf16(b[at])
                    + from_bf16(a[pair + 1]) * from_bf16(b[at + 1]);
            }
            c[r * BLOCK + col] = acc;
        }
    }
}
