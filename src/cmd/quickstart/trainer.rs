//! The loop around `qformer::train::optimizer_step` shared by the quickstart's three training
//! phases: warmup + cosine schedule, guarded AdamW steps, a progress bar, `metrics.jsonl` and
//! `curves.png` in the phase's run directory.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use qformer::train::checkpoint::RunDir;
use qformer::train::config::GuardConfig;
use qformer::train::{
    optimizer_step, plot, rng, AdamW, AdamWConfig, LrSchedule, MetricsLog, MetricsRecord,
    MicroLoss, ParamStore, SchedulePos, StepGuard, StepSettings, TrainRng, TrainState,
};

/// One set of bars for the whole run: the LM and stage one train side by side, each with its own.
fn bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Optimizer settings of one phase.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PhaseOptim {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
}

/// What a finished phase reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseSummary {
    pub steps: u64,
    /// Mean of each loss over the first and the last 10% of the steps.
    pub first: std::collections::BTreeMap<String, f64>,
    pub last: std::collections::BTreeMap<String, f64>,
    pub seconds: f64,
    pub skipped_steps: u64,
}

pub struct PhaseTrainer {
    run: RunDir,
    title: String,
    params: ParamStore,
    opt: AdamW,
    state: TrainState,
    schedule: LrSchedule,
    log: MetricsLog,
    bar: ProgressBar,
    cfg: PhaseOptim,
    history: Vec<std::collections::BTreeMap<String, f64>>,
    started: Instant,
}

impl PhaseTrainer {
    pub fn new(
        dir: &Path,
        title: &str,
        params: ParamStore,
        cfg: PhaseOptim,
        seed: u64,
    ) -> Result<Self> {
        let run = RunDir::create(dir)?;
        let log = MetricsLog::open(&run.metrics_path())?;
        let opt = AdamW::new(AdamWConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        });
        let schedule = LrSchedule::LinearWarmupCosine {
            warmup_steps: cfg.warmup_steps,
            warmup_lr: cfg.lr * 0.01,
            init_lr: cfg.lr,
            min_lr: cfg.lr * 0.05,
            total_steps: cfg.steps,
        };
        let state = TrainState::new(
            rng::substream(seed, &format!("train/{title}")),
            StepGuard::from_config(&GuardConfig::default()),
        );
        let bar = bars().add(ProgressBar::new(cfg.steps));
        bar.set_style(ProgressStyle::with_template(&format!(
            "{title:>8} {{bar:30}} {{pos}}/{{len}} {{msg}}"
        ))?);
        bars().println(format!("{title}: {}", params.summary()))?;
        Ok(Self {
            run,
            title: title.to_string(),
            params,
            opt,
            state,
            schedule,
            log,
            bar,
            cfg,
            history: Vec::new(),
            started: Instant::now(),
        })
    }

    pub fn done(&self) -> bool {
        self.state.step >= self.cfg.steps
    }

    /// One optimizer step on a single micro-batch built by `loss_fn` (its parts are logged).
    pub fn step<F>(&mut self, samples: usize, mut loss_fn: F) -> Result<()>
    where
        F: FnMut(&mut TrainRng) -> qformer::Result<MicroLoss>,
    {
        let t0 = Instant::now();
        let step = self.state.step;
        let lr = self.schedule.lr(SchedulePos { step, epoch: 0, step_in_epoch: step });
        let settings = StepSettings { lr, max_grad_norm: Some(1.0), samples: samples as u64 };
        let out =
            optimizer_step(&self.params, &mut self.opt, &mut self.state, 1, settings, |_, r| {
                loss_fn(r)
            })?;
        let sps = samples as f64 / t0.elapsed().as_secs_f64();
        let mut rec = MetricsRecord::new(step, 0, lr);
        rec.losses = out.parts.clone();
        rec.losses.insert("total".into(), out.loss);
        rec.grad_norm = Some(out.grad_norm);
        rec.samples_per_sec = Some(sps);
        rec.skipped_steps = self.state.guard.skipped_total;
        self.log.append(&rec)?;
        self.history.push(rec.losses.clone());
        self.bar.set_position(self.state.step);
        self.bar.set_message(format!("loss {:.4} lr {lr:.1e} {sps:.0} samples/s", out.loss));
        Ok(())
    }

    /// Closes the bar, draws `curves.png`, and summarizes the losses.
    pub fn finish(self) -> Result<PhaseSummary> {
        self.bar.finish_and_clear();
        plot::plot_run(&self.run, &format!("quickstart: {}", self.title))?;
        let n = self.history.len();
        let tenth = (n / 10).max(1).min(n.max(1));
        let mean = |rows: &[std::collections::BTreeMap<String, f64>]| {
            let mut m = std::collections::BTreeMap::new();
            for r in rows {
                for (k, v) in r {
                    *m.entry(k.clone()).or_insert(0.0) += v / rows.len() as f64;
                }
            }
            m
        };
        Ok(PhaseSummary {
            steps: self.state.step,
            first: mean(&self.history[..tenth.min(n)]),
            last: mean(&self.history[n.saturating_sub(tenth)..]),
            seconds: self.started.elapsed().as_secs_f64(),
            skipped_steps: self.state.guard.skipped_total,
        })
    }
}
