//! The tasks of BLIP-2's two stages and of the connectors' (LLaVA, MiniGPT-4); the quickstart's
//! own phases (contrastive ViT, text-only LM) implement [`crate::Task`] beside their data.

pub mod connector;
mod image;
pub mod stage_one;
pub mod stage_two;
pub mod templates;

pub use connector::{ConnectorMicro, ConnectorTask};
pub use image::ImageBatch;
pub use stage_one::{StageOne, StageOneBatch};
pub use stage_two::{StageTwo, StageTwoMicro};
pub use templates::{Template, TemplateTokenizer, TrainText};
