//! The bf16 products against references computed here in f64 from the same bf16 values, on
//! every kernel this CPU has (the emulated one everywhere).

use super::*;
use crate::testing::{conv_at_f64, values};

fn kernels() -> Vec<Bf16Kernel> {
    Bf16Kernel::ALL
        .into_iter()
        .filter(|k| k.available())
        .collect()
}

#[test]
fn rounding_is_to_nearest_even_as_in_pytorch() {
    // Hand-computed: bf16 keeps f32's top 16 bits; 1 + 2^-8 is halfway between 1 and
    // 1 + 2^-7 and goes to the even mantissa (1.0); 1 + 3 * 2^-8 goes up to 1 + 2^-6.
    assert_eq!(to_bf16(1.0), 0x3f80);
    assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
    assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
    assert_eq!(to_bf16(1.0 + 1.5 / 256.0), 0x3f81);
    assert_eq!(to_bf16(-2.0), 0xc000);
    assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
    assert_eq!(to_bf16(f32::MAX), 0x7f80, "rounds past the largest bf16");
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert_eq!(from_bf16(0x4049), 3.140625);
}

#[test]
fn vector_conversion_matches_the_scalar_rounding() {
    for n in [0, 1, 15, 16, 17, 31, 32, 33, 100] {
        let mut src = values(n, n as u64 + 1);
        // Exact ties, both ways.
        for (i, v) in src.iter_mut().enumerate().step_by(3) {
            *v = f32::from_bits(0x3f80_8000 + ((i as u32 & 1) << 16));
        }
        let mut dst = vec![0u16; n];
        convert(&src, &mut dst);
        let want: Vec<u16> = src.iter().map(|v| to_bf16(*v)).collect();
        assert_eq!(dst, want, "n = {n}");
    }
}

#[test]
fn right_operand_interleaves_row_pairs_in_blocks_of_16() {
    // [k = 3, n = 18]: B[r][c] = 32 r + c, all exact in bf16.
    let (k, n) = (3, 18);
    let src: Vec<f32> = (0..k * n).map(|i| ((i / n) * 32 + i % n) as f32).collect();
    let b = PackedB::pack(&src, k, n);
    assert_eq!((b.k_pad, b.data.len()), (32, 32 * 32));
    let at = |blk: usize, p: usize, c: usize, t: usize| {
        from_bf16(b.data[blk * 32 * 16 + p * 32 + 2 * c + t])
    };
    assert_eq!((at(0, 0, 0, 0), at(0, 0, 0, 1)), (0.0, 32.0));
    assert_eq!((at(0, 0, 5, 0), at(0, 0, 5, 1)), (5.0, 37.0));
    assert_eq!(
        (at(0, 1, 5, 0), at(0, 1, 5, 1)),
        (69.0, 0.0),
        "row 3 is padding"
    );
    assert_eq!(
        (at(1, 0, 1, 0), at(1, 0, 1, 1)),
        (17.0, 49.0),
        "column 17 in block 1"
    );
    assert_eq!(at(1, 0, 2, 0), 0.0, "column 18 is padding");
    assert!(
        b.data[2 * 32..16 * 32].iter().all(|v| *v == 0),
        "k pairs past 1"
    );
}

/// Packing a transpose in place equals packing the f32 transpose, bit for bit, across tile
/// and block edges; a right operand's columns may also be a window of wider rows.
#[test]
fn transposed_packing_matches_packing_the_transpose() {
    let transpose = |src: &[f32], rows: usize, cols: usize, ld: usize| {
        let mut t = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = src[r * ld + c];
            }
        }
        t
    };
    for (rows, cols) in [(1, 1), (3, 5), (31, 33), (40, 70), (64, 17)] {
        let src = values(rows * cols, (rows * 100 + cols) as u64);
        // A = src^T: [cols, rows].
        let a = PackedA::pack_transposed(&src, cols, rows);
        let want = PackedA::pack(&transpose(&src, rows, cols, cols), cols, rows);
        assert_eq!((a.m, a.k, a.k_pad), (want.m, want.k, want.k_pad));
        assert!(a.data == want.data, "A {rows}x{cols}");
        // B = src^T: [cols, rows], src's rows the columns.
        let b = PackedB::pack_transposed(&src, cols, rows, cols);
        let want = PackedB::pack(&transpose(&src, rows, cols, cols), cols, rows);
        assert!(b.data == want.data, "B {rows}x{cols}");
        // Columns 2..cols of src only (ld wider than k).
        if cols > 2 {
            let b = PackedB::pack_transposed(&src[2..], cols - 2, rows, cols);
            let want = PackedB::pack(&transpose(&src[2..], rows, cols - 2, cols), cols - 2, rows);
            assert!(b.data == want.data, "B window {rows}x{cols}");
        }
    }
}

