//! Self-attention masks for the three BLIP-2 stage-one modes (LAVIS `Qformer.py`
//! `get_extended_attention_mask`, `blip2_qformer.py::forward`).
//!
//! Polarity lives in the type: [`PaddingMask`] is HF's `attention_mask` (1 = keep), and
//! [`AdditiveMask`] is what is added to attention scores (0 = keep, -10000 = masked, as in
//! BERT/LAVIS; finite so that a fully masked row cannot produce NaN).

use candle_core::{DType, Device, Result, Tensor};

/// Value added to the scores of masked keys (LAVIS and HF BERT self-attention).
pub const MASKED: f32 = -10000.0;

/// Text padding mask `[B, L]`, 1 = real token, 0 = padding (HF `attention_mask`).
#[derive(Debug, Clone, PartialEq)]
pub struct PaddingMask {
    rows: Vec<Vec<bool>>,
}

impl PaddingMask {
    /// From rows of 0/1 values (anything non-zero is kept).
    pub fn from_rows<T: Copy + Into<i64>>(rows: &[Vec<T>]) -> candle_core::Result<Self> {
        let len = rows.first().map_or(0, |r| r.len());
        if rows.iter().any(|r| r.len() != len) {
            candle_core::bail!("padding mask rows have different lengths");
        }
        Ok(Self { rows: rows.iter().map(|r| r.iter().map(|&v| v.into() != 0).collect()).collect() })
    }

    /// From an HF `attention_mask` tensor `[B, L]` of any integer or float dtype.
    pub fn from_tensor(mask: &Tensor) -> Result<Self> {
        let (b, l) = mask.dims2()?;
        let vals = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let rows =
            (0..b).map(|i| vals[i * l..(i + 1) * l].iter().map(|&v| v != 0.0).collect()).collect();
        Ok(Self { rows })
    }

    /// Every token kept.
    pub fn all_keep(batch: usize, len: usize) -> Self {
        Self { rows: vec![vec![true; len]; batch] }
    }

    pub fn batch_size(&self) -> usize {
        self.rows.len()
    }

    pub fn len(&self) -> usize {
        self.rows.first().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn keep(&self, b: usize, j: usize) -> bool {
        self.rows[b][j]
    }

    /// The mask as a `[B, L]` tensor of 0/1 in `dtype` (HF layout).
    pub fn to_tensor(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        let flat: Vec<f32> =
            self.rows.iter().flatten().map(|&k| if k { 1.0 } else { 0.0 }).collect();
        Tensor::from_vec(flat, (self.batch_size(), self.len()), device)?.to_dtype(dtype)
    }

    /// Rows picked by index (used to build ITM batches with negatives).
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        Self { rows: idx.iter().map(|&i| self.rows[i].clone()).collect() }
    }
}

/// Who may attend to whom in a Q-Former self-attention pass over `[queries; text]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMode {
    /// ITC: each modality sees only itself (queries see queries, text sees unpadded text).
    /// With only queries or only text this is the LAVIS image pass or text pass.
    UniModal,
    /// ITM: every row sees all queries and all unpadded text.
    Bidirectional,
    /// ITG (UniLM style): query rows see queries only; text row i sees all queries and
    /// unpadded text j <= i.
    MultimodalCausal,
}

/// Additive self-attention mask `[B, 1, rows, keys]` (0 = attend, -10000 = masked).
#[derive(Debug, Clone)]
pub struct AdditiveMask {
    mask: Tensor,
    num_queries: usize,
    text_len: usize,
    query_rows: bool,
}

impl AdditiveMask {
    /// Mask over the sequence `[num_queries queries; text]`. `text` is `None` for a query-only
    /// pass; then `batch` gives the batch size (otherwise it must equal the text batch).
    pub fn new(
        mode: MaskMode,
        num_queries: usize,
        text: Option<&PaddingMask>,
        batch: usize,
        device: &Device,
    ) -> Result<Self> {
        if let Some(t) = text {
            if t.batch_size() != batch {
                candle_core::bail!(
                    "padding mask has batch {} but the pass has batch {batch}",
                    t.batch_size()
                )
            }
        }
        let q = num_queries;
        let l = text.map_or(0, |t| t.len());
        let n = q + l;
        let mut values = Vec::with_capacity(batch * n * n);
        for b in 0..batch {
            for i in 0..n {
                for j in 0..n {
                    let key_ok = j < q || text.is_some_and(|t| t.keep(b, j - q));
                    let row_is_query = i < q;
                    let key_is_query = j < q;
                    let allowed = key_ok
                        && match mode {
                            MaskMode::UniModal => row_is_query == key_is_query,
                            MaskMode::Bidirectional => true,
                            MaskMode::MultimodalCausal => {
                                if row_is_query {
                                    key_is_query
                                } else {
                                    key_is_query || j <= i
                                }
                            }
                        };
                    values.push(if allowed { 0.0 } else { MASKED });
                }
            }
        }
        let mask = Tensor::from_vec(values, (batch, 1, n, n), device)?;
        Ok(Self { mask, num_queries: q, text_len: l, query_rows: true })
    }

    /// Only the text rows `[B, 1, L, Q + L]`, for a pass whose queries are not recomputed but
    /// come from a cache (LAVIS ITG with `past_key_values`).
    pub fn text_rows(&self) -> Result<Self> {
        if !self.query_rows {
            return Ok(self.clone());
        }
        let mask = self.mask.narrow(2, self.num_queries, self.text_len)?;
        Ok(Self { mask, query_rows: false, ..self.clone() })
    }

