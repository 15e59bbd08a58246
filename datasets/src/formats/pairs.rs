//! Flat (image, caption) lists: BLIP CapFilt JSON arrays (`{url|image, caption}`) and plain
//! JSONL/CSV of `image_path, caption`.

use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use super::json::read_json;
use crate::error::{DataError, Result};
use crate::item::{ImageSource, ImageTextItem};

#[derive(Deserialize)]
struct CapFiltRow {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    image: Option<String>,
    caption: String,
}

/// A CapFilt-style JSON array. `image` rows are joined to `image_root`; `url` rows stay URLs.
/// Each row is its own image.
pub fn read_capfilt(path: &Path, image_root: &Path) -> Result<Vec<ImageTextItem>> {
    let rows: Vec<CapFiltRow> = read_json(path)?;
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let (key, image) = match (r.image, r.url) {
                (Some(p), _) => (p.clone(), ImageSource::Path(image_root.join(p))),
                (None, Some(u)) => (u.clone(), ImageSource::Url(u)),
                (None, None) => {
                    return Err(DataError::field(path, format!("[{i}]"), "needs `image` or `url`"))
                }
            };
            Ok(ImageTextItem { key, image, caption: r.caption, image_id: i as u64 })
        })
        .collect()
}

#[derive(Deserialize)]
struct PairRow {
    image_path: String,
    caption: String,
}

/// JSONL with one `{"image_path", "caption"}` object per line (blank lines ignored).
pub fn read_pairs_jsonl(path: &Path, image_root: &Path) -> Result<Vec<ImageTextItem>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut items = Vec::new();
    let mut ids = std::collections::HashMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: PairRow = serde_json::from_str(&line)
            .map_err(|e| DataError::field(path, format!("line {}", n + 1), e.to_string()))?;
        let next = ids.len() as u64;
        let image_id = *ids.entry(row.image_path.clone()).or_insert(next);
        items.push(ImageTextItem {
            key: row.image_path.clone(),
            image: ImageSource::Path(image_root.join(&row.image_path)),
            caption: row.caption,
            image_id,
        });
    }
    Ok(items)
}
