//! Helpers shared by the CLI commands: device parsing, loading and writing a model directory,
//! replacing files atomically, turning preprocessed images and token batches into tensors,
//! loading a generation model.

pub mod alloc;
pub mod atomic;
pub mod device;
pub mod feature_cache;
pub mod generator;
pub mod inputs;
pub mod llm_text;
pub mod model_dir;
