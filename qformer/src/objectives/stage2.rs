//! The stage-two objective (LAVIS `blip2_opt.forward` / `blip2_t5.forward`): the query-only
//! Q-Former pass over the frozen image features, `language_projection` into the LLM's embedding
//! space, and the frozen LLM's language-modelling loss on the caption.

use candle_core::{Result, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::llm::{llama_lm_loss, Blip2Llm, LanguageModel};
use crate::model::{Blip2Qformer, ImageInput};

/// The text side of a stage-two batch, already tokenized with the LLM's tokenizer.
#[derive(Debug, Clone)]
pub enum StageTwoText {
    /// OPT or LLaMA: per row BOS + prompt + caption + "\n" ids (unpadded); the first
    /// `prompt_lens[i]` tokens (BOS + prompt) take no loss. LLaMA rows go to `llama_lm_loss`,
    /// which checks they start with the config's BOS.
    Opt { texts: Vec<Vec<u32>>, prompt_lens: Vec<usize> },
    /// FLAN-T5 prefix LM: caption ids without `</s>`, split at a random point per row.
    T5PrefixLm { captions: Vec<Vec<u32>> },
}

/// One stage-two micro-batch.
#[derive(Debug, Clone)]
pub struct StageTwoBatch<'a> {
    pub image: ImageInput<'a>,
    pub text: StageTwoText,
}

/// Language-modelling loss of the frozen LLM prompted with the projected query outputs.
/// Dropout (when `train`) and the T5 split points draw from `rng`.
// image: [B, 3, H, W] or features [B, N, Dv] -> scalar
pub fn stage_two_loss(
    model: &Blip2Qformer,
    llm: &Blip2Llm,
    batch: &StageTwoBatch,
    train: bool,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let image_embeds = model.image_embeds(batch.image)?;
    let query_output = model.query_pass(&image_embeds, train, rng)?.query_output()?;
    match &batch.text {
        StageTwoText::Opt { texts, prompt_lens } => match &llm.language_model {
            LanguageModel::Llama(m) => {
                llama_lm_loss(&llm.projection, m, &query_output, texts, prompt_lens)
            }
            _ => llm.opt_lm_loss(&query_output, texts, prompt_lens),
        },
        StageTwoText::T5PrefixLm { captions } => {
            llm.t5_prefix_lm_loss(&query_output, captions, rng)
        }
    }
}

/// What stage two trains (LAVIS `blip2_opt` / `blip2_t5`): `ln_vision`, the query tokens and the
/// Q-Former's query path. LAVIS deletes the text side (word/position embeddings, text
/// feed-forward, ITG head) and never uses the stage-one heads; the `language_projection`
/// belongs to the LLM bridge and is trainable too.
pub fn is_stage_two_trainable(name: &str) -> bool {
    if name.starts_with("vision_model.") {
        return name.starts_with("vision_model.post_layernorm.");
    }
    if name == "query_tokens" || name.starts_with("language_projection.") {
        return true;
    }
    if name.contains("word_embeddings") || name.contains("position_embeddings") {
        return false;
    }
    if let Some(rest) = name.strip_prefix("qformer.encoder.layer.") {
        // `{i}.intermediate.*` / `{i}.output.*` are the text feed-forward; `*_query` and
        // `attention.output.*` belong to the query path.
        let after_index = rest.split_once('.').map_or("", |(_, r)| r);
        return !(after_index.starts_with("intermediate.") || after_index.starts_with("output."));
    }
    // `qformer.layernorm` normalizes the query embeddings too.
    name.starts_with("qformer.")
}

#[cfg(test)]
mod tests {
    use super::is_stage_two_trainable as t;

    #[test]
    fn stage_two_trains_the_query_path_only() {
        assert!(t("vision_model.post_layernorm.weight"));
        assert!(!t("vision_model.encoder.layers.0.mlp.fc1.weight"));
        assert!(t("query_tokens"));
        assert!(t("language_projection.weight"));
        assert!(t("qformer.encoder.layer.0.attention.output.dense.weight"));
        assert!(t("qformer.encoder.layer.0.crossattention.attention.query.weight"));
        assert!(t("qformer.encoder.layer.3.intermediate_query.dense.weight"));
        assert!(t("qformer.encoder.layer.3.output_query.LayerNorm.bias"));
        assert!(!t("qformer.encoder.layer.3.intermediate.dense.weight"));
        assert!(!t("qformer.encoder.layer.11.output.LayerNorm.weight"));
        assert!(!t("embeddings.word_embeddings.weight"));
        assert!(!t("embeddings.position_embeddings.weight"));
        assert!(!t("cls.predictions.bias"));
        assert!(!t("vision_projection.weight"));
        assert!(!t("itm_head.weight"));
        assert!(!t("temp"));
        assert!(!t("language_model.model.decoder.layers.0.fc1.weight"));
    }
}
