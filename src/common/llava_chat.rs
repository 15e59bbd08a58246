//! LLaVA as `generate`, `caption` and `eval vqa` run it, from an HF `LlavaForConditionalGeneration`
//! directory (either tensor naming) or an original haotian-liu LLaVA directory
//! (`LlavaLlamaForCausalLM`, the CLIP tower in its own directory).
//!
//! - HF: the prompt is tokenized whole with BOS (`<image>` is an added token), each `<image>`
//!   id stands for the image's feature rows (`LlavaProcessor` expands it), and the repetition
//!   penalty sees the expanded `input_ids`, as HF's `generate` does.
//! - Original: `tokenizer_image_token` splits the prompt on `<image>`, tokenizes every chunk
//!   (the first token of each dropped when the first chunk starts with BOS, so BOS stays only
//!   in front), and the features go where the markers stood; `generate(inputs_embeds=…)` gives
//!   the penalty the new tokens only. `image_aspect_ratio = "pad"` pads each image to a square
//!   with the mean colour first (`expand2square`).
//!
//! Both build the sequence from connector [`Piece`]s and [`splice`] it, then generate until EOS.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use datasets::image::{
    clip_transform, decode_file, expand_to_square, mean_background, ClipImageProcessorConfig,
    DecodeLimits,
};
use datasets::text::tokenize_image_chunks;
use qformer::connector::{splice, PadSide, Piece};
use qformer::llava::original::{
    default_hub_cache, is_original_config, load_original_dir, preprocessor_config_path,
    read_original_config, ImageAspect,
};
use qformer::llava::{load_dir, LlavaConfig, LlavaForConditionalGeneration};
use qformer::llm::{generate_with_history, GenerationConfig};
use qformer::weights::frozen_var_builder;
use tokenizers::Tokenizer;

use super::chat::{Chat, VqaSearch};
use super::generation_ids::eos_and_pad;

/// The image marker of LLaVA prompts.
pub const IMAGE_MARKER: &str = "<image>";

/// LLaVA-1.5's chat template for one image and one question (llava-hf model cards; LLaVA's
/// `vicuna_v1` conversation without its system line).
pub const LLAVA_QUESTION_TEMPLATE: &str = "USER: <image>\n{} ASSISTANT:";

/// What LLaVA-1.5's VQAv2 / GQA evaluation appends to each question (`llava_vqav2_*.jsonl`).
pub const LLAVA_SHORT_ANSWER: &str = "\nAnswer the question using a single word or phrase.";

/// LLaVA-1.5's short-caption instruction (its COCO / TextCaps training prompts).
pub const LLAVA_CAPTION_INSTRUCTION: &str =
    "Provide a one-sentence caption for the provided image.";

/// LLaVA-1.5's `model_vqa_loader`: greedy (temperature 0), at most 128 new tokens.
pub const LLAVA_VQA_SEARCH: VqaSearch =
    VqaSearch { num_beams: 1, max_new_tokens: 128, min_new_tokens: 0 };

/// Original LLaVA's `<im_start>` / `<im_end>` around the image (`mm_use_im_start_end`).
const IM_START: &str = "<im_start>";
const IM_END: &str = "<im_end>";

/// `IMAGE_TOKEN_INDEX`: where an image stands in original LLaVA's tokenized prompt.
pub const ORIGINAL_IMAGE_TOKEN_INDEX: i64 = -200;

/// Whether `dir/config.json` describes a LLaVA checkpoint: HF (`model_type` "llava" or
/// `architectures` naming `LlavaForConditionalGeneration`) or original (a top-level vision tower
/// or projector type). An unreadable config is not LLaVA (the BLIP-2 loader then reports it).
pub fn is_llava_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else { return false };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    v.get("model_type").and_then(|t| t.as_str()) == Some("llava")
        || v.get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("LlavaForConditionalGeneration")))
        || is_original_config(&v)
}

/// The HF processor's `input_ids`: `ids` (tokenized with BOS) with each `image_token` id
/// repeated `per_image` times. Errors when the marker count differs from `n_images`.
pub fn expand_image_tokens(
    ids: &[u32],
    image_token: u32,
    per_image: usize,
    n_images: usize,
) -> Result<Vec<u32>> {
    check_marker_count(ids.iter().filter(|&&t| t == image_token).count(), n_images)?;
    Ok(ids
        .iter()
        .flat_map(|&t| {
            let n = if t == image_token { per_image } else { 1 };
            std::iter::repeat_n(t, n)
        })
        .collect())
}

fn check_marker_count(markers: usize, n_images: usize) -> Result<()> {
    if markers != n_images {
        bail!(
            "the prompt has {markers} {IMAGE_MARKER} marker(s) but {n_images} --image file(s) were given"
        );
    }
    Ok(())
}

/// The tokenizer's BOS id (`bos_token` of `tokenizer_config.json`, a string or `{"content"}`),
/// what `tokenizer_image_token` compares the first token with.
fn tokenizer_bos(dir: &Path, tokenizer: &Tokenizer) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let bos = v.get("bos_token")?;
    let content = bos.as_str().or_else(|| bos.get("content").and_then(|c| c.as_str()))?;
    tokenizer.token_to_id(content)
}

