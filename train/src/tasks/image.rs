//! A micro-batch's images as the model reads them, owned by the batch.

use candle_core::Tensor;
use qformer::model::ImageInput;

pub enum ImageBatch {
    /// `[B, 3, H, W]`, normalized by the image processor.
    Pixels(Tensor),
    /// `[B, N, Dv]`: cached frozen-ViT outputs (before `ln_vision`).
    Features(Tensor),
}

impl ImageBatch {
    pub fn input(&self) -> ImageInput<'_> {
        match self {
            ImageBatch::Pixels(t) => ImageInput::Pixels(t),
            ImageBatch::Features(t) => ImageInput::VisionFeatures(t),
        }
    }
}
