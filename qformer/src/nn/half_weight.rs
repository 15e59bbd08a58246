//! `x · wᵀ` for f32 activations and a frozen weight kept in its stored half dtype (bf16 or f16,
//! `[out, in]` row-major): a 7B LLM's matrices stay at 2 bytes a weight, the activations and
//! every sum are f32.
//!
//! Two regimes, chosen by the number of input rows (measured with `benches/half_linear.rs` on
//! LLaMA-7B's `gate_proj`, docs/performance.md "LLaVA-7B generation"):
//! - **few rows** (decoding: one row per sequence and beam) — a dot-product kernel that widens
//!   each weight row into an f32 scratch row (in cache) and multiplies every input row against
//!   it. Decoding is bound by reading the weights, so reading 2 bytes a weight instead of 4 is
//!   the whole gain; nothing of the weight's size is allocated.
//! - **many rows** (a prefill) — the weight is widened into a transient f32 copy, written
//!   column-major (the layout the `gemm` crate multiplies fastest, see `Linear`), and the f32
//!   GEMM runs on it; the copy is dropped when the call returns, so at most one layer's matrix
//!   is ever held in f32. The widening is `O(n·k)` against the GEMM's `O(m·n·k)`.
//!
//! candle's own CPU bf16 matmul widens both operands to f32 on every call and narrows the
//! product back to bf16, so running the layer "natively" in bf16 costs the same widening plus
//! bf16-rounded activations.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Shape};
use half::{bf16, f16};
use rayon::prelude::*;

/// At most this many input rows take the dot-product kernel; more take the widened GEMM (at
/// `gate_proj` the kernel was 1.6x faster than the widened GEMM at 64 rows, 4.3x slower at 600).
pub const DOT_MAX_ROWS: usize = 64;

/// Weight rows per parallel task of the dot-product kernel.
const ROWS_PER_TASK: usize = 32;

/// A half-precision weight element widened to f32.
trait Half: Copy + Send + Sync {
    fn widen(src: &[Self], dst: &mut [f32]);
}

impl Half for bf16 {
    // bf16 is the top half of an f32: a shift the compiler vectorizes.
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
}

impl Half for f16 {
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
}

/// Whether `w` is a half-precision weight this module multiplies (`[n, k]`, row-major).
pub(crate) fn is_half_weight(w: &CpuStorage, w_layout: &Layout) -> bool {
    matches!(w, CpuStorage::BF16(_) | CpuStorage::F16(_))
        && w_layout.dims().len() == 2
        && w_layout.is_contiguous()
}

/// `x [m, k] · w[n, k]ᵀ -> [m, n]` with `x` f32 and `w` bf16/f16 (see [`is_half_weight`]).
pub(crate) fn matmul_half_t(
    x: &[f32],
    x_layout: &Layout,
    w: &CpuStorage,
    w_layout: &Layout,
) -> Result<(Vec<f32>, Shape)> {
    let (m, k) = x_layout.shape().dims2()?;
    let (n, kw) = w_layout.shape().dims2()?;
    if k != kw {
        candle_core::bail!(
            "linear: input {:?} and weight {:?} differ in the inner dim",
            x_layout.shape(),
            w_layout.shape()
        )
    }
    // Row-major input rows; a row-strided input (the [CLS] rows) is copied, it is small.
    let x = contiguous_rows(x, x_layout, m, k);
    let (o0, o1) = w_layout.contiguous_offsets().expect("checked by is_half_weight");
    let out = match w {
        CpuStorage::BF16(w) => dispatch(&x, &w[o0..o1], m, n, k),
        CpuStorage::F16(w) => dispatch(&x, &w[o0..o1], m, n, k),
        _ => candle_core::bail!("linear: half weight expected, got {:?}", w.dtype()),
    }?;
    Ok((out, Shape::from((m, n))))
}

fn contiguous_rows<'a>(
    x: &'a [f32],
    l: &Layout,
    m: usize,
    k: usize,
) -> std::borrow::Cow<'a, [f32]> {
    if let Some((o0, o1)) = l.contiguous_offsets() {
        return std::borrow::Cow::Borrowed(&x[o0..o1]);
    }
    let (rs, cs) = (l.stride()[0], l.stride()[1]);
    let base = l.start_offset();
    let mut out = Vec::with_capacity(m * k);
    for i in 0..m {
        out.extend((0..k).map(|j| x[base + i * rs + j * cs]));
    }
    std::borrow::Cow::Owned(out)
}

fn dispatch<H: Half>(x: &[f32], w: &[H], m: usize, n: usize, k: usize) -> Result<Vec<f32>> {
    let regime = if m <= DOT_MAX_ROWS { Regime::Dot } else { Regime::WidenedGemm };
    run(regime, x, w, m, n, k)
}

fn run<H: Half>(r: Regime, x: &[f32], w: &[H], m: usize, n: usize, k: usize) -> Result<Vec<f32>> {
    match r {
        Regime::Dot => Ok(dot_rows(x, w, m, n, k)),
        Regime::WidenedGemm => widened_gemm(x, w, m, n, k),
    }
}

/// The two ways of multiplying by a half-precision weight (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    Dot,
    WidenedGemm,
}

