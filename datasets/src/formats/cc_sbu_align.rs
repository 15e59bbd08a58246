//! MiniGPT-4's stage-2 data as its authors ship it: `cc_sbu_align/filter_cap.json`
//! (`{"annotations": [{"image_id", "caption"}]}`, the image `image/{image_id}.jpg` beside it),
//! and the instruction prompts (`prompts/alignment.txt`, one per line).

use std::path::Path;

use serde::Deserialize;

use super::json::read_json;
use crate::error::{DataError, Result};
use crate::item::{ImageSource, ImageTextItem};

/// The annotation file of a `cc_sbu_align` directory.
pub const CC_SBU_ALIGN_FILE: &str = "filter_cap.json";

#[derive(Deserialize)]
struct File {
    annotations: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    image_id: serde_json::Value,
    caption: String,
}

/// The items of `root/filter_cap.json`, images at `root/image/{image_id}.jpg`.
pub fn read_cc_sbu_align(root: &Path) -> Result<Vec<ImageTextItem>> {
    let path = root.join(CC_SBU_ALIGN_FILE);
    let file: File = read_json(&path)?;
    file.annotations
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let id = match row.image_id {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                other => {
                    return Err(DataError::field(
                        &path,
                        format!("annotations[{i}].image_id"),
                        format!("expected a string or integer, got {other}"),
                    ))
                }
            };
            let image = root.join("image").join(format!("{id}.jpg"));
            Ok(ImageTextItem {
                key: id,
                image: ImageSource::Path(image),
                caption: row.caption,
                image_id: i as u64,
            })
        })
        .collect()
}

/// The prompts of a MiniGPT-4 prompt file that hold `marker`, as MiniGPT-4 filters them
/// (the others are dropped); an empty result is an error naming the file.
pub fn read_instruction_prompts(path: &Path, marker: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let prompts: Vec<String> =
        text.lines().filter(|l| l.contains(marker)).map(str::to_string).collect();
    if prompts.is_empty() {
        return Err(DataError::field(path, "lines", format!("no prompt holds {marker}")));
    }
    Ok(prompts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_alignment_set_and_its_prompts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CC_SBU_ALIGN_FILE),
            r#"{"annotations": [{"image_id": "2", "caption": "A cat."}, {"image_id": 5, "caption": "B"}]}"#,
        )
        .unwrap();
        let items = read_cc_sbu_align(dir.path()).unwrap();
        assert_eq!(items[1].key, "5");
        assert_eq!(items[0].image, ImageSource::Path(dir.path().join("image/2.jpg")));
        let prompts = dir.path().join("alignment.txt");
        std::fs::write(
            &prompts,
            "<Img><ImageHere></Img> Describe.\nno marker\n<Img><ImageHere></Img> Say.\n",
        )
        .unwrap();
        let p = read_instruction_prompts(&prompts, "<ImageHere>").unwrap();
        assert_eq!(p, ["<Img><ImageHere></Img> Describe.", "<Img><ImageHere></Img> Say."]);
        let e = read_instruction_prompts(&prompts, "<image>").unwrap_err().to_string();
        assert!(e.contains("alignment.txt") && e.contains("<image>"), "{e}");
    }
}
