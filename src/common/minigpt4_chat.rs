//! MiniGPT-4 as its chat runs it, shared by `generate`, `caption` and `eval vqa`: the prompt split
//! on the image marker, each piece tokenized without special tokens, one BOS in front, the
//! images' `llama_proj(Q-Former)` rows spliced in at the markers, generation that stops after
//! the end symbol (`###`) as well as at EOS, the answer cut as MiniGPT-4 cuts it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use datasets::image::ImageProcessorConfig;
use qformer::connector::{splice, Connector, PadSide};
use qformer::llm::{generate_with_history, GenerationConfig};
use qformer::minigpt4::{minigpt4_pieces, MiniGpt4};
use tokenizers::Tokenizer;

use super::chat::{Chat, VqaSearch, LAVIS_VQA_SEARCH};
use super::generation_ids::eos_and_pad;
use super::inputs::load_images;

/// MiniGPT-4's detailed-description instruction.
pub const MINIGPT4_CAPTION_INSTRUCTION: &str = "Describe this image in detail.";

/// Whether `--model` names a MiniGPT-4 parts file rather than a model directory.
pub fn is_parts_file(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e == "toml")
}

/// MiniGPT-4's question prompt: the template with `<Img>{marker}</Img> {question}` in its `{}`.
pub fn question_prompt(template: &str, marker: &str, question: &str) -> String {
    template.replacen("{}", &qformer::minigpt4::image_instruction(marker, question), 1)
}

/// The token sequences MiniGPT-4 stops after: the end symbol as it tokenizes on its own (after
/// a space, `▁###`) and as it tokenizes glued to a preceding word (`###`), the two encodings
/// MiniGPT-4 lists for Vicuna.
pub fn stop_sequences(tokenizer: &Tokenizer, end_sym: &str) -> Result<Vec<Vec<u32>>> {
    let enc = |s: &str| -> Result<Vec<u32>> {
        Ok(tokenizer
            .encode(s, false)
            .map_err(|e| anyhow!("tokenizing the end symbol {end_sym:?}: {e}"))?
            .get_ids()
            .to_vec())
    };
    let alone = enc(end_sym)?;
    let word = enc("a")?;
    let glued = enc(&format!("a{end_sym}"))?;
    let mut out = vec![alone];
    if let Some(rest) = glued.strip_prefix(word.as_slice()) {
        if !rest.is_empty() && !out.contains(&rest.to_vec()) {
            out.push(rest.to_vec());
        }
    }
    Ok(out)
}

/// MiniGPT-4's answer text: everything before the end symbol, after the last `Assistant:`,
/// stripped.
fn answer_text(decoded: &str, end_sym: &str) -> String {
    let before = decoded.split(end_sym).next().unwrap_or("");
    before.rsplit("Assistant:").next().unwrap_or("").trim().to_string()
}

/// A MiniGPT-4 loaded for generation: the model, its LLM's tokenizer, the BLIP-2 image
/// processor, and the BOS and stop sequences its prompts and generations use.
pub struct MiniGpt4Chat {
    model: MiniGpt4,
    tokenizer: Tokenizer,
    processor: ImageProcessorConfig,
    bos: u32,
    stop: Vec<Vec<u32>>,
    eos_token_ids: Vec<u32>,
    pad_token_id: u32,
    device: Device,
}

impl MiniGpt4Chat {
    pub fn load(parts_file: &Path, device: &Device) -> Result<Self> {
        let model = MiniGpt4::from_parts_file(parts_file, device)
            .with_context(|| format!("loading MiniGPT-4 from {}", parts_file.display()))?;
        let parts = model.parts().clone();
        let tok_path = parts.llm.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| anyhow!("reading tokenizer {}: {e}", tok_path.display()))?;
        let llm = model.language_model();
        let bos = llm
            .config()
            .bos_token_id
            .as_ref()
            .and_then(|b| b.to_vec().first().copied())
            .ok_or_else(|| anyhow!("{}: config.json has no bos_token_id", parts.llm.display()))?;
        let processor = ImageProcessorConfig::from_file(&model.preprocessor_config_path())?;
        let stop = stop_sequences(&tokenizer, &parts.end_sym)?;
        let (eos_token_ids, pad_token_id) = eos_and_pad(&parts.llm, llm.config())?;
        Ok(Self {
            model,
            tokenizer,
            processor,
            bos,
            stop,
            eos_token_ids,
            pad_token_id,
            device: device.clone(),
        })
    }
}

impl Chat for MiniGpt4Chat {
    /// The prompt for one question in MiniGPT-4's template.
    fn question_prompt(&self, question: &str) -> String {
        let p = self.model.parts();
        question_prompt(&p.prompt_template, &p.image_marker, question)
    }

    /// Generation settings from the command's flags, with the model's EOS, pad and stop ids.
    fn generation_config(&self, base: GenerationConfig) -> GenerationConfig {
        GenerationConfig {
            eos_token_ids: self.eos_token_ids.clone(),
            pad_token_id: self.pad_token_id,
            stop_sequences: self.stop.clone(),
            ..base
        }
    }

    /// The new ids for `prompt` (text as the model reads it, one image marker per image).
    fn generate(
        &self,
        images: &[PathBuf],
        prompt: &str,
        cfg: &GenerationConfig,
    ) -> Result<Vec<u32>> {
        let parts = self.model.parts();
        let text_pieces: Vec<&str> = prompt.split(parts.image_marker.as_str()).collect();
        if text_pieces.len() - 1 != images.len() {
            bail!(
                "the prompt has {} {} marker(s) but {} --image file(s) were given",
                text_pieces.len() - 1,
                parts.image_marker,
                images.len()
            );
        }
        let ids = text_pieces
            .iter()
            .map(|p| {
                self.tokenizer
                    .encode(*p, false)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| anyhow!("tokenizing prompt piece {p:?}: {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = vec![minigpt4_pieces(self.bos, ids)];
        let pv = load_images(images, &self.processor, &self.device)?;
        let image_rows = self.model.image_embeds(&pv)?;
        let llm = self.model.language_model();
        let s = splice(&rows, &image_rows, llm, PadSide::Left)?;
        // `generate(inputs_embeds=...)` without input ids: the penalty sees the new tokens only.
        let mut out = generate_with_history(llm, &s.embeds, &s.attention_mask, None, cfg)?;
        Ok(out.remove(0))
    }

    /// MiniGPT-4's answer text of generated ids.
    fn answer(&self, ids: &[u32]) -> Result<String> {
        let decoded =
            self.tokenizer.decode(ids, true).map_err(|e| anyhow!("decoding ids {ids:?}: {e}"))?;
        Ok(answer_text(&decoded, &self.model.parts().end_sym))
    }

    fn vqa_prompt(&self) -> String {
        self.question_prompt("{}")
    }

    fn lavis_questions(&self) -> bool {
        true
    }

    fn vqa_search(&self) -> VqaSearch {
        LAVIS_VQA_SEARCH
    }

    fn caption_instruction(&self) -> &'static str {
        MINIGPT4_CAPTION_INSTRUCTION
    }
}
