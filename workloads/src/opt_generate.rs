//! Workload 5: greedy generation with an OPT-125m-shaped decoder after a soft prompt.

use candle_core::{DType, Device, Tensor};

use super::seeded::{seeded_tensor, SeededVarMap};
use super::sizes::text_ids;
use super::{BenchCase, Scale};
use qformer::llm::{generate, GenerationConfig, OptConfig, OptForCausalLm};
use qformer::Result;

/// HF `OPTForCausalLM` (OPT-125m shape, tied LM head) generating 20 tokens greedily after
/// `inputs_embeds` = 32 random "query" vectors + the embeddings of 8 prompt ids; EOS disabled so
/// every call produces exactly 20 tokens.
pub struct OptGenerateCase {
    pub model: OptForCausalLm,
    /// `[1, Q + P, D]`
    pub embeds: Tensor,
    /// `[1, Q + P]` ones
    pub mask: Tensor,
    pub gen: GenerationConfig,
    _vars: SeededVarMap,
}

impl OptGenerateCase {
    pub fn new(scale: Scale, seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let cfg: OptConfig = match scale {
            Scale::Real => OptConfig::opt_125m(),
            Scale::Tiny => serde_json::from_str(
                r#"{"vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 2, "ffn_dim": 64,
                    "num_attention_heads": 4, "max_position_embeddings": 64}"#,
            )
            .map_err(|e| qformer::Error::Msg(format!("tiny OPT config: {e}")))?,
        };
        let (queries, prompt, new_tokens) =
            (scale.pick(32, 4), scale.pick(8, 3), scale.pick(20, 5));
        let vars = SeededVarMap::frozen(seed);
        let model = OptForCausalLm::load(vars.var_builder(DType::F32, &dev), &cfg)?;
        let prefix =
            seeded_tensor(seed, "query_embeds", (1, queries, cfg.hidden_size), 0.0, 1.0, &dev)?;
        let ids = text_ids(scale, seed, 1, prompt, &dev)?;
        let embeds = Tensor::cat(&[&prefix, &model.embed(&ids)?], 1)?;
        let mask = Tensor::ones((1, queries + prompt), DType::U32, &dev)?;
        let gen = GenerationConfig {
            max_new_tokens: new_tokens,
            eos_token_ids: vec![],
            ..GenerationConfig::default()
        };
        Ok(Self { model, embeds, mask, gen, _vars: vars })
    }

    /// The generated ids of the one row.
    pub fn generate(&self) -> Result<Vec<u32>> {
        let mut out = generate(&self.model, &self.embeds, &self.mask, &self.gen)?;
        Ok(out.pop().unwrap_or_default())
    }
}

impl BenchCase for OptGenerateCase {
    fn run(&mut self) -> Result<()> {
        let ids = self.generate()?;
        if ids.len() != self.gen.max_new_tokens {
            return Err(qformer::Error::Msg(format!(
                "opt-generate made {} tokens, not {}",
                ids.len(),
                self.gen.max_new_tokens
            )));
        }
        Ok(())
    }

    fn throughput(&self) -> Option<(&'static str, f64)> {
        Some(("tokens", self.gen.max_new_tokens as f64))
    }
}
