//! COCO/Flickr Karpathy-split JSON as BLIP/LAVIS ship it (`coco_karpathy_*.json`,
//! `flickr30k_*.json`; LAVIS `configs/datasets/coco/defaults_cap.yaml`,
//! `configs/datasets/flickr30k/defaults.yaml`).
//! Train: one row per caption with a string `image_id`; val/test: one row per image with a
//! list of captions and no id.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::json::{read_json, OneOrMany};
use crate::error::{DataError, Result};
use crate::item::{ImageSource, ImageTextItem};

#[derive(Deserialize)]
struct TrainRow {
    image: String,
    caption: OneOrMany,
    #[serde(default)]
    image_id: Option<serde_json::Value>,
}

/// Train rows; each distinct `image_id` (or image path when absent) gets a dense id in order of
/// first appearance, as LAVIS does.
pub fn read_karpathy_train(path: &Path, image_root: &Path) -> Result<Vec<ImageTextItem>> {
    let rows: Vec<TrainRow> = read_json(path)?;
    let mut ids: HashMap<String, u64> = HashMap::new();
    let mut items = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let group = match &row.image_id {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(DataError::field(
                    path,
                    format!("[{i}].image_id"),
                    format!("expected a string or integer, got {other}"),
                ))
            }
            None => row.image.clone(),
        };
        let next = ids.len() as u64;
        let image_id = *ids.entry(group).or_insert(next);
        let captions = row.caption.into_vec();
        if captions.is_empty() {
            return Err(DataError::field(path, format!("[{i}].caption"), "empty caption list"));
        }
        for caption in captions {
            items.push(ImageTextItem {
                key: row.image.clone(),
                image: ImageSource::Path(image_root.join(&row.image)),
                caption,
                image_id,
            });
        }
    }
    Ok(items)
}

/// One evaluation image with all its captions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalImage {
    pub image: String,
    pub captions: Vec<String>,
    /// COCO id parsed from the file name like LAVIS (`...000000391895.jpg` → 391895), if any.
    pub coco_id: Option<u64>,
}

/// A retrieval/caption evaluation split with LAVIS's text numbering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalSplit {
    pub images: Vec<EvalImage>,
    /// All captions, numbered in file order.
    pub texts: Vec<String>,
    /// For image i, the ids of its texts.
    pub img2txt: Vec<Vec<usize>>,
    /// For text t, its image index.
    pub txt2img: Vec<usize>,
}

/// LAVIS's id rule: basename, `str.strip(".jpg")` (a character-set strip), last `_` piece.
pub fn coco_id_from_filename(image: &str) -> Option<u64> {
    let base = image.rsplit('/').next()?;
    let stripped = base.trim_matches(|c| matches!(c, '.' | 'j' | 'p' | 'g'));
    stripped.rsplit('_').next()?.parse().ok()
}

#[derive(Deserialize)]
struct EvalRow {
    image: String,
    caption: OneOrMany,
}

pub fn read_karpathy_eval(path: &Path) -> Result<RetrievalSplit> {
    let rows: Vec<EvalRow> = read_json(path)?;
    let mut split = RetrievalSplit {
        images: Vec::with_capacity(rows.len()),
        texts: Vec::new(),
        img2txt: Vec::with_capacity(rows.len()),
        txt2img: Vec::new(),
    };
    for (i, row) in rows.into_iter().enumerate() {
        let captions = row.caption.into_vec();
        if captions.is_empty() {
            return Err(DataError::field(path, format!("[{i}].caption"), "no captions"));
        }
        let mut ids = Vec::with_capacity(captions.len());
        for c in &captions {
            ids.push(split.texts.len());
            split.texts.push(c.clone());
            split.txt2img.push(i);
        }
        split.img2txt.push(ids);
        split.images.push(EvalImage {
            coco_id: coco_id_from_filename(&row.image),
            image: row.image,
            captions,
        });
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_id_uses_lavis_charset_strip() {
        assert_eq!(coco_id_from_filename("val2014/COCO_val2014_000000391895.jpg"), Some(391895));
        assert_eq!(coco_id_from_filename("flickr30k-images/1007129816.jpg"), Some(1007129816));
        assert_eq!(coco_id_from_filename("x/cat.png"), None);
    }
}
