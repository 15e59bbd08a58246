//! Stage two: the Q-Former's query outputs, projected, as a soft visual prompt of a frozen LLM
//! trained with the LLM's language-modelling loss on the caption (LAVIS `blip2_opt` /
//! `blip2_t5`). Only what the `ParamStore` marks trainable moves: the LLM stays frozen by not
//! being in it.

use qformer::llm::Blip2Llm;
use qformer::model::Blip2Qformer;
use qformer::objectives::{stage_two_loss, StageTwoBatch, StageTwoText};

use super::ImageBatch;
use crate::grad::MicroLoss;
use crate::rng::TrainRng;
use crate::task::Task;
use crate::Result;

/// One stage-two micro-batch: images and their captions as LLM token ids.
pub struct StageTwoMicro {
    pub image: ImageBatch,
    pub text: StageTwoText,
}

pub struct StageTwo<'m> {
    pub model: &'m Blip2Qformer,
    pub llm: &'m Blip2Llm,
}

/// The name of the stage-two loss in the metrics log: the LLM's language-modelling loss of the
/// caption under the visual prompt.
pub const CAPTION_LM: &str = "caption_lm";

impl Task for StageTwo<'_> {
    type Batch = StageTwoMicro;

    fn loss(&self, batch: &StageTwoMicro, rng: &mut TrainRng) -> Result<MicroLoss> {
        let view = StageTwoBatch { image: batch.image.input(), text: batch.text.clone() };
        let loss = stage_two_loss(self.model, self.llm, &view, true, rng)?;
        Ok(MicroLoss { total: loss.clone(), parts: vec![(CAPTION_LM.into(), loss)] })
    }
}
