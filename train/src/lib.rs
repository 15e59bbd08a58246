//! Training for BLIP-2 bridges: one loop ([`run`]) that every run goes through, the tasks it
//! trains, and what a run is made of (parameters and decay groups, AdamW, schedules, gradient
//! accumulation, clipping and the step guard, atomic checkpoints with exact resume, the TOML run
//! config, the metrics log and its plots).
//!
//! A run: resolve [`Settings`] (from a [`RunConfig`], or directly), build the model and its
//! [`ParamStore`], pick a [`Task`] (batch -> losses) and a [`Batches`] source, call [`run`]. The
//! loop reads top to bottom in `run.rs`; one step is [`optimizer_step`].

pub mod checkpoint;
pub mod config;
pub mod grad;
pub mod init;
pub mod metrics;
pub mod optim;
pub mod params;
pub mod plot;
pub mod rng;
pub mod run;
pub mod run_lock;
pub mod sampler;
pub mod schedule;
pub mod settings;
pub mod step;
pub mod task;
pub mod tasks;

#[cfg(test)]
mod run_test;

pub use checkpoint::{Checkpointer, Retention, TrainState};
pub use config::RunConfig;
pub use grad::{accumulate_grads, clip_grad_norm, Accumulated, MicroLoss, StepGuard, StepVerdict};
pub use init::{init_fresh, FreshModel, InitStreams};
pub use metrics::{MetricsLog, MetricsRecord};
pub use optim::{AdamW, AdamWConfig};
pub use params::{DecayRule, ParamLoadReport, ParamStore};
pub use rng::TrainRng;
pub use run::{run, Extras, ModelWriter, RunSummary};
pub use run_lock::RunLock;
pub use sampler::{EpochSampler, SampledBatches};
pub use schedule::{LrSchedule, SchedulePos};
pub use settings::{CheckpointSettings, SaveEvery, Settings, ValidationSettings};
pub use step::{optimizer_step, StepOutcome, StepSettings};
pub use task::{Batches, Fetched, StepBatch, Task};

/// The library error of `qformer`, shared: every failure of a run is one of a model, a tensor
/// op, a file or a config value.
pub use qformer::{Error, Result};
