//! Validation losses on the held-out split: the three stage-one losses in eval mode (no
//! dropout) with hardest negatives, so they neither draw from nor depend on the run RNG.

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::Device;

use datasets::{Loader, LoaderState};
use qformer::model::{Blip2Qformer, ImageInput};
use qformer::objectives::{stage_one_losses, NegativeMode, ObjectiveConfig, PretrainBatch};

use super::to_micro;

/// Mean (over batches of at least 2 samples) `val_itc`, `val_itm`, `val_lm`, `val_loss`.
pub fn validation_losses(
    model: &Blip2Qformer,
    loader: &Loader,
    objectives: &ObjectiveConfig,
    dev: &Device,
) -> Result<BTreeMap<String, f64>> {
    let obj = ObjectiveConfig { negatives: NegativeMode::Hardest, ..objectives.clone() };
    // Hardest negatives draw nothing; the RNG is only a required argument.
    let mut rng = qformer::train::rng::seeded(0);
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut batches = 0usize;
    for batch in loader.epoch(LoaderState { seed: 0, epoch: 0, position: 0 }) {
        let batch = batch?;
        if batch.batch_size < 2 {
            continue;
        }
        let (px, ids, mask) = to_micro(&batch, 1, None, dev)?.remove(0);
        let b = PretrainBatch {
            image: ImageInput::Pixels(&px),
            input_ids: &ids,
            attention_mask: &mask,
            image_ids: None,
        };
        let out = stage_one_losses(model, &b, &obj, false, &mut rng)?;
        for (k, t) in [
            ("val_itc", &out.itc),
            ("val_itm", &out.itm),
            ("val_lm", &out.lm),
            ("val_loss", &out.total),
        ] {
            *sums.entry(k.into()).or_insert(0.0) += t.to_scalar::<f32>()? as f64;
        }
        batches += 1;
    }
    anyhow::ensure!(batches > 0, "validation split gave no batch of 2 or more samples");
    Ok(sums.into_iter().map(|(k, v)| (k, v / batches as f64)).collect())
}
