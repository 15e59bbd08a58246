//! Image-text retrieval: LAVIS `compute_sim_matrix` (ITC similarities, ITM re-ranking of the top `k_test`),
//! `RetrievalTask._report_metrics`, the top-k candidate selection, an image-encoding cache, and the report.

pub mod cache;
pub mod gallery;
pub mod metrics;
pub mod report;
pub mod rerank;
pub mod topk;

pub use cache::{Fnv64, ImageCache};
pub use gallery::{encode_images, EncodedImages, ImageGallery, TextGallery};
pub use metrics::{rank_of_targets, retrieval_metrics, RetrievalMetrics};
pub use report::RetrievalReport;
pub use rerank::{compute_scores, rerank_pairs, similarity_matrix, RetrievalScores, NOT_RERANKED};
pub use topk::{top_k_indices, top_k_rows};
