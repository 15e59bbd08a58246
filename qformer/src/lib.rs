//! BLIP-2 vision encoder, Q-Former, stage-one objectives, LLM bridges and training (candle).

pub mod error;
pub mod llm;
pub mod nn;

pub use error::{Error, Result};