/// Which layout the directory has, with what only that layout needs.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Hf,
    Original { aspect: ImageAspect, im_start_end: bool, bos: Option<u32> },
}

/// A prompt ready for the model.
#[derive(Debug, Clone)]
pub struct LlavaPrompt {
    /// Token runs and image slots.
    pieces: Vec<Piece>,
    /// HF: the processor's `input_ids` (markers expanded), the repetition penalty's history.
    pub input_ids: Option<Vec<u32>>,
    /// Original: `tokenizer_image_token`'s ids, `-200` where each image goes.
    pub prompt_ids: Option<Vec<i64>>,
}

/// A LLaVA directory read up to its weights: config, layout, tokenizer, image processor.
pub struct LlavaSpec {
    dir: PathBuf,
    cfg: LlavaConfig,
    layout: Layout,
    tokenizer: Tokenizer,
    processor: ClipImageProcessorConfig,
}

impl LlavaSpec {
    pub fn read(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("reading {}", cfg_path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", cfg_path.display()))?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| anyhow!("reading tokenizer {}: {e}", tok_path.display()))?;
        let (cfg, layout, proc_path) = if is_original_config(&value) {
            let (orig, tower) = read_original_config(dir, default_hub_cache().as_deref())?;
            let proc_path = preprocessor_config_path(&tower, dir)?;
            let config_bos = orig
                .llava
                .text_config
                .bos_token_id
                .as_ref()
                .and_then(|b| b.to_vec().first().copied());
            let bos = tokenizer_bos(dir, &tokenizer).or(config_bos);
            let layout = Layout::Original {
                aspect: orig.image_aspect_ratio,
                im_start_end: orig.mm_use_im_start_end,
                bos,
            };
            (orig.llava, layout, proc_path)
        } else {
            let cfg = LlavaConfig::from_file(&cfg_path)
                .with_context(|| format!("loading LLaVA config from {}", dir.display()))?;
            (cfg, Layout::Hf, dir.join("preprocessor_config.json"))
        };
        let processor = ClipImageProcessorConfig::from_file(&proc_path)?;
        Ok(Self { dir: dir.to_path_buf(), cfg, layout, tokenizer, processor })
    }

    /// The prompt for one question in LLaVA-1.5's template (`<im_start><image><im_end>` when
    /// the model was trained with them).
    pub fn question_prompt(&self, question: &str) -> String {
        let template = match self.layout {
            Layout::Original { im_start_end: true, .. } => LLAVA_QUESTION_TEMPLATE.replacen(
                IMAGE_MARKER,
                &format!("{IM_START}{IMAGE_MARKER}{IM_END}"),
                1,
            ),
            _ => LLAVA_QUESTION_TEMPLATE.to_string(),
        };
        template.replacen("{}", question, 1)
    }

    /// Tokenizes `prompt` (text as the model reads it, one `<image>` per image) for `n_images`.
    pub fn prompt(&self, prompt: &str, n_images: usize) -> Result<LlavaPrompt> {
        match self.layout {
            Layout::Hf => {
                let enc = self
                    .tokenizer
                    .encode(prompt, true)
                    .map_err(|e| anyhow!("tokenizing prompt {prompt:?}: {e}"))?;
                let ids = enc.get_ids();
                let image = self.cfg.image_token_index;
                let input_ids =
                    expand_image_tokens(ids, image, self.cfg.tokens_per_image(), n_images)?;
                let mut pieces = Vec::new();
                for run in ids.split(|&t| t == image) {
                    pieces.push(Piece::prompt(run.to_vec()));
                    pieces.push(Piece::Image);
                }
                pieces.pop();
                Ok(LlavaPrompt { pieces, input_ids: Some(input_ids), prompt_ids: None })
            }
            Layout::Original { bos, .. } => {
                check_marker_count(prompt.matches(IMAGE_MARKER).count(), n_images)?;
                let (lead, runs) =
                    tokenize_image_chunks(&self.tokenizer, prompt, IMAGE_MARKER, bos)?;
                let mut pieces: Vec<Piece> =
                    lead.map(|b| Piece::prompt(vec![b])).into_iter().collect();
                let mut prompt_ids: Vec<i64> = lead.map(i64::from).into_iter().collect();
                for (i, run) in runs.into_iter().enumerate() {
                    if i > 0 {
                        pieces.push(Piece::Image);
                        prompt_ids.push(ORIGINAL_IMAGE_TOKEN_INDEX);
                    }
                    prompt_ids.extend(run.iter().map(|&t| i64::from(t)));
                    pieces.push(Piece::prompt(run));
                }
                Ok(LlavaPrompt { pieces, input_ids: None, prompt_ids: Some(prompt_ids) })
            }
        }
    }

    /// The images as the model reads them (`expand2square` first for `pad`), stacked.
    // paths: N files -> [N, 3, H, W]
    pub fn pixel_values(&self, paths: &[PathBuf], device: &Device) -> Result<Tensor> {
        let pad = matches!(self.layout, Layout::Original { aspect: ImageAspect::Pad, .. });
        let background = mean_background(&self.processor.image_mean);
        let mut data = Vec::new();
        let (mut h, mut w) = (self.cfg.vision_config.image_size, self.cfg.vision_config.image_size);
        for p in paths {
            let img = decode_file(p, DecodeLimits::default()).map_err(|e| anyhow!("image {e}"))?;
            let img = if pad { expand_to_square(&img, background) } else { img };
            let t = clip_transform(&img, &self.processor);
            (h, w) = (t.height, t.width);
            data.extend(t.data);
        }
        Ok(Tensor::from_vec(data, (paths.len(), 3, h, w), device)?)
    }
}

/// A LLaVA loaded for generation.
pub struct LlavaChat {
    spec: LlavaSpec,
    model: LlavaForConditionalGeneration,
    eos_token_ids: Vec<u32>,
    pad_token_id: u32,
    device: Device,
}

impl LlavaChat {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::from_spec(LlavaSpec::read(dir)?, device)
    }

