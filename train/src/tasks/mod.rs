//! The tasks of BLIP-2's two stages; the quickstart's own phases (contrastive ViT, text-only LM)
//! implement [`crate::Task`] beside their data.

mod image;
pub mod stage_one;
pub mod stage_two;

pub use image::ImageBatch;
pub use stage_one::{StageOne, StageOneBatch};
pub use stage_two::{StageTwo, StageTwoMicro};
