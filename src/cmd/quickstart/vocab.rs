//! Word-level tokenizers for the synthetic world, written as ordinary `tokenizer.json` files so
//! the quickstart reads them through the same loaders as a Hub checkpoint: a BERT-style one for
//! the Q-Former (`[CLS] … [SEP]`, `[DEC]` for ITG) and an OPT-style one for the LLM (`</s>` as
//! BOS, "\n" as the caption end). A 60-word vocabulary keeps the tiny models' embeddings and
//! softmaxes small; WordPiece or BPE would add nothing on a closed world.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

/// Q-Former special tokens, in id order (BERT's first ids, then LAVIS's `[DEC]`).
pub const QFORMER_SPECIALS: [&str; 6] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"];
/// OPT special tokens, in id order (pad 1, bos = eos 2, as facebook/opt-*), then the newline.
pub const OPT_SPECIALS: [&str; 4] = ["<s>", "<pad>", "</s>", "<unk>"];
pub const NEWLINE: &str = "\n";

/// Lower-cased words and single punctuation marks of `texts`, sorted and unique.
pub fn world_words<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut words = BTreeSet::new();
    for text in texts {
        let lower = text.to_lowercase();
        let mut word = String::new();
        for c in lower.chars() {
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                words.insert(std::mem::take(&mut word));
            }
            if !c.is_whitespace() {
                words.insert(c.to_string());
            }
        }
        if !word.is_empty() {
            words.insert(word);
        }
    }
    words.into_iter().collect()
}

fn added(id: usize, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false,
           "rstrip": false, "normalized": false, "special": true})
}

fn vocab(specials: &[&str], words: &[String]) -> (serde_json::Map<String, Value>, usize) {
    let mut map = serde_json::Map::new();
    for (i, s) in specials
        .iter()
        .chain(words.iter().map(String::as_str).collect::<Vec<_>>().iter())
        .enumerate()
    {
        map.entry(s.to_string()).or_insert(json!(i));
    }
    let n = map.len();
    (map, n)
}

fn write(path: &Path, tokenizer: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(tokenizer)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    // Round trip through the real loader so a malformed file fails here, not mid-run.
    tokenizers::Tokenizer::from_file(path)
        .map_err(|e| anyhow!("{} does not load as a tokenizer: {e}", path.display()))?;
    Ok(())
}

/// BERT-style word-level tokenizer; returns the vocabulary size.
pub fn write_qformer_tokenizer(path: &Path, words: &[String]) -> Result<usize> {
    let (vocab, n) = vocab(&QFORMER_SPECIALS, words);
    let special = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": QFORMER_SPECIALS.iter().enumerate().map(|(i, s)| added(i, s)).collect::<Vec<_>>(),
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1), special("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    write(path, &tok)?;
    Ok(n)
}

/// OPT-style word-level tokenizer (`</s>` prepended like facebook/opt-*); returns the vocabulary size.
pub fn write_opt_tokenizer(path: &Path, words: &[String]) -> Result<usize> {
    let mut all: Vec<String> = vec![NEWLINE.to_string()];
    all.extend(words.iter().cloned());
    let (vocab, n) = vocab(&OPT_SPECIALS, &all);
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": OPT_SPECIALS.iter().enumerate().map(|(i, s)| added(i, s)).collect::<Vec<_>>(),
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": " +"}, "behavior": "Removed", "invert": false},
            {"type": "Split", "pattern": {"Regex": "[^\\w\\s]|\\n"}, "behavior": "Isolated", "invert": false}
        ]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    write(path, &tok)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_punctuation_and_lowercase() {
        let w = world_words(["What color is the Circle?", "a red circle"]);
        assert_eq!(w, ["?", "a", "circle", "color", "is", "red", "the", "what"]);
    }

    #[test]
    fn tokenizers_encode_the_world_like_hub_ones() {
        let dir = tempfile::tempdir().unwrap();
        let words = world_words(["what color is the circle?", "a red circle", "2"]);
        let q = dir.path().join("q.json");
        let n = write_qformer_tokenizer(&q, &words).unwrap();
        assert_eq!(n, 6 + words.len());
        let t = tokenizers::Tokenizer::from_file(&q).unwrap();
        let ids = t.encode("A red Circle", true).unwrap().get_ids().to_vec();
        let id = |s: &str| t.token_to_id(s).unwrap();
        assert_eq!(ids, [2, id("a"), id("red"), id("circle"), 3]);
        assert_eq!(t.token_to_id("[DEC]"), Some(5));

        let o = dir.path().join("o.json");
        write_opt_tokenizer(&o, &words).unwrap();
        let t = tokenizers::Tokenizer::from_file(&o).unwrap();
        let id = |s: &str| t.token_to_id(s).unwrap();
        let ids = t.encode("what color is the circle? red\n", true).unwrap().get_ids().to_vec();
        assert_eq!(
            ids,
            [2, id("what"), id("color"), id("is"), id("the"), id("circle"), id("?"), id("red"), 4]
        );
        assert_eq!(t.decode(&ids, true).unwrap().trim(), "what color is the circle ? red");
    }
}
