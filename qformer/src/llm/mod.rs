//! Stage-two LLM bridges: OPT, T5/FLAN-T5 and LLaMA taking input embeddings, `language_projection`,
//! HF-equivalent generation and the stage-two LM losses. Every op on the training path has a
//! backward, so the loss reaches the soft prompt while the LLM stays frozen.

pub mod bridge;
pub mod config;
pub mod generation;
pub mod kv_cache;
pub mod llama;
pub mod loss;
pub mod mask;
pub mod opt;
pub mod t5;

pub use bridge::{
    llama_lm_loss, pad_batch, Blip2Llm, LanguageModel, LanguageProjection, PaddingSide,
};
pub use config::{Activation, Blip2LlmConfig, OptConfig, T5Config, TextConfig};
pub use generation::{generate, generate_with_history, GenerationConfig, IncrementalDecoder};
pub use kv_cache::KvCache;
pub use llama::{LlamaConfig, LlamaForCausalLm};
pub use loss::{causal_lm_loss, cross_entropy_ignore, prefix_lm_split, seq2seq_loss, IGNORE_INDEX};
pub use opt::OptForCausalLm;
pub use t5::{T5Cache, T5ForConditionalGeneration};
