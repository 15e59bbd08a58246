//! BLIP-2 vision encoder, Q-Former, stage-one objectives, LLM bridges and training (candle).

pub mod error;
pub mod nn;
pub mod train;

pub use error::{Error, Result};
