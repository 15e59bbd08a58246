//! One optimizer step, the heart of `run` (and of the LAVIS trajectory test and the stage-one
//! benchmark): accumulate the gradients over the micro-batches, measure (and optionally clip) the
//! gradient norm, let the guard judge the step, and apply AdamW.

use std::collections::BTreeMap;

use crate::checkpoint::TrainState;
use crate::grad::{accumulate_grads, clip_grad_norm, MicroLoss, StepVerdict};
use crate::optim::AdamW;
use crate::params::ParamStore;
use crate::rng::TrainRng;
use crate::Result;

/// What one step did, for the metrics log.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// Mean total loss over the micro-batches (before the update).
    pub loss: f64,
    /// Named loss parts (`itc`, `itm`, `itg`, ...): each the mean over the micro-batches.
    pub parts: BTreeMap<String, f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub clip_coef: f64,
    pub verdict: StepVerdict,
    /// Trainable parameters that got no gradient (a cut graph, an op without a backward, an
    /// unused head); empty for a skipped step.
    pub without_grad: Vec<String>,
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
    let mut without_grad = Vec::new();
    if let StepVerdict::Apply { .. } = verdict {
        without_grad = opt.step(params, &grads)?.without_grad;
    }
    state.advance(settings.samples);
    Ok(StepOutcome {
        loss: acc.loss,
        parts: acc.parts,
        grad_norm,
        clip_coef,
        verdict,
        without_grad,
    })
}
