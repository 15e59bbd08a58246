//! The chat-style models (MiniGPT-4, LLaVA) behind one interface, so `generate`, `caption` and
//! `eval vqa` run each in its own prompt template with the same code.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use qformer::llm::GenerationConfig;

use super::llava_chat::{is_llava_dir, LlavaChat};
use super::minigpt4_chat::{is_parts_file, MiniGpt4Chat};

/// Search settings a system evaluates VQA with when the flags leave them out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VqaSearch {
    pub num_beams: usize,
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
}

/// LAVIS' zero-shot VQA settings (BLIP-2's `predict_answers`).
pub const LAVIS_VQA_SEARCH: VqaSearch =
    VqaSearch { num_beams: 5, max_new_tokens: 10, min_new_tokens: 1 };

/// A vision-language chat model as the commands run it.
pub trait Chat {
    /// The prompt for one question in the model's own template.
    fn question_prompt(&self, question: &str) -> String;

    /// The VQA prompt with `{}` for the question.
    fn vqa_prompt(&self) -> String;

    /// Whether VQA questions go in as LAVIS cleans them (else as written).
    fn lavis_questions(&self) -> bool;

    /// The VQA search settings the flags default to.
    fn vqa_search(&self) -> VqaSearch;

    /// The caption instruction `--prompt` defaults to.
    fn caption_instruction(&self) -> &'static str;

    /// Generation settings from the command's flags, with the model's EOS, pad and stop ids.
    fn generation_config(&self, base: GenerationConfig) -> GenerationConfig;

    /// The new ids for `prompt` (text as the model reads it, one image marker per image).
    fn generate(
        &self,
        images: &[PathBuf],
        prompt: &str,
        cfg: &GenerationConfig,
    ) -> Result<Vec<u32>>;

    /// The model's answer text of generated ids.
    fn answer(&self, ids: &[u32]) -> Result<String>;
}

/// The chat model `--model` names (a MiniGPT-4 parts file or a LLaVA directory); `None` for
/// anything else (a BLIP-2 directory).
pub fn load_chat(model: &Path, device: &Device) -> Result<Option<Box<dyn Chat>>> {
    if is_parts_file(model) {
        return Ok(Some(Box::new(MiniGpt4Chat::load(model, device)?)));
    }
    if is_llava_dir(model) {
        return Ok(Some(Box::new(LlavaChat::load(model, device)?)));
    }
    Ok(None)
}
