//! Training infrastructure: parameters, optimizer, schedule, gradient hygiene, checkpoints,
//! run config, metrics log and plots.
//!
//! Everything here works on named `Var`s and on losses the caller computes, so it does not depend
//! on the model. The `blip2 pretrain` loop composes the parts in this order per step:
//! `schedule.lr(pos)` → `accumulate_grads` → `StepGuard::check_loss` → `clip_grad_norm` →
//! `StepGuard::check_grads` → `AdamW::step` → `MetricsLog::append` → `Checkpointer::save`.

pub mod checkpoint;
pub mod config;
pub mod grad;
pub mod metrics;
pub mod optim;
pub mod params;
pub mod plot;
pub mod rng;
pub mod schedule;

#[cfg(test)]
mod resume_test;

pub use checkpoint::{Checkpointer, Retention, TrainState};
pub use config::RunConfig;
pub use grad::{accumulate_grads, clip_grad_norm, Accumulated, StepGuard, StepVerdict};
pub use metrics::{MetricsLog, MetricsRecord};
pub use optim::{AdamW, AdamWConfig};
pub use params::{DecayRule, LoadReport, ParamStore};
pub use rng::TrainRng;
pub use schedule::{LrSchedule, SchedulePos};
