//! The report a retrieval evaluation writes: ITC-only metrics, ITM re-ranked metrics, gallery sizes.

use serde::{Deserialize, Serialize};

use super::metrics::RetrievalMetrics;

/// `{"itc": {...}, "rerank": {...}, "images": N, "texts": M}`; `rerank` is omitted when no ITM
/// re-ranking ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// From the ITC similarity matrices alone.
    pub itc: RetrievalMetrics,
    /// From the matrices after re-scoring the top `k_test` candidates with ITM (what LAVIS reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<RetrievalMetrics>,
    pub images: usize,
    pub texts: usize,
}