#[test]
fn products_match_an_f64_reference_on_every_kernel() {
    let shapes = [
        (1, 1, 1),
        (1, 1000, 768),
        (33, 17, 45),
        (64, 64, 64),
        (5, 100, 300),
        (70, 40, 32),
        (96, 49, 1152),
        (3, 5, 0),
    ];
    for kernel in kernels() {
        for (s, &(m, n, k)) in shapes.iter().enumerate() {
            let a = values(m * k, 2 * s as u64 + 1);
            let b = values(k * n, 2 * s as u64 + 2);
            let (col_bias, row_bias) = (values(n, 99), values(m, 98));
            let (pa, pb) = (PackedA::pack(&a, m, k), PackedB::pack(&b, k, n));
            // The output starts from: nothing, a running sum (`gemm`'s `accumulate`), a bias
            // per column (a linear layer) or per row (a convolution), written once.
            for start in ["none", "sum", "columns", "rows"] {
                let bias_at = |i: usize, j: usize| match start {
                    "sum" | "columns" => col_bias[j],
                    "rows" => row_bias[i],
                    _ => 0.0,
                };
                // With a bias, the ReLU fused into the block write-back too.
                let ep = if start == "none" {
                    Epilogue::None
                } else {
                    Epilogue::Relu
                };
                let dst = match start {
                    "none" | "sum" => {
                        let mut dst: Vec<f32> = (0..m * n)
                            .map(|i| {
                                if start == "sum" {
                                    col_bias[i % n]
                                } else {
                                    f32::NAN
                                }
                            })
                            .collect();
                        gemm(kernel, &pa, &pb, &mut dst, start == "sum", ep);
                        dst
                    }
                    _ => {
                        let bias = match start {
                            "columns" => Bias::Columns(&col_bias),
                            _ => Bias::Rows(&row_bias),
                        };
                        gemm_new(kernel, &pa, &pb, bias, ep)
                    }
                };
                assert_eq!(dst.len(), m * n);
                let r = |v: f32| from_bf16(to_bf16(v)) as f64;
                for i in 0..m {
                    for j in 0..n {
                        let (mut want, mut mag) = (0f64, 0f64);
                        for p in 0..k {
                            let t = r(a[i * k + p]) * r(b[p * n + j]);
                            want += t;
                            mag += t.abs();
                        }
                        want += bias_at(i, j) as f64;
                        mag += (bias_at(i, j) as f64).abs();
                        if ep == Epilogue::Relu {
                            want = want.max(0.0);
                        }
                        let got = dst[i * n + j] as f64;
                        // f32 accumulation: k roundings of partial sums at most.
                        let tol = (k as f64 + 2.0) * f32::EPSILON as f64 * mag + 1e-30;
                        assert!(
                            (got - want).abs() <= tol,
                            "{} m{m} n{n} k{k} {start} [{i},{j}]: {got} vs {want}",
                            kernel.name()
                        );
                    }
                }
            }
        }
    }
}

