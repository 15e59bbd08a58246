//! MiniGPT-4: BLIP-2's frozen ViT + `ln_vision` + the Q-Former's query path, one `llama_proj`
//! Linear, and a LLaMA LLM. Loaded from a parts file ([`Parts`]); only `llama_proj` can train.

mod model;
mod parts;
mod pieces;

pub use model::MiniGpt4;
pub use parts::{write, Parts, PartsFile};
pub use pieces::{image_instruction, minigpt4_pieces};
