//! Stage two of `blip2 pretrain` (LAVIS `blip2_opt` / `blip2_t5` pretraining): the frozen LLM of
//! `model.llm`, a `language_projection` to train, and each batch's captions as LLM token ids.
//!
//! The LLM weights are loaded as constants (not `Var`s), so backward never computes gradients
//! for them and the optimizer holds no state for them; what trains is the Q-Former's query path,
//! the query tokens, `ln_vision` and the projection (`is_stage_two_trainable`).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;

use qformer::llm::{Blip2Llm, Blip2LlmConfig, LanguageModel, LanguageProjection, TextConfig};
use qformer::objectives::is_stage_two_trainable;
use qformer::weights::TensorSet;
use train::{rng, DecayRule, ParamStore, RunConfig};

use crate::common::llm_text::{CaptionTokenizer, LlmKind};
use train::init::named_vars;
use train::init_fresh;

pub struct StageTwoLlm {
    pub llm: Blip2Llm,
    /// `language_projection.{weight,bias}`: trainable.
    pub projection_vars: VarMap,
    /// The batch captions as the LLM's token ids.
    pub captions: CaptionTokenizer,
}

impl StageTwoLlm {
    /// Loads the LLM of `model.llm` frozen and the projection (continued or fresh).
    pub fn load(cfg: &RunConfig, qformer_hidden: usize, device: &Device) -> Result<Self> {
        let Some(dir) = &cfg.model.llm else {
            bail!("stage = \"stage2\" needs model.llm: a BLIP-2 OPT or FLAN-T5 directory in HF layout (config.json with text_config, language_model.* weights, the LLM's tokenizer.json)");
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
            },
            dir.display(),
            if continued { "continued" } else { "fresh" }
        );
        Ok(Self {
            llm: Blip2Llm { projection, language_model, config: llm_cfg },
            projection_vars,
            captions,
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
