//! A connector's stages (LLaVA, MiniGPT-4): the LLM's language-modelling loss on the learned
//! pieces of each sample, the images' rows spliced in by the connector. What trains is what the
//! `ParamStore` holds: the projector alone, or the projector and the LLM.

use candle_core::Tensor;
use qformer::connector::{connector_lm_loss, Connector, Piece};

use crate::grad::MicroLoss;
use crate::rng::TrainRng;
use crate::task::Task;
use crate::Result;

/// One micro-batch: the images and, per sample, its pieces (one image slot each).
pub struct ConnectorMicro {
    /// `[B, 3, H, W]`, normalized by the connector's image processor.
    pub pixels: Tensor,
    pub rows: Vec<Vec<Piece>>,
}

pub struct ConnectorTask<'m> {
    pub model: &'m dyn Connector,
}

/// The name of the loss in the metrics log.
pub const CONNECTOR_LM: &str = "lm";

impl Task for ConnectorTask<'_> {
    type Batch = ConnectorMicro;

    /// Neither connector draws anything: no dropout in LLaMA, the frozen parts in eval mode.
    fn loss(&self, batch: &ConnectorMicro, _rng: &mut TrainRng) -> Result<MicroLoss> {
        let image_embeds = self.model.image_embeds(&batch.pixels)?;
        let loss = connector_lm_loss(self.model, &batch.rows, &image_embeds)?;
        Ok(MicroLoss { total: loss.clone(), parts: vec![(CONNECTOR_LM.into(), loss)] })
    }
}
