//! Stage one: ITC + ITM + ITG of the Q-Former on a frozen ViT (LAVIS `Blip2Qformer.forward`).

use std::collections::BTreeMap;

use candle_core::Tensor;
use qformer::masks::PaddingMask;
use qformer::model::Blip2Qformer;
use qformer::objectives::{stage_one_losses, NegativeMode, ObjectiveConfig, PretrainBatch};

use super::ImageBatch;
use crate::grad::MicroLoss;
use crate::rng::{self, TrainRng};
use crate::task::{Batches, Fetched, Task};
use crate::{Error, Result};

/// One stage-one micro-batch: images and their captions (row b of the text is image b's).
pub struct StageOneBatch {
    pub image: ImageBatch,
    /// `[B, L]` `[CLS] ... [SEP] [PAD]...`
    pub input_ids: Tensor,
    pub attention_mask: PaddingMask,
    /// Image ids whose equal values make positives (several captions of one image in a batch);
    /// `None`: row b's only positive is text b.
    pub image_ids: Option<Vec<i64>>,
}

impl StageOneBatch {
    fn view(&self) -> PretrainBatch<'_> {
        PretrainBatch {
            image: self.image.input(),
            input_ids: &self.input_ids,
            attention_mask: &self.attention_mask,
            image_ids: self.image_ids.as_deref(),
        }
    }
}

pub struct StageOne<'m> {
    pub model: &'m Blip2Qformer,
    pub objectives: ObjectiveConfig,
}

impl Task for StageOne<'_> {
    type Batch = StageOneBatch;

    fn loss(&self, batch: &StageOneBatch, rng: &mut TrainRng) -> Result<MicroLoss> {
        let out = stage_one_losses(self.model, &batch.view(), &self.objectives, true, rng)?;
        Ok(MicroLoss {
            total: out.total,
            parts: vec![("itc".into(), out.itc), ("itm".into(), out.itm), ("itg".into(), out.itg)],
        })
    }

    /// `val_itc`, `val_itm`, `val_itg`, `val_loss`: means over the batches of at least two
    /// samples, in eval mode (no dropout) with hardest negatives, so that they neither draw from
    /// nor depend on the run RNG.
    fn validate(
        &self,
        data: &mut dyn Batches<Batch = StageOneBatch>,
    ) -> Result<BTreeMap<String, f64>> {
        let objectives =
            ObjectiveConfig { negatives: NegativeMode::Hardest, ..self.objectives.clone() };
        // Hardest negatives draw nothing: this RNG is only the required argument.
        let mut unused = rng::seeded(0);
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut batches = 0usize;
        data.start_epoch(0, None)?;
        loop {
            let step = match data.next()? {
                Fetched::Step(step) => step,
                Fetched::PassedOver { .. } => continue,
                Fetched::EndOfEpoch => break,
            };
            for micro in &step.micro {
                let out =
                    stage_one_losses(self.model, &micro.view(), &objectives, false, &mut unused)?;
                for (k, t) in [
                    ("val_itc", &out.itc),
                    ("val_itm", &out.itm),
                    ("val_itg", &out.itg),
                    ("val_loss", &out.total),
                ] {
                    *sums.entry(k.into()).or_insert(0.0) += t.to_scalar::<f32>()? as f64;
                }
                batches += 1;
            }
        }
        if batches == 0 {
            return Err(Error::Msg(
                "the validation split gave no batch of 2 or more samples".into(),
            ));
        }
        Ok(sums.into_iter().map(|(k, v)| (k, v / batches as f64)).collect())
    }
}
