//! Helpers shared by the CLI commands: device parsing, loading a model directory, turning
//! preprocessed images and token batches into tensors, loading a generation model.

pub mod alloc;
pub mod device;
pub mod generator;
pub mod inputs;
pub mod model_dir;
