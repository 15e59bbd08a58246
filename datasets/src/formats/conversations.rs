//! LLaVA's instruction-tuning JSON (`llava_instruct_150k.json`, `llava_v1_5_mix665k.json`): a
//! list of `{"id", "image", "conversations": [{"from": "human" | "gpt", "value"}, ...]}`, the
//! image path relative to an image folder, `<image>` in the human turn where the image goes.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::json::read_json;
use crate::error::{DataError, Result};
use crate::item::{ImageSource, ImageTextItem};

/// Who says a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Human,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub from: Speaker,
    pub value: String,
}

/// One sample: an image and the turns about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The record's `id` (its index when it has none).
    pub id: String,
    /// Relative to the image folder; `None` for the text-only records of the 665K mix.
    pub image: Option<String>,
    pub turns: Vec<Turn>,
}

#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    image: Option<String>,
    conversations: Vec<RowTurn>,
}

#[derive(Deserialize)]
struct RowTurn {
    from: String,
    value: String,
}

/// Reads the records of `path`; a speaker other than `human`/`gpt` (LLaVA's roles) is refused
/// with its record and turn named.
pub fn read_conversations(path: &Path) -> Result<Vec<Conversation>> {
    let rows: Vec<Row> = read_json(path)?;
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let id = match row.id {
                Some(serde_json::Value::String(s)) => s,
                Some(serde_json::Value::Number(n)) => n.to_string(),
                Some(other) => {
                    return Err(DataError::field(
                        path,
                        format!("[{i}].id"),
                        format!("expected a string or integer, got {other}"),
                    ))
                }
                None => i.to_string(),
            };
            let turns = row
                .conversations
                .into_iter()
                .enumerate()
                .map(|(j, t)| {
                    let from = match t.from.as_str() {
                        "human" => Speaker::Human,
                        "gpt" => Speaker::Assistant,
                        other => {
                            return Err(DataError::field(
                                path,
                                format!("[{i}].conversations[{j}].from"),
                                format!("expected \"human\" or \"gpt\", got \"{other}\""),
                            ))
                        }
                    };
                    Ok(Turn { from, value: t.value })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Conversation { id, image: row.image, turns })
        })
        .collect()
}

/// The loader items of the conversations that have an image, keyed by a name unique in the
/// file (the `id`, or `id#index` for a repeated one), with the index into `conversations`
/// as `image_id`. Returns the items and how many text-only records were left out.
pub fn conversation_items(
    conversations: &[Conversation],
    image_folder: &Path,
) -> (Vec<ImageTextItem>, usize) {
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(conversations.len());
    let mut text_only = 0;
    for (i, c) in conversations.iter().enumerate() {
        let Some(image) = &c.image else {
            text_only += 1;
            continue;
        };
        let key = if seen.insert(c.id.clone()) { c.id.clone() } else { format!("{}#{i}", c.id) };
        items.push(ImageTextItem {
            key,
            image: ImageSource::Path(image_folder.join(image)),
            caption: String::new(),
            image_id: i as u64,
        });
    }
    (items, text_only)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llava_records_and_names_bad_speakers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            r#"[{"id": "a", "image": "x.png", "conversations": [
                {"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]},
               {"id": 7, "conversations": [{"from": "human", "value": "hi"}]},
               {"id": "a", "image": "y.png", "conversations": []}]"#,
        )
        .unwrap();
        let c = read_conversations(&path).unwrap();
        assert_eq!(c[0].turns[1], Turn { from: Speaker::Assistant, value: "A".into() });
        assert_eq!(c[1].id, "7");
        let (items, text_only) = conversation_items(&c, Path::new("/img"));
        assert_eq!(text_only, 1);
        let keys: Vec<_> = items.iter().map(|i| (i.key.as_str(), i.image_id)).collect();
        assert_eq!(keys, [("a", 0), ("a#2", 2)]);
        assert_eq!(items[1].image, ImageSource::Path("/img/y.png".into()));

        std::fs::write(&path, r#"[{"conversations": [{"from": "system", "value": "s"}]}]"#)
            .unwrap();
        let e = read_conversations(&path).unwrap_err().to_string();
        assert!(e.contains("[0].conversations[0].from") && e.contains("system"), "{e}");
    }
}
