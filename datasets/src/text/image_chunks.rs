//! Original LLaVA's `tokenizer_image_token`, shared by its generation and its training: the
//! prompt split at each image marker, each stretch tokenized with the special tokens, the BOS
//! kept once in front when the first stretch starts with it, and the first token of every
//! stretch dropped then.

use tokenizers::Tokenizer;

use crate::error::{DataError, Result};

/// The text runs of `prompt` (one more than its `marker`s) and the BOS kept in front, if any.
pub fn tokenize_image_chunks(
    tokenizer: &Tokenizer,
    prompt: &str,
    marker: &str,
    bos: Option<u32>,
) -> Result<(Option<u32>, Vec<Vec<u32>>)> {
    let chunks = prompt
        .split(marker)
        .map(|c| {
            tokenizer
                .encode(c, true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| DataError::Invalid(format!("tokenizing prompt piece {c:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let lead = match (chunks[0].first(), bos) {
        (Some(&first), Some(b)) if first == b => Some(b),
        _ => None,
    };
    let offset = usize::from(lead.is_some());
    let runs = chunks.into_iter().map(|c| c.get(offset..).unwrap_or(&[]).to_vec()).collect();
    Ok((lead, runs))
}