/// [`gemm_rows_into`] (the right operand read in place from its rows, a 1x1 convolution over
/// its image) on every kernel: bit for bit what [`gemm_into`] gives on the packed operand, and
/// within f32 accumulation of an f64 reference, with a row bias, a bf16 residual and ReLU,
/// into f32 and into bf16; the same from f32 rows (rounded alike). Odd `k` (the last pair's
/// second row absent), part-filled row and column blocks; the rows are followed by NaN, so a
/// read past `k` shows.
#[test]
fn products_read_in_place_match_the_packed_ones() {
    for kernel in kernels() {
        for (s, &(m, n, k)) in [
            (33, 17, 45),
            (70, 100, 64),
            (8, 40, 1),
            (40, 33, 96),
            (3, 5, 0),
        ]
        .iter()
        .enumerate()
        {
            let a = values(m * k, 3 * s as u64 + 1);
            let mut x: Vec<u16> = values(k * n, 3 * s as u64 + 2)
                .into_iter()
                .map(to_bf16)
                .collect();
            x.extend([to_bf16(f32::NAN); 64]);
            let bias_v = values(m, 3 * s as u64 + 3);
            let res: Vec<u16> = values(m * n, 7).into_iter().map(to_bf16).collect();
            let pa = PackedA::pack(&a, m, k);
            let case = format!("{} m{m} n{n} k{k}", kernel.name());
            let bias = Bias::RowsPlusBf16(&bias_v, &res);
            // `x` in place and packed, into outputs of type `T`, as their bits.
            fn both<S: Elem, T: Elem>(
                (kernel, pa, bias): (Bf16Kernel, &PackedA, Bias),
                x: &[S],
                n: usize,
            ) -> [Vec<f32>; 2] {
                both_ep::<S, T>((kernel, pa, bias), x, n, Epilogue::Relu)
            }
            fn both_ep<S: Elem, T: Elem>(
                (kernel, pa, bias): (Bf16Kernel, &PackedA, Bias),
                x: &[S],
                n: usize,
                ep: Epilogue,
            ) -> [Vec<f32>; 2] {
                let len = pa.m * n;
                let pb = PackedB::pack(&x[..pa.k * n], pa.k, n);
                let mut out = [(); 2].map(|_| vec![MaybeUninit::<T>::uninit(); len]);
                gemm_rows_into(kernel, pa, x, n, &mut out[0], bias, ep);
                gemm_into(kernel, pa, &pb, &mut out[1], bias, ep);
                // SAFETY: both products wrote all `m * n` elements.
                out.map(|o| {
                    o.iter()
                        .map(|v| unsafe { v.assume_init() }.to_f32())
                        .collect()
                })
            }
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let [got, want] = both::<u16, f32>((kernel, &pa, bias), &x, n);
            assert_eq!(bits(&got), bits(&want), "{case}: f32 output");
            let [got16, want16] = both::<u16, u16>((kernel, &pa, bias), &x, n);
            assert_eq!(bits(&got16), bits(&want16), "{case}: bf16 output");
            // From f32 rows: rounded as the packing rounds them.
            let mut x32: Vec<f32> = values(k * n, 3 * s as u64 + 4);
            x32.extend([f32::NAN; 64]);
            let [got32, want32] = both::<f32, u16>((kernel, &pa, bias), &x32, n);
            assert_eq!(bits(&got32), bits(&want32), "{case}: from f32 rows");
            // Blocks are finished in registers for a row bias or none, with or without a
            // residual, and a clamp; the rest through the write-back (GELU here).
            for (b, ep) in [
                (Bias::Rows(&bias_v), Epilogue::Relu6),
                (Bias::None, Epilogue::None),
                (Bias::RowsPlusBf16(&bias_v, &res), Epilogue::Gelu),
            ] {
                let [got, want] = both_ep::<u16, u16>((kernel, &pa, b), &x, n, ep);
                assert_eq!(bits(&got), bits(&want), "{case}: {b:?} {ep:?}");
            }
            let r = |v: f32| from_bf16(to_bf16(v)) as f64;
            for i in 0..m {
                for j in 0..n {
                    let (mut want, mut mag) = (bias_v[i] as f64, bias_v[i].abs() as f64);
                    want += from_bf16(res[i * n + j]) as f64;
                    mag += (from_bf16(res[i * n + j]) as f64).abs();
                    for p in 0..k {
                        let t = r(a[i * k + p]) * from_bf16(x[p * n + j]) as f64;
                        want += t;
                        mag += t.abs();
                    }
                    let tol = (k as f64 + 3.0) * f32::EPSILON as f64 * mag + 1e-30;
                    let g = got[i * n + j] as f64;
                    assert!(
                        (g - want.max(0.0)).abs() <= tol,
                        "{case} [{i},{j}]: {g} vs {want}"
                    );
                }
            }
        }
    }
}

