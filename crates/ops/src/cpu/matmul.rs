//! Matrix products through the `gemm` crate, on slices in any stride layout.

use super::*;

/// `len` floats in rows of `row_len`, row `i` set by `fill(i, row)` in parallel straight into
/// fresh memory: a gemm output preloaded with its bias. Zero-filling first (`vec![0; len]`)
/// would be one more pass over memory the product then overwrites (an fc1 of ViT-B/16 at
/// batch 8: 19 MB). `fill` must write every element of its row.
pub(crate) fn preloaded(
    len: usize,
    row_len: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    assert!(row_len > 0 && len.is_multiple_of(row_len));
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(i, row)| fill(i, row));
    // SAFETY: every row was written by `fill` (its contract; both callers below write whole
    // rows), and the rows cover `len`, a multiple of `row_len`.
    unsafe { v.set_len(len) };
    v
}

/// Two vectors of `len` floats written in one parallel pass, rows `i` of both by
/// `fill(i, a_row, b_row)` (as [`preloaded`]: no zero-fill first); rows of `row_len`, the last
/// one shorter when `row_len` does not divide `len`. `fill` must write every element of both
/// rows.
pub(crate) fn preloaded_pair(
    len: usize,
    row_len: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>], &mut [MaybeUninit<f32>]) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    assert!(row_len > 0);
    let mut a = Vec::with_capacity(len);
    let mut b = Vec::with_capacity(len);
    a.spare_capacity_mut()[..len]
        .par_chunks_mut(row_len)
        .zip(b.spare_capacity_mut()[..len].par_chunks_mut(row_len))
        .enumerate()
        .for_each(|(i, (ra, rb))| fill(i, ra, rb));
    // SAFETY: every row of both was written by `fill` (its contract), covering `len`.
    unsafe {
        a.set_len(len);
        b.set_len(len);
    }
    (a, b)
}

/// A read-only matrix in a slice: element `(i, j)` at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with rows of `row_len` elements.
    pub(crate) fn rows(data: &'a [f32], row_len: usize) -> Self {
        Mat {
            data,
            rs: row_len,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with rows of `row_len` elements.
    pub(crate) fn cols(data: &'a [f32], row_len: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: row_len,
        }
    }

    pub(crate) fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst [m, n] (row-major) = lhs [m, k] x rhs [k, n]` (plus what `dst` holds when
/// `accumulate`), operands in any layout [`Mat`] describes.
pub(crate) fn gemm_strided(
    mnk: [usize; 3],
    dst: &mut [f32],
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    gemm_scaled(mnk, dst, lhs, rhs, accumulate, 1.0, parallelism);
}

/// `dst [m, n] (row-major) = lhs [m, k] x rhs [k, n]` into memory not yet written: the
/// product is stored without reading `dst` first (every element of `dst[..m * n]` is
/// written). Why: a buffer filled first only to be overwritten (or preloaded with a bias and
/// read back by the product) was a pass over the output for nothing.
pub(crate) fn gemm_into(
    [m, n, k]: [usize; 3],
    dst: &mut [MaybeUninit<f32>],
    lhs: Mat,
    rhs: Mat,
    parallelism: gemm::Parallelism,
) {
    assert!(dst.len() >= m * n && lhs.fits(m, k) && rhs.fits(k, n));
    if k == 0 {
        // An empty sum.
        dst[..m * n].fill(MaybeUninit::new(0.0));
        return;
    }
    // SAFETY: every index the product touches lies inside its slice (asserted above); with
    // `read_dst` false the crate stores into `dst` before it reads any of it back (its blocks
    // over `k` after the first add to what the first stored).
    unsafe {
        raw(
            [m, n, k],
            dst.as_mut_ptr().cast(),
            None,
            lhs,
            rhs,
            1.0,
            parallelism,
        )
    }
}

/// [`gemm_strided`] with the product scaled by `scale`.
pub(crate) fn gemm_scaled(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    assert!(dst.len() >= m * n && lhs.fits(m, k) && rhs.fits(k, n));
    let read = accumulate.then_some(1.0);
    // SAFETY: every index the product touches lies inside its slice (asserted above).
    unsafe {
        raw(
            [m, n, k],
            dst.as_mut_ptr(),
            read,
            lhs,
            rhs,
            scale,
            parallelism,
        )
    }
}

/// `dst = alpha dst + beta lhs rhs` (`dst` not read where `alpha` is `None`), row-major `dst`.
///
/// # Safety
/// Every element the product touches lies inside `dst` (`m * n`), `lhs` and `rhs`.
unsafe fn raw(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    alpha: Option<f32>,
    lhs: Mat,
    rhs: Mat,
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            alpha.is_some(),
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            alpha.unwrap_or(0.0),
            beta,
            false,
            false,
            false,
            parallelism,
        );
    }
}
