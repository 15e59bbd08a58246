//! Workload 3: ITM scoring of image-text pairs, one image per pair (no grad).

use candle_core::{Device, IndexOp, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::seeded::{seeded_tensor, SeededVarMap};
use super::sizes::{stage_one_config, stage_one_model, text_ids};
use super::{BenchCase, Scale};
use qformer::masks::PaddingMask;
use qformer::model::Blip2Qformer;
use qformer::Result;

/// HF `Blip2ForImageTextRetrieval(use_image_text_matching_head=True)` without the ViT: 64 pairs
/// of `[32 queries; 32 text tokens]`, bidirectional, queries cross-attending their own
/// `[257, 1408]` features; the ITM head averaged over queries -> `[64, 2]`.
pub struct ItmCase {
    pub model: Blip2Qformer,
    /// `[P, N, Dv]` (already `ln_vision`ed)
    pub image_embeds: Tensor,
    /// `[P, L]`
    pub input_ids: Tensor,
    pub padding: PaddingMask,
    pairs: usize,
    _vars: SeededVarMap,
}

impl ItmCase {
    pub fn new(scale: Scale, seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let (pairs, len) = (scale.pick(64, 3), scale.pick(32, 6));
        let (vars, model) = stage_one_model(scale, seed, false, false, &dev)?;
        let dv = stage_one_config(scale).vision_config.hidden_size;
        let image_embeds = seeded_tensor(
            seed,
            "image_features",
            (pairs, scale.vision_tokens(), dv),
            0.0,
            1.0,
            &dev,
        )?;
        let input_ids = text_ids(scale, seed, pairs, len, &dev)?;
        let padding = PaddingMask::all_keep(pairs, len);
        Ok(Self { model, image_embeds, input_ids, padding, pairs, _vars: vars })
    }

    // -> match logits [P] (the "is a match" column)
    pub fn scores(&self) -> Result<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(0); // no dropout at inference
        let logits = self.model.itm_logits_t(
            &self.image_embeds,
            &self.input_ids,
            &self.padding,
            false,
            &mut rng,
        )?;
        Ok(logits.i((.., 1))?)
    }
}

impl BenchCase for ItmCase {
    fn run(&mut self) -> Result<()> {
        let s = self.scores()?.to_vec1::<f32>()?;
        if s.len() != self.pairs || s.iter().any(|x| !x.is_finite()) {
            return Err(qformer::Error::Msg(format!("itm: bad scores {s:?}")));
        }
        Ok(())
    }

    fn throughput(&self) -> Option<(&'static str, f64)> {
        Some(("pairs", self.pairs as f64))
    }
}