    /// The weights of a read directory.
    pub fn from_spec(spec: LlavaSpec, device: &Device) -> Result<Self> {
        let dir = &spec.dir;
        let tensors = match spec.layout {
            Layout::Hf => load_dir(dir, device).map(|(_, _, t)| t),
            Layout::Original { .. } => {
                load_original_dir(dir, default_hub_cache().as_deref(), device).map(|d| d.tensors)
            }
        }
        .with_context(|| format!("loading LLaVA model directory {}", dir.display()))?;
        // Matrices stay in the checkpoint's dtype (bf16/f16 halves a 7B model); activations are f32.
        let vb = frozen_var_builder(tensors, DType::F32, device);
        let model = LlavaForConditionalGeneration::load(vb, &spec.cfg)
            .with_context(|| format!("building LLaVA from {}", dir.display()))?;
        let (eos_token_ids, pad_token_id) = eos_and_pad(dir, &spec.cfg.text_config)?;
        Ok(Self { spec, model, eos_token_ids, pad_token_id, device: device.clone() })
    }

    /// The new ids for a tokenized prompt and its images.
    pub fn generate_prompt(
        &self,
        prompt: &LlavaPrompt,
        images: &[PathBuf],
        cfg: &GenerationConfig,
    ) -> Result<Vec<u32>> {
        let llm = self.model.language_model();
        let feats = if images.is_empty() {
            let (n, h) = (self.spec.cfg.tokens_per_image(), self.spec.cfg.text_config.hidden_size);
            Tensor::zeros((0, n, h), llm.dtype(), &self.device)?
        } else {
            self.model.image_features(&self.spec.pixel_values(images, &self.device)?)?
        };
        let s = splice(std::slice::from_ref(&prompt.pieces), &feats, llm, PadSide::Left)?;
        let history = prompt.input_ids.clone().map(|ids| vec![ids]);
        let mut out =
            generate_with_history(llm, &s.embeds, &s.attention_mask, history.as_deref(), cfg)?;
        Ok(out.remove(0))
    }

    /// The decoded ids, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.spec.tokenizer.decode(ids, true).map_err(|e| anyhow!("decoding ids {ids:?}: {e}"))
    }
}

impl Chat for LlavaChat {
    fn question_prompt(&self, question: &str) -> String {
        self.spec.question_prompt(question)
    }

    /// LLaVA-1.5's VQA prompt: the question template with its short-answer instruction.
    fn vqa_prompt(&self) -> String {
        self.spec.question_prompt(&format!("{{}}{LLAVA_SHORT_ANSWER}"))
    }

    /// LLaVA's evaluation scripts put the questions in as written.
    fn lavis_questions(&self) -> bool {
        false
    }

    fn vqa_search(&self) -> VqaSearch {
        LLAVA_VQA_SEARCH
    }

    fn caption_instruction(&self) -> &'static str {
        LLAVA_CAPTION_INSTRUCTION
    }

    /// Generation settings from the command's flags, with the model's EOS and pad ids.
    fn generation_config(&self, base: GenerationConfig) -> GenerationConfig {
        GenerationConfig {
            eos_token_ids: self.eos_token_ids.clone(),
            pad_token_id: self.pad_token_id,
            stop_sequences: Vec::new(),
            ..base
        }
    }

    /// The new ids for `prompt` (text as the model reads it, one `<image>` per image).
    fn generate(
        &self,
        images: &[PathBuf],
        prompt: &str,
        cfg: &GenerationConfig,
    ) -> Result<Vec<u32>> {
        let p = self.spec.prompt(prompt, images.len())?;
        self.generate_prompt(&p, images, cfg)
    }

    /// LLaVA's answer text: the decoded ids, stripped (`batch_decode(...)[0].strip()`).
    fn answer(&self, ids: &[u32]) -> Result<String> {
        Ok(::eval::pystr::py_strip(&self.decode(ids)?).to_string())
    }
}
