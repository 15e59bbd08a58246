//! One optimizer step, shared by `blip2 pretrain` (both stages), the quickstart and the LAVIS
//! trajectory test: accumulate the gradients over the micro-batches, measure (and optionally clip)
//! the gradient norm, let the guard judge the step, and apply AdamW.

use std::collections::BTreeMap;

use super::checkpoint::TrainState;
use super::grad::{accumulate_grads, clip_grad_norm, MicroLoss, StepVerdict};
use super::optim::AdamW;
use super::params::ParamStore;
use super::rng::TrainRng;
use crate::model::Blip2Qformer;
use crate::objectives::{stage_one_losses, ObjectiveConfig, PretrainBatch};
use crate::Result;

/// What one step did, for the metrics log.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// Mean total loss over the micro-batches (before the update).
    pub loss: f64,
    /// Named loss parts (`itc`, `itm`, `lm`, ...): each the mean over the micro-batches.
    pub parts: BTreeMap<String, f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub clip_coef: f64,
    pub verdict: StepVerdict,
}

/// Step hyper-parameters that change per step or per run.
#[derive(Debug, Clone, Copy)]
pub struct StepSettings {
    pub lr: f64,
    pub max_grad_norm: Option<f64>,
    /// Samples in this step (advances `state`).
    pub samples: u64,
}

/// Runs one optimizer step over `micro_batches` losses built by `loss_fn(i, rng)` (their mean is
/// what is minimized). Random draws (dropout, negatives, prefix splits) come from `state.rng`.
/// `Err` when the guard stops the run.
pub fn optimizer_step<F>(
    params: &ParamStore,
    opt: &mut AdamW,
    state: &mut TrainState,
    micro_batches: usize,
    settings: StepSettings,
    mut loss_fn: F,
) -> Result<StepOutcome>
where
    F: FnMut(usize, &mut TrainRng) -> Result<MicroLoss>,
{
    opt.set_lr(settings.lr);
    let rng = &mut state.rng;
    let acc = accumulate_grads(params, micro_batches, |i| loss_fn(i, rng))?;
    let mut grads = acc.grads;
    let (grad_norm, clip_coef) = clip_grad_norm(params, &mut grads, settings.max_grad_norm)?;
    let verdict = state.guard.check(state.step, acc.loss, grad_norm)?;
    if let StepVerdict::Apply { .. } = verdict {
        opt.step(params, &grads)?;
    }
    state.advance(settings.samples);
    Ok(StepOutcome { loss: acc.loss, parts: acc.parts, grad_norm, clip_coef, verdict })
}

/// One stage-one step (ITC + ITM + ITG) over `micro` (one `PretrainBatch` per micro-batch).
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
    let settings = StepSettings { lr, max_grad_norm, samples };
    optimizer_step(params, opt, state, micro.len(), settings, |i, rng| {
        let out = stage_one_losses(model, &micro[i], objectives, true, rng)?;
        Ok(MicroLoss {
            total: out.total,
            parts: vec![("itc".into(), out.itc), ("itm".into(), out.itm), ("lm".into(), out.lm)],
        })
    })
}

/// One stage-two step (LLM language-modelling loss through the projected queries) over `micro`.
/// Only what `params` marks trainable moves: the LLM stays frozen by not being in it.
#[allow(clippy::too_many_arguments)]
pub fn stage_two_step(
    model: &Blip2Qformer,
    llm: &crate::llm::Blip2Llm,
    params: &ParamStore,
    opt: &mut AdamW,
    state: &mut TrainState,
    micro: &[crate::objectives::StageTwoBatch],
    lr: f64,
    max_grad_norm: Option<f64>,
    samples: u64,
) -> Result<StepOutcome> {
    let settings = StepSettings { lr, max_grad_norm, samples };
    optimizer_step(params, opt, state, micro.len(), settings, |i, rng| {
        let lm = crate::objectives::stage_two_loss(model, llm, &micro[i], true, rng)?;
        Ok(MicroLoss { total: lm.clone(), parts: vec![("lm".into(), lm)] })
    })
}
