//! Workload 1: Q-Former forward, queries only, over cached image features (no grad).

use candle_core::{DType, Device, Tensor};

use super::seeded::{seeded_tensor, SeededVarMap};
use super::{BenchCase, Scale};
use qformer::masks::{AdditiveMask, MaskMode};
use qformer::model::{QFormer, QFormerInput};
use qformer::Result;

/// HF `Blip2QFormerModel` (no text input) on `query_embeds` `[8, 32, 768]` and image features
/// `[8, 257, 1408]` fed directly (no `ln_vision`); output `last_hidden_state` `[8, 32, 768]`.
pub struct QformerForwardCase {
    pub qformer: QFormer,
    /// `[B, Q, H]`
    pub queries: Tensor,
    /// `[B, N, Dv]`
    pub image: Tensor,
    pub mask: AdditiveMask,
    _vars: SeededVarMap,
}

impl QformerForwardCase {
    pub fn new(scale: Scale, seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let cfg = scale.qformer();
        let (b, q, n) = (scale.pick(8, 2), scale.pick(32, 4), scale.vision_tokens());
        let vars = SeededVarMap::frozen(seed);
        let qformer = QFormer::new(&cfg, vars.var_builder(DType::F32, &dev))?;
        // One set of query tokens expanded to the batch, like HF's `query_tokens.expand`.
        let queries =
            seeded_tensor(seed, "query_tokens", (1, q, cfg.hidden_size), 0.0, 0.02, &dev)?
                .broadcast_as((b, q, cfg.hidden_size))?;
        let image =
            seeded_tensor(seed, "image_features", (b, n, cfg.encoder_hidden_size), 0.0, 1.0, &dev)?;
        let mask = AdditiveMask::new(MaskMode::UniModal, q, None, b, &dev)?;
        Ok(Self { qformer, queries, image, mask, _vars: vars })
    }

    // -> last_hidden_state [B, Q, H]
    pub fn forward(&self) -> Result<Tensor> {
        let inp = QFormerInput {
            query_embeds: Some(&self.queries),
            input_ids: None,
            self_mask: &self.mask,
            image_embeds: Some(&self.image),
            past_query_kv: None,
            image_rows: None,
        };
        Ok(self.qformer.forward_eval(&inp)?.query_output()?)
    }
}

impl BenchCase for QformerForwardCase {
    fn run(&mut self) -> Result<()> {
        let out = self.forward()?;
        if out.dims() != self.queries.dims() {
            return Err(qformer::Error::Msg(format!("qformer-forward output {:?}", out.dims())));
        }
        Ok(())
    }
}
