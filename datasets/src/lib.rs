//! BLIP-2 data: formats, preprocessing, tokenization, loader, synthetic world.
//!
//! Everything here is plain Rust data (`Vec<f32>` + shapes); the CLI turns it into tensors.

pub mod error;
pub mod formats;
pub mod image;
pub mod item;
pub mod loader;
pub mod sources;
pub mod synth;
pub mod text;

pub use error::{DataError, Result};
pub use item::{ImageSource, ImageTextItem};
pub use loader::{
    EpochIter, ImageTextBatch, Loader, LoaderConfig, LoaderState, SampleCheck, SkippedSample,
};
