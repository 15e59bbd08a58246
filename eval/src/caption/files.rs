//! The two files COCO caption evaluation reads: the annotations (`{"images", "annotations": [{"image_id",
//! "caption"}]}`) and a result file (`[{"image_id", "caption"}]`), paired the way pycocotools and LAVIS pair
//! them.
//!
//! Image ids may be integers (COCO) or strings; an integer never equals a string. Every problem names its
//! file and field.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageId {
    Int(i64),
    Text(String),
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageId::Int(i) => write!(f, "{i}"),
            ImageId::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl ImageId {
    /// The key of this image in a JSON object (`per_image`): the bare number or the string.
    pub fn key(&self) -> String {
        match self {
            ImageId::Int(i) => i.to_string(),
            ImageId::Text(s) => s.clone(),
        }
    }
}

/// Reference captions, images in the order the file lists them (`images`, else first appearance in
/// `annotations`), each image's captions in file order: the order `COCO.getImgIds()` and `imgToAnns` give.
#[derive(Debug, Clone)]
pub struct CaptionAnnotations {
    pub source: String,
    pub images: Vec<ImageId>,
    pub references: HashMap<ImageId, Vec<String>>,
}

/// Candidate captions of a result file, in file order (duplicates kept; [`pair_results`] decides).
#[derive(Debug, Clone)]
pub struct CaptionResults {
    pub source: String,
    pub captions: Vec<(ImageId, String)>,
}

/// One image to score: its candidate and its references, untokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionImage {
    pub image_id: ImageId,
    pub candidate: String,
    pub references: Vec<String>,
}

/// The images to score and what was set aside on the way.
#[derive(Debug, Clone)]
pub struct PairedCaptions {
    pub images: Vec<CaptionImage>,
    /// Result entries after the first for the same image; pycocotools keeps them and COCOEvalCap then fails
    /// an assertion, LAVIS removes them before scoring (keeping the first): so do we, and say how many.
    pub duplicates_dropped: usize,
    /// Annotated images without a result: not scored (LAVIS scores the result's images only).
    pub images_without_result: usize,
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, e))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object<'v>(source: &str, v: &'v Value, field: &str) -> Result<&'v Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        Error::field(source, field, format!("expected an object, found {}", kind(v)))
    })
}

fn image_id(source: &str, obj: &Map<String, Value>, key: &str, at: &str) -> Result<ImageId> {
    let field = format!("{at}.{key}");
    match obj.get(key) {
        Some(Value::Number(n)) => n.as_i64().map(ImageId::Int).ok_or_else(|| {
            Error::field(source, &field, format!("expected an integer id, found {n}"))
        }),
        Some(Value::String(s)) => Ok(ImageId::Text(s.clone())),
        Some(v) => Err(Error::field(
            source,
            &field,
            format!("expected an integer or string id, found {}", kind(v)),
        )),
        None => Err(Error::field(source, &field, "missing")),
    }
}

fn caption(source: &str, obj: &Map<String, Value>, at: &str) -> Result<String> {
    match obj.get("caption") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(Error::field(
            source,
            format!("{at}.caption"),
            format!("expected a string, found {}", kind(v)),
        )),
        None => Err(Error::field(source, format!("{at}.caption"), "missing")),
    }
}

impl CaptionAnnotations {
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_json(&path.display().to_string(), &read_json(path)?)
    }

    pub fn from_json(source: &str, root: &Value) -> Result<Self> {
        let top = object(source, root, "(top level)")?;
        let list = match top.get("annotations") {
            Some(Value::Array(list)) => list,
            Some(v) => {
                return Err(Error::field(
                    source,
                    "annotations",
                    format!("expected an array, found {}", kind(v)),
                ))
            }
            None => return Err(Error::field(source, "annotations", "missing")),
        };
        let mut images = Vec::new();
        let mut references: HashMap<ImageId, Vec<String>> = HashMap::new();
        if let Some(listed) = top.get("images") {
            let listed = listed.as_array().ok_or_else(|| {
                Error::field(source, "images", format!("expected an array, found {}", kind(listed)))
            })?;
            for (i, item) in listed.iter().enumerate() {
                let at = format!("images[{i}]");
                let id = image_id(source, object(source, item, &at)?, "id", &at)?;
                if references.insert(id.clone(), Vec::new()).is_none() {
                    images.push(id);
                }
            }
        }
        let listed_images = !images.is_empty();
        for (i, item) in list.iter().enumerate() {
            let at = format!("annotations[{i}]");
            let obj = object(source, item, &at)?;
            let id = image_id(source, obj, "image_id", &at)?;
            let text = caption(source, obj, &at)?;
            match references.get_mut(&id) {
                Some(captions) => captions.push(text),
                None if listed_images => {
                    return Err(Error::field(
                        source,
                        format!("{at}.image_id"),
                        format!("image {id} is not in the file's images"),
                    ))
                }
                None => {
                    images.push(id.clone());
                    references.insert(id, vec![text]);
                }
            }
        }
        Ok(CaptionAnnotations { source: source.to_string(), images, references })
    }
}

impl CaptionResults {
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_json(&path.display().to_string(), &read_json(path)?)
    }

    pub fn from_json(source: &str, root: &Value) -> Result<Self> {
        let list = root.as_array().ok_or_else(|| {
            Error::field(source, "(top level)", format!("expected an array, found {}", kind(root)))
        })?;
        let mut captions = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let at = format!("[{i}]");
            let obj = object(source, item, &at)?;
            captions.push((image_id(source, obj, "image_id", &at)?, caption(source, obj, &at)?));
        }
        Ok(CaptionResults { source: source.to_string(), captions })
    }
}

/// Pair each result with its references, as LAVIS's `coco_caption_eval` does: every result image must be
/// annotated (pycocotools' "Results do not correspond to current coco set"), images are scored in the
/// annotation file's order, and an annotated image must have at least one reference.
pub fn pair_results(
    annotations: &CaptionAnnotations,
    results: &CaptionResults,
) -> Result<PairedCaptions> {
    let mut candidate: HashMap<&ImageId, &str> = HashMap::new();
    let mut duplicates_dropped = 0;
    for (i, (id, text)) in results.captions.iter().enumerate() {
        if !annotations.references.contains_key(id) {
            return Err(Error::Mismatch(format!(
                "{}: [{i}].image_id: image {id} is not in the annotations {}",
                results.source, annotations.source
            )));
        }
        if candidate.contains_key(id) {
            duplicates_dropped += 1;
        } else {
            candidate.insert(id, text);
        }
    }
    if candidate.is_empty() {
        return Err(Error::Mismatch(format!("{}: no results to score", results.source)));
    }
    let mut images = Vec::with_capacity(candidate.len());
    for id in &annotations.images {
        let Some(text) = candidate.get(id) else { continue };
        let references = &annotations.references[id];
        if references.is_empty() {
            return Err(Error::Mismatch(format!(
                "{}: image {id} has no reference caption, so it cannot be scored",
                annotations.source
            )));
        }
        images.push(CaptionImage {
            image_id: id.clone(),
            candidate: text.to_string(),
            references: references.clone(),
        });
    }
    let images_without_result = annotations.images.len() - images.len();
    Ok(PairedCaptions { images, duplicates_dropped, images_without_result })
}
