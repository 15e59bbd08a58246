//! Captions as the frozen LLM of stage two reads them (LAVIS `blip2_opt` / `blip2_t5`): the
//! text side of every stage-two batch, in `blip2 pretrain` and in the quickstart.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use qformer::objectives::StageTwoText;
use tokenizers::Tokenizer;

/// Which objective the LLM's captions are cut for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmKind {
    /// Decoder-only: the loss on `prompt + caption + "\n"` after the BOS and the prompt.
    Opt,
    /// Encoder-decoder: a prefix-LM split of the caption.
    T5,
    /// Decoder-only LLaMA / Vicuna: tokenized as for OPT (the tokenizer's post-processor adds
    /// the `<s>` BOS), the loss taken by `llama_lm_loss`.
    Llama,
}

pub struct CaptionTokenizer {
    tokenizer: Tokenizer,
    /// Names the tokenizer in errors.
    source: PathBuf,
    kind: LlmKind,
    /// Text before every caption (LAVIS `prompt`); it takes no loss.
    prompt: String,
    max_txt_len: usize,
}

impl CaptionTokenizer {
    pub fn new(
        tokenizer: Tokenizer,
        source: PathBuf,
        kind: LlmKind,
        prompt: &str,
        max_txt_len: usize,
    ) -> Self {
        Self { tokenizer, source, kind, prompt: prompt.to_string(), max_txt_len }
    }

    pub fn from_file(
        path: PathBuf,
        kind: LlmKind,
        prompt: &str,
        max_txt_len: usize,
    ) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("reading the LLM tokenizer {}: {e}", path.display()))?;
        Ok(Self::new(tokenizer, path, kind, prompt, max_txt_len))
    }

    fn ids(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, special)
            .map_err(|e| anyhow!("tokenizing {text:?} with {}: {e}", self.source.display()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Captions as LAVIS tokenizes them. OPT / LLaMA: `prompt + caption + "\n"` with the tokenizer's BOS,
    /// truncated to `max_txt_len`, the BOS + prompt tokens taking no loss. FLAN-T5: caption ids
    /// (the prefix-LM split happens in the loss).
    pub fn texts(&self, captions: &[String]) -> Result<StageTwoText> {
        match self.kind {
            LlmKind::Opt | LlmKind::Llama => {
                let prompt_len = self.ids(&self.prompt, true)?.len();
                let mut texts = Vec::with_capacity(captions.len());
                for c in captions {
                    let mut ids = self.ids(&format!("{}{c}\n", self.prompt), true)?;
                    ids.truncate(self.max_txt_len);
                    if ids.len() <= prompt_len {
                        bail!(
                            "caption {c:?} leaves no target tokens after the prompt (max_txt_len {})",
                            self.max_txt_len
                        );
                    }
                    texts.push(ids);
                }
                Ok(StageTwoText::Opt { prompt_lens: vec![prompt_len; texts.len()], texts })
            }
            LlmKind::T5 => {
                let captions = captions
                    .iter()
                    .map(|c| {
                        let mut ids = self.ids(c, false)?;
                        ids.truncate(self.max_txt_len);
                        Ok(ids)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(StageTwoText::T5PrefixLm { captions })
            }
        }
    }
}
