//! Errors of the data crate: every variant names the file (and field) that was wrong.

use std::path::PathBuf;

/// Result alias of the data crate.
pub type Result<T> = std::result::Result<T, DataError>;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
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
    /// A field is missing or has the wrong type (`field` is a JSON-pointer-like path).
    #[error("{path}: field `{field}`: {message}")]
    Field { path: PathBuf, field: String, message: String },
    #[error("{what}: cannot decode image: {message}")]
    Image { what: String, message: String },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{path}: table: {message}")]
    Table { path: PathBuf, message: String },
    #[error("{path}: tar shard: {message}")]
    Tar { path: PathBuf, message: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    pub(crate) fn field(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        DataError::Field { path: path.into(), field: field.into(), message: message.into() }
    }
}
