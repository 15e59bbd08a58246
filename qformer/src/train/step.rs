//! One stage-one optimizer step, shared by `blip2 pretrain` and the LAVIS trajectory test:
//! accumulate the ITC + ITM + ITG gradients over the micro-batches, measure (and optionally clip)
//! the gradient norm, let the guard judge the step, and apply AdamW.

use std::collections::BTreeMap;

use super::checkpoint::TrainState;
use super::grad::{accumulate_grads, clip_grad_norm, MicroLoss, StepVerdict};
use super::optim::AdamW;
use super::params::ParamStore;
use crate::model::Blip2Qformer;
use crate::objectives::{stage_one_losses, ObjectiveConfig, PretrainBatch};
use crate::Result;

/// What one step did, for the metrics log.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// Mean total loss over the micro-batches (before the update).
    pub loss: f64,
    /// `itc`, `itm`, `lm`: each the mean over the micro-batches.
    pub parts: BTreeMap<String, f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub clip_coef: f64,
    pub verdict: StepVerdict,
}

/// Runs one optimizer step at learning rate `lr` over `micro` (one `PretrainBatch` per
/// micro-batch; their mean loss is what is minimized). Dropout and sampled negatives draw from
/// `state.rng`; `state` is advanced by `samples`. `Err` when the guard stops the run.
#[allow(clippy::too_many_arguments)]
pub fn stage_one_step(
    model: &Blip2Qformer,
    params: &ParamStore,
    opt: &mut AdamW,
    state: &mut TrainState,
    objectives: &ObjectiveConfig,
    micro: &[PretrainBatch],
    lr: f64,
    max_grad_norm: Option<f64>,
    samples: u64,
) -> Result<StepOutcome> {
    opt.set_lr(lr);
    let rng = &mut state.rng;
    let acc = accumulate_grads(micro.len(), |i| {
        let out = stage_one_losses(model, &micro[i], objectives, true, rng)?;
        Ok(MicroLoss {
            total: out.total,
            parts: vec![("itc".into(), out.itc), ("itm".into(), out.itm), ("lm".into(), out.lm)],
        })
    })?;
    let mut grads = acc.grads;
    let (grad_norm, clip_coef) = clip_grad_norm(params, &mut grads, max_grad_norm)?;
    let verdict = state.guard.check(state.step, acc.loss, grad_norm)?;
    if let StepVerdict::Apply { .. } = verdict {
        opt.step(params, &grads)?;
    }
    state.advance(samples);
    Ok(StepOutcome { loss: acc.loss, parts: acc.parts, grad_norm, clip_coef, verdict })
}
