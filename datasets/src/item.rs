//! The typed sample every reader produces and the loader consumes.

use std::path::PathBuf;

/// Where the pixels of a sample come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A file on disk (annotation path already joined with the image root).
    Path(PathBuf),
    /// Encoded bytes already in memory (e.g. read from a tar shard).
    Bytes(Vec<u8>),
    /// A remote URL (CapFilt / img2dataset tables); must be downloaded before training.
    Url(String),
    /// A member of a webdataset tar shard, read in place: `len` bytes at `offset`.
    ShardMember { shard: std::sync::Arc<PathBuf>, offset: u64, len: u64 },
}

/// One (image, caption) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTextItem {
    /// Stable name used in logs and skip reports (file path or shard key).
    pub key: String,
    pub image: ImageSource,
    pub caption: String,
    /// Dense id of the image (same image ⇒ same id), used for ITC positive grouping and as
    /// retrieval ground truth.
    pub image_id: u64,
}
