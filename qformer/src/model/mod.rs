//! BLIP-2 models: frozen vision encoder, Q-Former, heads and the stage-one model that ties them.

pub mod blip2;
pub mod heads;
pub mod image_rows;
pub mod qformer;
pub mod vision;

pub use blip2::{
    itc_similarity, Blip2Qformer, ImageFeatures, ImageInput, ModelParts, TextFeatures,
};
pub use heads::{l2_normalize, LmHead, StageOneHeads, DEFAULT_TEMP};
pub use image_rows::ImageRows;
pub use qformer::{QFormer, QFormerInput, QFormerOutput, QueryKv, TextEmbeddings};
pub use vision::VisionTransformer;
