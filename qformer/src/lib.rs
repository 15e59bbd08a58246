//! BLIP-2 vision encoder, Q-Former, stage-one objectives, LLM bridges and training (candle).

pub mod bench_models;
pub mod config;
pub mod error;
pub mod llm;
pub mod masks;
pub mod model;
pub mod nn;
pub mod objectives;
pub mod train;
pub mod weights;

pub use config::{Blip2Config, QFormerConfig, VisionConfig};
pub use error::{Error, Result};
