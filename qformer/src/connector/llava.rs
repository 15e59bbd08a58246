//! LLaVA as a [`Connector`]: CLIP grid features of the selected layers through the projector.

use candle_core::{Result, Tensor};

use super::Connector;
use crate::llava::LlavaForConditionalGeneration;
use crate::llm::llama::LlamaForCausalLm;

impl Connector for LlavaForConditionalGeneration {
    fn tokens_per_image(&self) -> usize {
        self.config().tokens_per_image()
    }

    // pixel_values: [images, C, H, W] -> [images, N, H_text]
    fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.image_features(pixel_values)
    }

    fn language_model(&self) -> &LlamaForCausalLm {
        LlavaForConditionalGeneration::language_model(self)
    }
}
