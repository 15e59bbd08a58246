//! A whole `Blip2ForConditionalGeneration` directory (ViT + Q-Former + projection + LLM, LLM
//! tokenizer, image processor) ready to generate from image files, with HF 4.57 input layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use datasets::image::{decode_file, eval_transform, DecodeLimits, ImageProcessorConfig};
use qformer::llm::{
    generate_with_history, pad_batch, Blip2Llm, Blip2LlmConfig, GenerationConfig, LanguageModel,
    PaddingSide,
};
use qformer::model::{Blip2Qformer, ImageInput};
use qformer::weights::{detect_parts, load, LoadOptions, TensorSet};
use tokenizers::Tokenizer;

/// Which LLM family the checkpoint holds, as far as prompts and outputs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmKind {
    /// Decoder-only: OPT, and LLaMA (whose tokenizer adds `<s>` as OPT's adds `</s>`).
    Opt,
    T5,
}

pub struct Blip2Generator {
    vision_qformer: Blip2Qformer,
    llm: Blip2Llm,
    tokenizer: Tokenizer,
    processor: ImageProcessorConfig,
    /// `generation_config.json` `eos_token_id` (one id or a list), else the text config's.
    eos_token_ids: Vec<u32>,
    device: Device,
}

fn read_eos(dir: &Path, fallback: u32) -> Result<Vec<u32>> {
    let path = dir.join("generation_config.json");
    if !path.exists() {
        return Ok(vec![fallback]);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    match v.get("eos_token_id") {
        None | Some(serde_json::Value::Null) => Ok(vec![fallback]),
        Some(serde_json::Value::Number(n)) => Ok(vec![n
            .as_u64()
            .ok_or_else(|| anyhow!("{}: eos_token_id is not an id", path.display()))?
            as u32]),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_u64()
                    .map(|x| x as u32)
                    .ok_or_else(|| anyhow!("{}: eos_token_id holds a non-id", path.display()))
            })
            .collect(),
        Some(_) => bail!("{}: eos_token_id must be an id or a list of ids", path.display()),
    }
}

impl Blip2Generator {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (cfg, set) = TensorSet::from_hf_dir(dir, device)
            .with_context(|| format!("loading model directory {}", dir.display()))?;
        let llm_cfg = Blip2LlmConfig::from_json_file(&dir.join("config.json"))?;
        let opts =
            LoadOptions { allow_known_unused: true, device: device.clone(), ..Default::default() };
        let parts = detect_parts(&cfg, &set);
        let vision_qformer = load(&cfg, &set, parts, &opts)
            .with_context(|| format!("loading vision + Q-Former from {}", dir.display()))?
            .model;
        let llm_tensors: HashMap<String, Tensor> = set
            .names()
            .filter(|n| n.starts_with("language_"))
            .filter_map(|n| set.get(n).map(|t| (n.to_string(), t.clone())))
            .collect();
        let vb = VarBuilder::from_tensors(llm_tensors, DType::F32, device);
        let llm = Blip2Llm::load(vb, &llm_cfg).with_context(|| {
            format!("loading language_projection + language_model from {}", dir.display())
        })?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| anyhow!("reading LLM tokenizer {}: {e}", tok_path.display()))?;
        let processor = ImageProcessorConfig::from_file(&dir.join("preprocessor_config.json"))?;
        let fallback_eos = match &llm_cfg.text {
            qformer::llm::TextConfig::Opt(c) => c.eos_token_id,
            qformer::llm::TextConfig::T5(c) => c.eos_token_id,
            qformer::llm::TextConfig::Llama(c) => c.eos_token_ids().first().copied().unwrap_or(2),
        };
        let eos_token_ids = read_eos(dir, fallback_eos)?;
        Ok(Self {
            vision_qformer,
            llm,
            tokenizer,
            processor,
            eos_token_ids,
            device: device.clone(),
        })
    }

    /// The prompt handling: LLaMA is decoder-only like OPT (BOS + prompt, left padded).
    pub fn kind(&self) -> LlmKind {
        match self.llm.language_model {
            LanguageModel::Opt(_) | LanguageModel::Llama(_) => LlmKind::Opt,
            LanguageModel::T5(_) => LlmKind::T5,
        }
    }

    /// `GenerationConfig` with this checkpoint's EOS and pad ids.
    pub fn generation_config(&self) -> GenerationConfig {
        GenerationConfig {
            eos_token_ids: self.eos_token_ids.clone(),
            pad_token_id: self.llm.language_model.pad_token_id(),
            ..Default::default()
        }
    }

    /// Decode + preprocess image files. -> [B, 3, H, W]
    pub fn pixels(&self, paths: &[PathBuf]) -> Result<Tensor> {
        let mut data = Vec::new();
        let (mut h, mut w) = (0, 0);
        for p in paths {
            let img = decode_file(p, DecodeLimits::default()).context("reading an input image")?;
            let t = eval_transform(&img, &self.processor);
            (h, w) = (t.height, t.width);
            data.extend(t.data);
        }
        Ok(Tensor::from_vec(data, (paths.len(), 3, h, w), &self.device)?)
    }

    /// Prompt ids as the HF tokenizer gives them (OPT: `</s>` + prompt; LLaMA: `<s>` + prompt; T5: prompt + `</s>`).
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| anyhow!("tokenizing prompt {prompt:?}: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Generate for each (image, prompt) pair in one batch (OPT left padded, T5 right padded).
    /// Returns ids as HF does (OPT: new tokens; T5: decoder start token + new tokens), each row
    /// ending at its EOS.
    pub fn generate(
        &self,
        images: &[PathBuf],
        prompts: &[String],
        cfg: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        if images.len() != prompts.len() {
            bail!("{} images but {} prompts", images.len(), prompts.len());
        }
        let pixels = self.pixels(images)?;
        let query_output =
            self.vision_qformer.encode_image(ImageInput::Pixels(&pixels))?.query_output;
        let ids = prompts.iter().map(|p| self.prompt_ids(p)).collect::<Result<Vec<_>>>()?;
        let (embeds, mask) = self.llm.prompt_inputs(&query_output, &ids)?;
        // HF's repetition penalty sees the decoder-only input ids: `<image>` x Q + prompt,
        // left padded (T5's penalty sees only decoder ids).
        let out = match (self.kind(), self.llm.config.image_token_index) {
            (LlmKind::Opt, Some(image)) => {
                let nq = self.llm.config.num_query_tokens;
                let rows: Vec<Vec<u32>> = ids
                    .iter()
                    .map(|r| std::iter::repeat_n(image, nq).chain(r.iter().copied()).collect())
                    .collect();
                let (full, _) =
                    pad_batch(&rows, cfg.pad_token_id, PaddingSide::Left, &Device::Cpu)?;
                let full = full.to_vec2::<u32>()?;
                generate_with_history(&self.llm, &embeds, &mask, Some(&full), cfg)?
            }
            _ => generate_with_history(&self.llm, &embeds, &mask, None, cfg)?,
        };
        Ok(out)
    }

    /// `batch_decode(..., skip_special_tokens=True)`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| anyhow!("decoding ids {ids:?}: {e}"))
    }
}
