//! Additive attention masks built on the host from 0/1 attention masks.

use candle_core::{DType, Device, Result, Tensor};

/// Value of a masked score: HF adds the dtype minimum once (never twice, so no -inf and no NaN
/// for rows that see only padding).
pub const MASKED: f32 = f32::MIN;

/// Read a `[B, S]` 0/1 mask (any dtype) into host rows.
pub fn mask_rows(attention_mask: &Tensor) -> Result<Vec<Vec<bool>>> {
    let m = attention_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(m.into_iter().map(|r| r.into_iter().map(|x| x != 0.0).collect()).collect())
}

/// Causal + padding mask `[B, 1, T, S]` for `T` new queries at positions `S-T..S`.
pub fn causal_padding_mask(rows: &[Vec<bool>], t: usize, device: &Device) -> Result<Tensor> {
    let b = rows.len();
    let s = rows.first().map(|r| r.len()).unwrap_or(0);
    let past = s.saturating_sub(t);
    let mut data = Vec::with_capacity(b * t * s);
    for row in rows {
        for i in 0..t {
            for (j, &keep) in row.iter().enumerate() {
                data.push(if keep && j <= past + i { 0.0 } else { MASKED });
            }
        }
    }
    Tensor::from_vec(data, (b, 1, t, s), device)
}

/// Padding-only mask `[B, 1, 1, S]` (T5 encoder self-attention and cross-attention).
pub fn padding_mask(rows: &[Vec<bool>], device: &Device) -> Result<Tensor> {
    let b = rows.len();
    let s = rows.first().map(|r| r.len()).unwrap_or(0);
    let data: Vec<f32> =
        rows.iter().flat_map(|r| r.iter().map(|&k| if k { 0.0 } else { MASKED })).collect();
    Tensor::from_vec(data, (b, 1, 1, s), device)
}