/// A sum of products over segments (a weight gradient over several images) as one product:
/// `sum_s a_s [m, k] x b_s^T` with `a_s` and `b_s` windows of wider row-major matrices whose
/// other columns are NaN (so a read past a segment's `k`, or a pad that is not zero, shows),
/// against an f64 reference, on every kernel; one segment packs as `pack_strided` /
/// `pack_transposed` do.
#[test]
fn segmented_products_sum_the_segments() {
    for (m, n, k, segs) in [
        (1, 1, 1, 3),
        (33, 17, 49, 8),
        (40, 70, 31, 2),
        (5, 3, 64, 3),
    ] {
        let ld = k + 3;
        // Row `r` of segment `s`' left matrix at `a[s][r * ld..][..k]`, column `j` of its
        // right matrix at `b[s][j * ld..][..k]`; the 3 columns past `k` NaN.
        let window = |rows: usize, seed: u64| -> Vec<f32> {
            let mut v = values(rows * ld, seed);
            for (i, x) in v.iter_mut().enumerate() {
                if i % ld >= k {
                    *x = f32::NAN;
                }
            }
            v
        };
        let a: Vec<Vec<f32>> = (0..segs).map(|s| window(m, 2 * s as u64 + 7)).collect();
        let b: Vec<Vec<f32>> = (0..segs).map(|s| window(n, 2 * s as u64 + 8)).collect();
        let (ar, br): (Vec<&[f32]>, Vec<&[f32]>) = (
            a.iter().map(|v| &v[..]).collect(),
            b.iter().map(|v| &v[..]).collect(),
        );
        let (pa, pb) = (
            PackedA::pack_segments(&ar, m, k, ld),
            PackedB::pack_transposed_segments(&br, k, n, ld),
        );
        assert_eq!((pa.k, pa.k_pad), (segs * k.div_ceil(32) * 32, pa.k));
        let one = PackedA::pack_segments(&ar[..1], m, k, ld);
        let strided = PackedA::pack_strided(ar[0], m, k, ld);
        assert!(one.data == strided.data && one.k == k, "one segment");
        let one = PackedB::pack_transposed_segments(&br[..1], k, n, ld);
        assert!(one.data == PackedB::pack_transposed(br[0], k, n, ld).data);
        // Woven in registers (where the CPU has AVX512-BF16) and through a buffer: one result.
        set_transpose_in_registers(false);
        let buffered = PackedB::pack_transposed_segments(&br, k, n, ld);
        set_transpose_in_registers(true);
        assert!(buffered.data == pb.data, "m{m} n{n} k{k} x{segs}: buffered");
        let r = |v: f32| from_bf16(to_bf16(v)) as f64;
        for kernel in kernels() {
            let mut dst = vec![f32::NAN; m * n];
            gemm(kernel, &pa, &pb, &mut dst, false, Epilogue::None);
            for i in 0..m {
                for j in 0..n {
                    let (mut want, mut mag) = (0f64, 0f64);
                    for s in 0..segs {
                        for p in 0..k {
                            let t = r(a[s][i * ld + p]) * r(b[s][j * ld + p]);
                            want += t;
                            mag += t.abs();
                        }
                    }
                    let got = dst[i * n + j] as f64;
                    let tol = (segs * k) as f64 * f32::EPSILON as f64 * mag + 1e-30;
                    assert!(
                        (got - want).abs() <= tol,
                        "{} m{m} n{n} k{k} x{segs} [{i},{j}]: {got} vs {want}",
                        kernel.name()
                    );
                }
            }
        }
    }
}

#[test]
fn bf16_products_are_as_close_to_f32_as_bf16_rounding_allows() {
    // A 256-long dot of values in [-2, 2): each product carries a relative error of at most
    // 2 * 2^-9 (two operands rounded), so the sum is off by at most 2^-8 * sum |a b|.
    let (m, n, k) = (8, 32, 256);
    let (a, b) = (values(m * k, 5), values(k * n, 6));
    let mut dst = vec![0f32; m * n];
    for kernel in kernels() {
        gemm(
            kernel,
            &PackedA::pack(&a, m, k),
            &PackedB::pack(&b, k, n),
            &mut dst,
            false,
            Epilogue::None,
        );
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum();
                let mag: f64 = (0..k)
                    .map(|p| (a[i * k + p] as f64 * b[p * n + j] as f64).abs())
                    .sum();
                assert!((dst[i * n + j] as f64 - exact).abs() <= mag / 256.0);
            }
        }
    }
}

