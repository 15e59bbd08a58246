//! Helpers shared by the CLI commands: device parsing, loading a model directory, turning
//! preprocessed images and token batches into tensors.

pub mod device;
pub mod inputs;
pub mod model_dir;pub mod generator;
