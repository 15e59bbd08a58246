//! Image-text retrieval metrics (LAVIS `RetrievalTask._report_metrics`), the top-k candidate selection
//! that feeds ITM re-ranking, and the report the retrieval evaluation writes.

pub mod metrics;
pub mod report;
pub mod topk;

pub use metrics::{rank_of_targets, retrieval_metrics, RetrievalMetrics};
pub use report::RetrievalReport;
pub use topk::{top_k_indices, top_k_rows};
