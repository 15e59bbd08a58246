//! NoCaps-style evaluation image lists (`nocaps_{val,test}.json`: `image`, `img_id`).

use std::path::Path;

use serde::Deserialize;

use super::json::read_json;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NoCapsImage {
    pub image: String,
    pub img_id: u64,
}

pub fn read_nocaps(path: &Path) -> Result<Vec<NoCapsImage>> {
    read_json(path)
}