/// `x · wᵀ` in the given regime, whatever the row count: for benchmarks choosing between them.
// x: [m, k] f32 (CPU), w: [n, k] bf16/f16 -> [m, n] f32
pub fn matmul_half_t_with(
    x: &candle_core::Tensor,
    w: &candle_core::Tensor,
    regime: Regime,
) -> Result<candle_core::Tensor> {
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (candle_core::Storage::Cpu(CpuStorage::F32(xv)), candle_core::Storage::Cpu(wv)) =
        (&*xs, &*ws)
    else {
        candle_core::bail!("matmul_half_t_with: an f32 CPU input and a CPU weight")
    };
    if !is_half_weight(wv, wl) {
        candle_core::bail!("matmul_half_t_with: a contiguous bf16/f16 [n, k] weight")
    }
    let (m, k) = xl.shape().dims2()?;
    let (n, kw) = wl.shape().dims2()?;
    if k != kw {
        candle_core::bail!("matmul_half_t_with: input {:?}, weight {:?}", xl.dims(), wl.dims())
    }
    let x = contiguous_rows(xv, xl, m, k);
    let (o0, o1) = wl.contiguous_offsets().expect("checked by is_half_weight");
    let out = match wv {
        CpuStorage::BF16(w) => run(regime, &x, &w[o0..o1], m, n, k),
        CpuStorage::F16(w) => run(regime, &x, &w[o0..o1], m, n, k),
        _ => unreachable!("checked by is_half_weight"),
    }?;
    candle_core::Tensor::from_vec(out, (m, n), &candle_core::Device::Cpu)
}
/// The dot-product kernel: `out[i, j] = Σ x[i, :] · w[j, :]`, weight rows split across threads.
fn dot_rows<H: Half>(x: &[f32], w: &[H], m: usize, n: usize, k: usize) -> Vec<f32> {
    // [n, m] (one weight row's outputs together), transposed to [m, n] at the end (m is small).
    let mut out_t = vec![0f32; n * m];
    out_t.par_chunks_mut(ROWS_PER_TASK * m.max(1)).enumerate().for_each(|(task, out)| {
        let mut row = vec![0f32; k];
        let first = task * ROWS_PER_TASK;
        for (jj, out_j) in out.chunks_exact_mut(m.max(1)).enumerate() {
            let j = first + jj;
            H::widen(&w[j * k..(j + 1) * k], &mut row);
            for (i, o) in out_j.iter_mut().enumerate().take(m) {
                *o = dot(&x[i * k..(i + 1) * k], &row);
            }
        }
    });
    if m == 1 {
        return out_t;
    }
    let mut out = vec![0f32; m * n];
    for j in 0..n {
        for i in 0..m {
            out[i * n + j] = out_t[j * m + i];
        }
    }
    out
}

/// f32 dot product with 16 independent lanes (vectorized by the compiler; the lanes are summed
/// once at the end).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { dot_avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

// The index form over fixed-size arrays is what the compiler turns into vector multiply-adds.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        let (x, y): (&[f32; L], &[f32; L]) =
            (x.try_into().expect("exact chunk"), y.try_into().expect("exact chunk"));
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The weight widened into a transient column-major f32 copy, then candle's f32 GEMM.
fn widened_gemm<H: Half>(x: &[f32], w: &[H], m: usize, n: usize, k: usize) -> Result<Vec<f32>> {
    // wt [k, n] row-major = w [n, k] column-major: tiles of TILE weight rows are widened into
    // a scratch block and scattered into their columns.
    const TILE: usize = 64;
    let mut wt = vec![0f32; k * n];
    // Split the k (output row) axis of wt across threads; each task widens all n rows'
    // k-slice [k0, k1).
    let k_chunk = 256.min(k.max(1));
    wt.par_chunks_mut(k_chunk * n).enumerate().for_each(|(t, dst)| {
        let k0 = t * k_chunk;
        let kc = dst.len() / n.max(1);
        let mut block = vec![0f32; TILE * kc];
        for j0 in (0..n).step_by(TILE) {
            let jn = TILE.min(n - j0);
            for jj in 0..jn {
                let j = j0 + jj;
                H::widen(&w[j * k + k0..j * k + k0 + kc], &mut block[jj * kc..(jj + 1) * kc]);
            }
            for kk in 0..kc {
                let d = &mut dst[kk * n + j0..kk * n + j0 + jn];
                for (jj, v) in d.iter_mut().enumerate() {
                    *v = block[jj * kc + kk];
                }
            }
        }
    });
    let x_s = CpuStorage::F32(x.to_vec());
    let w_s = CpuStorage::F32(wt);
    // The right operand is wᵀ: [k, n], row-major.
    let (x_l, wt_l) = (Layout::contiguous((m, k)), Layout::contiguous((k, n)));
    match x_s.matmul(&w_s, (1, m, n, k), &x_l, &wt_l)? {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("linear: the f32 GEMM returned another dtype"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] =
                    (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn both_regimes_and_both_half_dtypes_give_the_f32_product_of_the_rounded_weight() {
        let (n, k) = (70, 45);
        for m in [1, 3, DOT_MAX_ROWS, DOT_MAX_ROWS + 5] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.31).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.17).cos()).collect();
            let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let xl = Layout::contiguous((m, k));
            let wl = Layout::contiguous((n, k));
            for (storage, rounded) in [
                (CpuStorage::BF16(wb.clone()), wb.iter().map(|v| v.to_f32()).collect::<Vec<_>>()),
                (CpuStorage::F16(wh.clone()), wh.iter().map(|v| v.to_f32()).collect()),
            ] {
                let (got, shape) = matmul_half_t(&x, &xl, &storage, &wl).unwrap();
                assert_eq!(shape.dims(), [m, n]);
                let want = reference(&x, &rounded, m, n, k);
                let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(diff < 1e-4, "m {m}, {:?}: differs by {diff}", storage.dtype());
            }
        }
    }
}