    /// `[B, 1, rows, keys]`, to be added to attention scores.
    pub fn tensor(&self) -> &Tensor {
        &self.mask
    }

    pub fn num_queries(&self) -> usize {
        self.num_queries
    }

    pub fn text_len(&self) -> usize {
        self.text_len
    }

    /// Whether the rows include the query positions.
    pub fn has_query_rows(&self) -> bool {
        self.query_rows
    }

    /// Keep-matrix of batch item `b` (true = attend), for tests and debugging.
    pub fn keep_matrix(&self, b: usize) -> Result<Vec<Vec<bool>>> {
        let m = self.mask.get(b)?.get(0)?.to_vec2::<f32>()?;
        Ok(m.into_iter().map(|r| r.into_iter().map(|v| v == 0.0).collect()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: &[&str]) -> Vec<Vec<bool>> {
        rows.iter().map(|r| r.split_whitespace().map(|c| c == "1").collect()).collect()
    }

    // 2 queries; batch item 0: 3 text tokens, the last one padding; item 1: no padding.
    fn padding() -> PaddingMask {
        PaddingMask::from_rows(&[vec![1i64, 1, 0], vec![1, 1, 1]]).unwrap()
    }

    #[test]
    fn unimodal_separates_modalities_and_masks_padded_keys() {
        let m =
            AdditiveMask::new(MaskMode::UniModal, 2, Some(&padding()), 2, &Device::Cpu).unwrap();
        #[rustfmt::skip]
        let expected0 = matrix(&[
            "1 1 0 0 0",
            "1 1 0 0 0",
            "0 0 1 1 0",
            "0 0 1 1 0",
            "0 0 1 1 0",
        ]);
        assert_eq!(m.keep_matrix(0).unwrap(), expected0);
        #[rustfmt::skip]
        let expected1 = matrix(&[
            "1 1 0 0 0",
            "1 1 0 0 0",
            "0 0 1 1 1",
            "0 0 1 1 1",
            "0 0 1 1 1",
        ]);
        assert_eq!(m.keep_matrix(1).unwrap(), expected1);
    }

    #[test]
    fn unimodal_text_only_pass() {
        let m =
            AdditiveMask::new(MaskMode::UniModal, 0, Some(&padding()), 2, &Device::Cpu).unwrap();
        assert_eq!(m.keep_matrix(0).unwrap(), matrix(&["1 1 0", "1 1 0", "1 1 0"]));
        assert_eq!(m.tensor().dims(), &[2, 1, 3, 3]);
        let v = m.tensor().get(0).unwrap().get(0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(v[0], vec![0.0, 0.0, -10000.0]);
    }

    #[test]
    fn unimodal_query_only_pass_sees_everything() {
        let m = AdditiveMask::new(MaskMode::UniModal, 3, None, 2, &Device::Cpu).unwrap();
        assert_eq!(m.keep_matrix(1).unwrap(), matrix(&["1 1 1", "1 1 1", "1 1 1"]));
    }

    #[test]
    fn bidirectional_every_row_sees_queries_and_unpadded_text() {
        let m = AdditiveMask::new(MaskMode::Bidirectional, 2, Some(&padding()), 2, &Device::Cpu)
            .unwrap();
        #[rustfmt::skip]
        let expected0 = matrix(&[
            "1 1 1 1 0",
            "1 1 1 1 0",
            "1 1 1 1 0",
            "1 1 1 1 0",
            "1 1 1 1 0",
        ]);
        assert_eq!(m.keep_matrix(0).unwrap(), expected0);
        assert!(m.keep_matrix(1).unwrap().iter().flatten().all(|&k| k));
    }

    #[test]
    fn multimodal_causal_matches_unilm_prefix_mask() {
        let m = AdditiveMask::new(MaskMode::MultimodalCausal, 2, Some(&padding()), 2, &Device::Cpu)
            .unwrap();
        #[rustfmt::skip]
        let expected0 = matrix(&[
            "1 1 0 0 0",
            "1 1 0 0 0",
            "1 1 1 0 0",
            "1 1 1 1 0",
            "1 1 1 1 0",
        ]);
        assert_eq!(m.keep_matrix(0).unwrap(), expected0);
        #[rustfmt::skip]
        let expected1 = matrix(&[
            "1 1 0 0 0",
            "1 1 0 0 0",
            "1 1 1 0 0",
            "1 1 1 1 0",
            "1 1 1 1 1",
        ]);
        assert_eq!(m.keep_matrix(1).unwrap(), expected1);
        let rows = m.text_rows().unwrap();
        assert_eq!(rows.tensor().dims(), &[2, 1, 3, 5]);
        assert_eq!(rows.keep_matrix(0).unwrap(), expected0[2..].to_vec());
        assert!(!rows.has_query_rows());
    }

    #[test]
    fn padding_mask_roundtrip_and_batch_check() {
        let p = padding();
        let t = p.to_tensor(DType::I64, &Device::Cpu).unwrap();
        assert_eq!(t.to_vec2::<i64>().unwrap(), vec![vec![1, 1, 0], vec![1, 1, 1]]);
        assert_eq!(PaddingMask::from_tensor(&t).unwrap(), p);
        assert!(AdditiveMask::new(MaskMode::Bidirectional, 2, Some(&p), 3, &Device::Cpu).is_err());
    }
}
