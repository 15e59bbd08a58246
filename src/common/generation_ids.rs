//! The EOS and pad ids a LLaMA-family directory generates with: its `generation_config.json`
//! first, then its `config.json`, as HF's `generate` reads them.

use std::path::Path;

use anyhow::{bail, Context, Result};
use qformer::llm::llama::TokenIds;

/// One id or a list of ids from a JSON value, read as the LLaMA config reads them.
fn token_ids(v: Option<&serde_json::Value>) -> Option<Vec<u32>> {
    serde_json::from_value::<TokenIds>(v?.clone()).ok().map(|ids| ids.to_vec())
}

/// `(eos ids, pad id)`: `generation_config.json`, else the text config; pad falls back to the
/// first EOS (as HF's `generate` does).
pub fn eos_and_pad(dir: &Path, text_cfg: &qformer::llm::LlamaConfig) -> Result<(Vec<u32>, u32)> {
    let path = dir.join("generation_config.json");
    let gen: serde_json::Value = if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
    } else {
        serde_json::Value::Null
    };
    let eos = token_ids(gen.get("eos_token_id"))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| text_cfg.eos_token_ids());
    if eos.is_empty() {
        bail!("{}: no eos_token_id in generation_config.json or config.json", dir.display());
    }
    let pad = token_ids(gen.get("pad_token_id"))
        .and_then(|v| v.first().copied())
        .or_else(|| text_cfg.pad_token_id.as_ref().and_then(|p| p.to_vec().first().copied()))
        .unwrap_or(eos[0]);
    Ok((eos, pad))
}
