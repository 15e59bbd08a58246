//! Shared JSON helpers: read a file into a typed value with the path in every error.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{DataError, Result};

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_reader(std::io::BufReader::new(file))
        .map_err(|source| DataError::Json { path: path.to_path_buf(), source })
}

/// Either one string or a list of strings (LAVIS `answer` / `caption` fields use both).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}
