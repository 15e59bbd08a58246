//! Training infrastructure: parameters, optimizer, schedule, gradient hygiene, checkpoints,
//! run config, metrics log and plots.
//!
//! Everything here works on named `Var`s and on losses the caller computes, so it does not depend
//! on the model. One optimizer step of `blip2 pretrain`, in order (the toy loop in
//! `resume_test.rs` is the executable version):
//!
//! ```text
//! opt.set_lr(schedule.lr(state.schedule_pos()));
//! let acc = accumulate_grads(&params, cfg.batch.micro_batches, |i| task.loss(&micro_batch(i), &mut state.rng))?;
//! let mut grads = acc.grads;
//! let (norm, _) = clip_grad_norm(&params, &mut grads, cfg.optimizer.max_grad_norm)?;
//! match state.guard.check(state.step, acc.loss, norm)? {      // Err: diverged, stop the run
//!     StepVerdict::Apply { spike } => { opt.step(&params, &grads)?; }
//!     StepVerdict::Skip { reason } => eprintln!("skipped: {reason}"),
//! }
//! state.advance(samples_in_step);
//! metrics.append(&record)?;                                     // MetricsLog, flushed per line
//! if due { checkpointer.save(&state, &params, &opt)?; }         // atomic, with retention
//! ```
//!
//! Start of a run: `RunConfig::load/preset` + `with_overrides` + `validate`; `RunDir::create`;
//! `cfg.save(&run.config_path())`; `ParamStore::from_varmap` (+ `freeze_prefixes`, print
//! `summary()`); `Checkpointer::open` then `resume` (or `TrainState::new`);
//! `MetricsLog::open_resumed`. End: `plot::plot_run`.

pub mod checkpoint;
pub mod config;
pub mod grad;
pub mod init;
pub mod metrics;
pub mod optim;
pub mod params;
pub mod plot;
pub mod rng;
pub mod schedule;
pub mod step;

#[cfg(test)]
mod resume_test;

pub use checkpoint::{Checkpointer, Retention, TrainState};
pub use config::RunConfig;
pub use grad::{accumulate_grads, clip_grad_norm, Accumulated, MicroLoss, StepGuard, StepVerdict};
pub use init::{init_fresh, FreshModel};
pub use metrics::{MetricsLog, MetricsRecord};
pub use optim::{AdamW, AdamWConfig};
pub use params::{DecayRule, LoadReport, ParamStore};
pub use rng::TrainRng;
pub use schedule::{LrSchedule, SchedulePos};
pub use step::{optimizer_step, stage_one_step, stage_two_step, StepOutcome, StepSettings};
