//! A connector: how a vision-language model turns images into rows of its LLM's input
//! embeddings. LLaVA (CLIP grid features through a projector) and MiniGPT-4 (BLIP-2 Q-Former
//! queries through one Linear) are two of them. A sequence is a list of [`Piece`]s: token runs
//! and image slots; [`splice`] puts each image's rows where its slot stands, so training,
//! generation and evaluation share one path whichever connector made the rows.

mod llava;
mod splice;

pub use splice::{splice, PadSide, Piece, Spliced};

use candle_core::{Result, Tensor};

use crate::llm::llama::LlamaForCausalLm;
use crate::llm::loss::causal_lm_loss;

/// Images in, LLM input rows out.
pub trait Connector {
    /// Rows each image contributes to the sequence.
    fn tokens_per_image(&self) -> usize;

    /// The rows of each image as LLM input embeddings (in the LLM's dtype).
    // pixel_values: [images, C, H, W] -> [images, tokens_per_image, llm_hidden]
    fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor>;

    /// The LLM that reads the rows.
    fn language_model(&self) -> &LlamaForCausalLm;
}

/// The language-modelling loss of `rows` (right-padded) with the images' rows spliced in: the
/// mean cross-entropy over the positions whose piece is marked `learn` (the next-token shift
/// inside, as HF `LlamaForCausalLM(labels=...)`).
// image_embeds: [images, T, H] -> scalar
pub fn connector_lm_loss(
    connector: &dyn Connector,
    rows: &[Vec<Piece>],
    image_embeds: &Tensor,
) -> Result<Tensor> {
    let llm = connector.language_model();
    let s = splice(rows, image_embeds, llm, PadSide::Right)?;
    let logits = llm.forward_embeds(&s.embeds, &s.attention_mask)?;
    causal_lm_loss(&logits, &s.labels)
}
