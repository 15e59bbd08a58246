//! Branch-free `exp` and `erf` for f32, and lane-split row reductions, written so that the
//! element-wise loops of the fused kernels vectorize.
//!
//! `f32::exp` and candle's `erf_f32` are libm calls: one element at a time, with branches. They
//! were a tenth of a Q-Former forward (GELU's erf 7 %, softmax's exp 3.5 % of the samples in
//! `perf`), more than any kernel but the GEMM. These are polynomial and rational approximations
//! that LLVM turns into SIMD code; `exp` is within 2 ulp of libm's and `erf` within 5e-7 absolute
//! (checked over dense grids below), far inside the parity tolerances (1e-4).

/// `e^x`, for finite `x <= 88` (the kernels only call it on `x - max <= 0`); `x < -87.3` gives 0,
/// as libm's result flushes to (near) zero there. NaN stays NaN.
// Cephes `expf`: e^x = 2^n e^r with n = round(x log2 e), |r| <= ln2/2, and a degree-6 polynomial
// for e^r. The rounding adds 1.5·2^23 so that n lands in the low mantissa bits (no float→int
// conversion, which does not vectorize everywhere). Plain `a * b + c`, not `mul_add`: without the
// FMA target feature `mul_add` is a libm call, and plain arithmetic rounds the same everywhere.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LO: f32 = -87.336_54;
    const HI: f32 = 88.0;
    const SHIFTER: f32 = 12_582_912.0; // 1.5 · 2^23
    let xc = x.clamp(LO, HI);
    let shifted = xc * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let n_bits = shifted.to_bits().wrapping_sub(SHIFTER.to_bits()); // n as a two's-complement int
                                                                    // ln 2 split in two so that n·C1 is exact.
    let r = (xc - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes' 5.0000001201e-1, which is 0.5 in f32
    let er = p * r * r + r + 1.0;
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let y = er * scale;
    if x < LO {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// The error function.
// A 13/8 odd/even rational approximation on [-4, 4] (the one Eigen and XLA use for f32).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    let y = x * p / q;
    // From 3.92 on, erf rounds to ±1 in f32; the approximation stops a few ulp short of it.
    if x.abs() >= 3.92 {
        1f32.copysign(x)
    } else {
        y
    }
}

const LANES: usize = 16;

/// Largest element (NEG_INFINITY for an empty row), in 16 independent lanes.
#[inline(always)]
pub(crate) fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    tail.iter().chain(lanes.iter()).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// Sum in 16 independent lanes (a different rounding order than a running sum, equally exact).
#[inline(always)]
pub(crate) fn sum(row: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `Σ a·b` in 16 independent lanes.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut lanes = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for ((s, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// In place `row[i] = e^(row[i] - shift)`, returning the sum of the new values.
#[inline(always)]
pub(crate) fn exp_shifted_sum(row: &mut [f32], shift: f32) -> f32 {
    for v in row.iter_mut() {
        *v = exp(*v - shift);
    }
    sum(row)
}

/// `Σ e^(row[i] - shift)`, the terms in f32 and their sum in 16 f64 lanes (for long rows such as
/// a vocabulary's logits, where an f32 sum would lose digits).
#[inline(always)]
pub(crate) fn sum_exp_shifted_f64(row: &[f32], shift: f32) -> f64 {
    let mut lanes = [0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| exp(v - shift) as f64).sum();
    for c in chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += exp(v - shift) as f64;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// `Σ row[i]` in 16 f64 lanes.
#[inline(always)]
pub(crate) fn sum_f64(row: &[f32]) -> f64 {
    let mut lanes = [0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    for c in chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += v as f64;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = (0u32, 0f32);
        let mut x = -87.0f32;
        while x <= 88.0 {
            let u = ulps(exp(x), x.exp());
            if u > worst.0 {
                worst = (u, x);
            }
            x += 1.3e-3;
        }
        assert!(worst.0 <= 2, "exp({}) is {} ulp off libm", worst.1, worst.0);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn erf_is_within_5e7_of_libm() {
        let mut worst = (0f32, 0f32);
        let mut x = -6.0f32;
        while x <= 6.0 {
            let d = (erf(x) - candle_core::cpu::erf::erf_f32(x)).abs();
            if d > worst.0 {
                worst = (d, x);
            }
            x += 2.7e-4;
        }
        assert!(worst.0 <= 5e-7, "erf({}) is {} off libm", worst.1, worst.0);
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn lane_reductions_equal_the_plain_ones() {
        for n in [0usize, 1, 15, 16, 17, 257, 1000] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 11 % 13) as f32 - 6.0) / 3.0).collect();
            let plain_max = a.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            assert_eq!(max(&a), plain_max, "n={n}");
            let plain_sum: f64 = a.iter().map(|&v| v as f64).sum();
            assert!((sum(&a) as f64 - plain_sum).abs() < 1e-4, "n={n}");
            let plain_dot: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((dot(&a, &b) as f64 - plain_dot).abs() < 1e-3, "n={n}");
            assert!((sum_f64(&a) - plain_sum).abs() < 1e-9, "n={n}");
            let want: f64 = a.iter().map(|&v| ((v - plain_max) as f64).exp()).sum();
            assert!((sum_exp_shifted_f64(&a, plain_max) - want).abs() < 1e-6 * want.max(1.0));
            let mut e = a.clone();
            let s = exp_shifted_sum(&mut e, plain_max);
            let want: f64 = a.iter().map(|&v| ((v - plain_max) as f64).exp()).sum();
            assert!((s as f64 - want).abs() <= 1e-5 * want, "n={n}");
        }
    }
}
