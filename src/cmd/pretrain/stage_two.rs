//! Stage two of `blip2 pretrain` (LAVIS `blip2_opt` / `blip2_t5` pretraining): the frozen LLM of
//! `model.llm`, a `language_projection` to train, and each batch's captions as LLM token ids.
//!
//! The LLM weights are loaded as constants (not `Var`s), so backward never computes gradients
//! for them and the optimizer holds no state for them; what trains is the Q-Former's query path,
//! the query tokens, `ln_vision` and the projection (`is_stage_two_trainable`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use datasets::image::ImageProcessorConfig;
use std::collections::HashMap;
use std::path::PathBuf;

use qformer::llm::{Blip2Llm, Blip2LlmConfig, LanguageModel, LanguageProjection, TextConfig};
use qformer::objectives::is_stage_two_trainable;
use qformer::weights::TensorSet;
use train::{rng, DecayRule, ParamStore, RunConfig};

use super::model::RunModel;
use crate::cmd::export::side_files;
use crate::common::llm_text::{CaptionTokenizer, LlmKind};
use crate::common::model_dir::save_model_dir_with_files;
use train::init::named_vars;
use train::init_fresh;

pub struct StageTwoLlm {
    pub llm: Blip2Llm,
    /// `language_projection.{weight,bias}`: trainable.
    pub projection_vars: VarMap,
    /// The batch captions as the LLM's token ids.
    pub captions: CaptionTokenizer,
    /// `model.llm`: its config.json and tokenizers go into the trained model's directory.
    pub dir: PathBuf,
    /// The frozen `language_model.*` tensors (full names), written with the trained model.
    pub language_model: HashMap<String, Tensor>,
}

impl StageTwoLlm {
    /// Loads the LLM of `model.llm` frozen and the projection (continued or fresh).
    pub fn load(cfg: &RunConfig, qformer_hidden: usize, device: &Device) -> Result<Self> {
        let Some(dir) = &cfg.model.llm else {
            bail!("stage = \"stage2\" needs model.llm: a BLIP-2 OPT, FLAN-T5 or LLaMA directory in HF layout (config.json with text_config, language_model.* weights, the LLM's tokenizer.json)");
        };
        let config_path = dir.join("config.json");
        let mut llm_cfg = Blip2LlmConfig::from_json_file(&config_path)
            .with_context(|| format!("model.llm {}", dir.display()))?;
        llm_cfg.qformer_hidden_size = qformer_hidden;
        let (_, set) = TensorSet::from_hf_dir(dir, device)
            .with_context(|| format!("reading the weights of model.llm {}", dir.display()))?;
        let lm: HashMap<String, Tensor> = set
            .names()
            .filter_map(|n| n.strip_prefix("language_model.").map(|s| (s.to_string(), n)))
            .filter_map(|(short, n)| set.get(n).map(|t| (short, t.clone())))
            .collect();
        let language_model_tensors: HashMap<String, Tensor> =
            lm.iter().map(|(n, t)| (format!("language_model.{n}"), t.clone())).collect();
        if lm.is_empty() {
            bail!("model.llm {}: no language_model.* tensors", dir.display());
        }
        let language_model =
            LanguageModel::load(VarBuilder::from_tensors(lm, DType::F32, device), &llm_cfg.text)
                .with_context(|| format!("loading language_model.* from {}", dir.display()))?;

        let projection_vars = VarMap::new();
        let projection = LanguageProjection::new(
            qformer_hidden,
            llm_cfg.llm_hidden_size(),
            VarBuilder::from_varmap(&projection_vars, DType::F32, device).pp("language_projection"),
        )?;
        let named = named_vars(&projection_vars)?;
        let continued =
            named.iter().all(|(n, var)| set.get(n).is_some_and(|t| t.dims() == var.dims()));
        if continued {
            for (n, var) in &named {
                let t = set.get(n).expect("checked above").to_dtype(DType::F32)?;
                var.set(&t)?;
            }
        } else {
            init_fresh(&named, &mut rng::substream(cfg.seed, "init/language_projection"))?;
        }
        let kind = match llm_cfg.text {
            TextConfig::Opt(_) => LlmKind::Opt,
            TextConfig::T5(_) => LlmKind::T5,
            TextConfig::Llama(_) => LlmKind::Llama,
        };
        let captions = CaptionTokenizer::from_file(
            dir.join("tokenizer.json"),
            kind,
            &cfg.model.prompt,
            cfg.data.max_txt_len as usize,
        )?;
        println!(
            "stage two: frozen {} from {}, language_projection {}",
            match llm_cfg.text {
                TextConfig::Opt(_) => "OPT",
                TextConfig::T5(_) => "FLAN-T5",
                TextConfig::Llama(_) => "LLaMA",
            },
            dir.display(),
            if continued { "continued" } else { "fresh" }
        );
        Ok(Self {
            llm: Blip2Llm { projection, language_model, config: llm_cfg },
            projection_vars,
            captions,
            dir: dir.clone(),
            language_model: language_model_tensors,
        })
    }

    /// The trainable parameters: the Q-Former's query path (from `qformer_vars`) and the projection.
    pub fn params(&self, qformer_vars: &VarMap, rule: DecayRule) -> ParamStore {
        ParamStore::from_varmaps_where(
            &[qformer_vars, &self.projection_vars],
            rule,
            is_stage_two_trainable,
        )
    }
}

impl StageTwoLlm {
    /// The trained model as a `Blip2ForConditionalGeneration` directory: the Q-Former model of
    /// the run (`qformer`: its `config.json` sections and every tensor, stage-one heads
    /// included when it has them), the trained projection and the frozen LLM, with the LLM
    /// directory's `config.json` otherwise and its tokenizers.
    pub fn save_model(
        &self,
        dir: &Path,
        qformer: &RunModel,
        processor: &ImageProcessorConfig,
    ) -> Result<()> {
        let config_path = self.dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let mut config: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", config_path.display()))?;
        let ours = qformer.config_json()?;
        for key in ["vision_config", "qformer_config", "num_query_tokens", "ln_vision_eps"] {
            match (ours.get(key), config.as_object_mut()) {
                (Some(v), Some(obj)) => {
                    obj.insert(key.into(), v.clone());
                }
                (None, Some(obj)) => {
                    obj.remove(key);
                }
                _ => bail!("{}: not a JSON object", config_path.display()),
            }
        }
        let mut tensors = qformer.tensors()?;
        for (name, var) in named_vars(&self.projection_vars)? {
            tensors.insert(name, var.as_tensor().clone());
        }
        tensors.extend(self.language_model.iter().map(|(n, t)| (n.clone(), t.clone())));
        let files = side_files(&self.dir);
        save_model_dir_with_files(dir, &config, &tensors, processor, &files)
    }
}
