//! Helpers shared by the CLI commands: device parsing, loading and writing a model directory,
//! replacing files atomically, turning preprocessed images and token batches into tensors,
//! loading a generation model.

pub mod alloc;
pub mod atomic;
pub mod chat;
pub mod device;
pub mod feature_cache;
pub mod generation_ids;
pub mod generator;
pub mod inputs;
pub mod llava_chat;
pub mod llm_text;
pub mod minigpt4_chat;
pub mod model_dir;

/// A CLI-side error as the training loop carries it: one line with the whole context chain (the
/// loop's `train::Error` cannot hold an `anyhow::Error`).
pub fn train_error(e: anyhow::Error) -> train::Error {
    train::Error::Msg(format!("{e:#}"))
}
