//! Library error type: every variant a user can cause names the file and the field or id at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Tensor computation failed (shape mismatch between model and inputs, device errors).
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

    /// A field that is missing or has the wrong type, e.g. `annotations[3].answers[2].answer`.
    #[error("{source_name}: {field}: {problem}")]
    Field { source_name: String, field: String, problem: String },

    /// Files that do not belong together (a result for a question the annotations do not have, ...).
    #[error("{0}")]
    Mismatch(String),

    /// Arguments to a metric that cannot be scored (ragged matrices, indices out of range, NaN scores).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Error::Json { path: path.into(), source }
    }
    pub fn field(
        source_name: impl Into<String>,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        Error::Field {
            source_name: source_name.into(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}
