//! BLIP-2 vision encoder, Q-Former, stage-one objectives, LLM bridges and weight loading (candle).
//! Training lives in the `train` crate, benchmark workloads in `workloads`.

pub mod config;
pub mod connector;
pub mod error;
pub mod llava;
pub mod llm;
pub mod masks;
pub mod minigpt4;
pub mod model;
pub mod nn;
pub mod objectives;
pub mod weights;

pub use config::{Blip2Config, QFormerConfig, VisionConfig};
pub use error::{Error, Result};