/// Stride-1 convolutions read at tap offsets from the padded image (`taps`, on every kernel this
/// CPU has, the emulated one included) against
/// an f64 convolution of the same bf16-rounded values, with bias and ReLU: odd channel
/// counts, asymmetric and no padding, a non-square kernel, maps narrower than a block.
#[cfg(target_arch = "x86_64")]
#[test]
fn tap_convolutions_match_an_f64_reference() {
    use super::taps::{PaddedImage, Taps, conv_into};
    let kernels: Vec<_> = Bf16Kernel::ALL
        .into_iter()
        .filter(|k| k.available())
        .collect();
    let round = |v: &[f32]| v.iter().map(|x| from_bf16(to_bf16(*x))).collect::<Vec<_>>();
    // (c, c_out, [kh, kw], [top, bottom, left, right], [h, w])
    for (c, m, [kh, kw], pads, [h, w]) in [
        (5, 7, [3, 3], [1, 1, 1, 1], [6, 9]),
        (40, 33, [3, 3], [0, 2, 1, 0], [10, 7]),
        (3, 8, [5, 5], [2, 2, 2, 2], [12, 11]),
        (64, 64, [3, 3], [1, 1, 1, 1], [14, 14]),
        (33, 16, [1, 3], [0, 0, 1, 1], [4, 40]),
        (16, 5, [3, 3], [0, 0, 0, 0], [5, 5]),
    ] {
        let taps = kh * kw;
        let x = values(c * h * w, (c * m) as u64);
        let wt = values(m * c * taps, (c + m) as u64);
        let bias = values(m, 7);
        let t = Taps::new(c, [h, w], [kh, kw], pads);
        let (oh, ow) = (t.oh, t.ow);
        // The weight packed by tap, as the cache does it.
        let kc_pad = c.div_ceil(32) * 32;
        let mut rows = vec![0f32; m * taps * kc_pad];
        for o in 0..m {
            for tap in 0..taps {
                for ch in 0..c {
                    rows[(o * taps + tap) * kc_pad + ch] = wt[(o * c + ch) * taps + tap];
                }
            }
        }
        let a = PackedA::pack(&rows, m, taps * kc_pad);
        let img = PaddedImage::pack(&x, &t);
        for &kernel in &kernels {
            let mut out = vec![MaybeUninit::new(f32::NAN); m * oh * ow];
            conv_into(
                kernel,
                &a,
                &img,
                &t,
                &mut out,
                Bias::Rows(&bias),
                Epilogue::Relu,
            );
            let (xr, wr) = (round(&x), round(&wt));
            let [pt, _, pl, _] = pads;
            for o in 0..m {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let want = bias[o] as f64
                            + conv_at_f64(&xr, &wr, [c, h, w], [kh, kw], [pt, pl], [o, oy, ox]);
                        // SAFETY: initialised (to NaN, which fails below, where not written).
                        let got = unsafe { out[(o * oh + oy) * ow + ox].assume_init() } as f64;
                        let off = (got - want.max(0.0)).abs();
                        assert!(
                            off < 1e-4,
                            "{} c{c} m{m} {kh}x{kw} {pads:?} {h}x{w} at ({o}, {oy}, {ox}): off by {off}",
                            kernel.name()
                        );
                    }
                }
            }
        }
    }
}

/// The one-pass write-back (AVX-512: no activation, ReLU, ReLU6) equals the in-place one,
/// bit for bit, for every addend, row lengths around the vector width, NaN, infinities and
/// negative zero included.
#[test]
fn write_back_matches_the_in_place_one() {
    let mut vals = values(40, 9);
    vals[3] = f32::NAN;
    vals[17] = -0.0;
    vals[20] = f32::NEG_INFINITY;
    vals[33] = 7.5;
    let other = values(40, 10);
    for n in [1, 15, 16, 17, 32, 33, 40] {
        for ep in [
            Epilogue::None,
            Epilogue::Relu,
            Epilogue::Relu6,
            Epilogue::Silu,
        ] {
            let adds = [
                Add::None,
                Add::Dst,
                Add::Columns(&other[..n]),
                Add::Row(0.25),
                Add::RowPlus(-0.5, &other[..n]),
            ];
            for add in adds {
                let run = |f: fn(&mut [f32], Add, Epilogue, &mut [MaybeUninit<f32>])| {
                    let mut s = vals[..n].to_vec();
                    let mut d: Vec<_> = other[..n].iter().map(|&v| MaybeUninit::new(v)).collect();
                    f(&mut s, add, ep, &mut d);
                    // SAFETY: initialised above.
                    d.iter()
                        .map(|v| unsafe { v.assume_init() }.to_bits())
                        .collect::<Vec<_>>()
                };
                let canon = |v: Vec<u32>| -> Vec<u32> {
                    v.into_iter()
                        .map(|b| {
                            if f32::from_bits(b).is_nan() {
                                0x7fc0_0000
                            } else {
                                b
                            }
                        })
                        .collect()
                };
                assert_eq!(
                    canon(run(finish_row)),
                    canon(run(finish_row_widest)),
                    "n {n} {ep:?}"
                );
            }
        }
    }
}
