//! Library error type. Tensor code keeps `candle_core::Result`; errors that a user can cause
//! (files, configs, checkpoints) get a variant that names the culprit.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A config value that cannot describe a model (e.g. heads not dividing the hidden size).
    #[error("invalid config: {0}")]
    Config(String),

    /// A checkpoint that does not fit the model: names every missing, unexpected and misshaped tensor.
    #[error("checkpoint {source_name} does not match the model: {report}")]
    Checkpoint { source_name: String, report: String },

    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Error::Json { path: path.into(), source }
    }
}
