//! `Settings`: everything the loop reads, resolved before it starts. A `blip2 pretrain` run gets
//! them from its TOML [`RunConfig`]; a quickstart phase builds them directly. Nothing here is
//! accepted and then ignored: each field is read by `run`.

use std::path::PathBuf;

use crate::checkpoint::Retention;
use crate::config::{GuardConfig, RunConfig};
use crate::optim::AdamWConfig;
use crate::schedule::LrSchedule;

/// When checkpoints are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveEvery {
    Steps(u64),
    /// At the end of each epoch (and at the end of the run).
    Epoch,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointSettings {
    pub every: SaveEvery,
    pub retention: Retention,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSettings {
    pub every_steps: u64,
    /// The validation metric that picks the best model (`RUN_DIR/best/`).
    pub metric: String,
    pub higher_is_better: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub run_dir: PathBuf,
    /// Names the run on its progress bar and its plot.
    pub title: String,
    pub seed: u64,
    /// The run RNG is `rng::substream(seed, rng_stream)`: dropout, negatives, prefix splits.
    pub rng_stream: String,
    pub optimizer: AdamWConfig,
    pub max_grad_norm: Option<f64>,
    /// The learning rate by position; its horizon is the whole run's length.
    pub schedule: LrSchedule,
    /// Stop here (with a checkpoint when checkpoints are on): the run's length, or fewer steps
    /// for a planned interruption that leaves the schedule's horizon as it is.
    pub stop_after: u64,
    pub guard: GuardConfig,
    /// `None`: no checkpoints (a run that cannot be resumed, like the quickstart's phases).
    pub checkpoints: Option<CheckpointSettings>,
    pub validation: Option<ValidationSettings>,
    /// Write every N-th step's record to `metrics.jsonl` (the last step's always).
    pub log_every_steps: u64,
    /// Redraw `curves.png` every N steps; it is always drawn at the end.
    pub plot_every_steps: Option<u64>,
    /// Continue from the newest checkpoint of `run_dir`; without it, a run directory that
    /// already holds checkpoints is refused.
    pub resume: bool,
}

impl Settings {
    /// The settings of a `blip2 pretrain` run; `steps_per_epoch` comes from the data loader.
    pub fn from_config(
        cfg: &RunConfig,
        run_dir: PathBuf,
        title: &str,
        steps_per_epoch: u64,
        stop_after: Option<u64>,
        resume: bool,
    ) -> Self {
        let total_steps = cfg.total_steps(steps_per_epoch);
        let c = &cfg.checkpointing;
        Self {
            run_dir,
            title: title.to_string(),
            seed: cfg.seed,
            rng_stream: "train".into(),
            optimizer: cfg.optimizer.adamw(),
            max_grad_norm: cfg.optimizer.max_grad_norm,
            schedule: cfg.lr_schedule(steps_per_epoch),
            stop_after: stop_after.unwrap_or(total_steps).min(total_steps),
            guard: cfg.guard.clone(),
            checkpoints: Some(CheckpointSettings {
                every: c.every_steps.map_or(SaveEvery::Epoch, SaveEvery::Steps),
                retention: Retention { keep_last: c.keep_last, keep_best: c.keep_best },
            }),
            validation: cfg.validation.every_steps.map(|every_steps| ValidationSettings {
                every_steps,
                metric: cfg.validation.metric.clone(),
                higher_is_better: cfg.validation.higher_is_better,
            }),
            log_every_steps: cfg.logging.every_steps,
            plot_every_steps: cfg.logging.plot_every_steps,
            resume,
        }
    }
}
