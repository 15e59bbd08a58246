//! The training loop. `blip2 pretrain` (stage one and stage two) and every phase of the
//! quickstart run through [`run`]; what differs between them is the [`Task`], the [`Batches`]
//! source and the [`Settings`].
//!
//! One step, top to bottom: take the step's micro-batches from the source; set the learning rate
//! from the schedule; accumulate the micro-batches' gradients, clip them, let the guard judge the
//! step and apply AdamW (`optimizer_step`); log; validate; checkpoint. A checkpoint holds the
//! trainable weights, the AdamW moments, the run RNG, the loader cursor and the guard, so a
//! resumed run continues bit for bit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::checkpoint::{BestMetric, Checkpointer, RunDir, TrainState};
use crate::grad::{StepGuard, StepVerdict};
use crate::metrics::{MetricsLog, MetricsRecord};
use crate::optim::AdamW;
use crate::params::ParamStore;
use crate::settings::{SaveEvery, Settings, ValidationSettings};
use crate::step::{optimizer_step, StepSettings};
use crate::task::{Batches, Fetched, Task};
use crate::{plot, rng, Error, Result};

/// Writes the model being trained, in a layout the inference commands open, into a directory.
pub type ModelWriter<'a> = &'a dyn Fn(&Path) -> Result<()>;

/// What a finished run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Optimizer steps done (over every session of a resumed run).
    pub steps: u64,
    /// Mean of each loss over the first and the last 10 % of this session's steps.
    pub first: BTreeMap<String, f64>,
    pub last: BTreeMap<String, f64>,
    pub seconds: f64,
    pub skipped_steps: u64,
    pub best: Option<BestMetric>,
    /// Trainable parameters that got no gradient in some step of this session (sorted).
    pub without_grad: Vec<String>,
}

/// The optional parts of a run: held-out data and where the model goes.
pub struct Extras<'a, B> {
    /// Validated every `settings.validation.every_steps`; required when that is set.
    pub validation: Option<&'a mut dyn Batches<Batch = B>>,
    /// Called with `RUN_DIR/model` when the run stops and with `RUN_DIR/best` whenever the
    /// validation metric improves.
    pub write_model: Option<ModelWriter<'a>>,
}

// Not derived: a derive would require `B: Default`.
impl<B> Default for Extras<'_, B> {
    fn default() -> Self {
        Self { validation: None, write_model: None }
    }
}

/// Trains `params` (the trainable parameters of `task`'s model) on `data`. `Err` when the guard
/// stops a diverged run, or on an error of the data, the task or the disk.
pub fn run<T: Task>(
    settings: &Settings,
    params: &ParamStore,
    task: &T,
    data: &mut dyn Batches<Batch = T::Batch>,
    mut extras: Extras<'_, T::Batch>,
) -> Result<RunSummary> {
    let started = Instant::now();
    let run = RunDir::create(&settings.run_dir)?;
    let bar = progress_bar(&settings.title, settings.stop_after)?;
    say(&bar, format!("{}: {}", settings.title, params.summary()));
    let mut opt = AdamW::new(settings.optimizer);
    let checkpointer = match settings.checkpoints {
        Some(c) => Some(Checkpointer::open(&run, c.retention)?.0),
        None => None,
    };
    let mut state = start_or_resume(settings, &run, checkpointer.as_ref(), params, &mut opt)?;
    if state.step > 0 {
        say(&bar, format!("resumed {} at step {}", run.root.display(), state.step));
    }
    let mut metrics = MetricsLog::open_resumed(&run.metrics_path(), state.step)?;
    let mut history: Vec<BTreeMap<String, f64>> = Vec::new();
    bar.set_position(state.step);

    // The last batch the source passed over, for the error when a whole epoch gives none.
    let mut passed_over: Option<String> = None;
    let mut warned_without_grad = false;
    let mut without_grad = std::collections::BTreeSet::new();
    data.start_epoch(state.epoch, state.loader)?;
    while state.step < settings.stop_after {
        // 1. The step's data, and how long the step waited for it (the loader prefetches: a
        // fed step waits for nothing).
        let waited = Instant::now();
        let batch = match data.next()? {
            Fetched::Step(batch) => batch,
            Fetched::PassedOver { reason, skipped, cursor } => {
                state.skipped_samples += skipped;
                state.loader = cursor;
                say(&bar, reason.clone());
                passed_over = Some(reason);
                continue;
            }
            Fetched::EndOfEpoch => {
                if state.step_in_epoch == 0 {
                    let last = passed_over.as_deref().unwrap_or("the epoch was empty");
                    return Err(Error::Msg(format!(
                        "a whole epoch gave no batch to train on (last: {last}; {} samples \
                         skipped so far, see the warnings above)",
                        state.skipped_samples
                    )));
                }
                if let (Some(ck), Some(SaveEvery::Epoch)) =
                    (&checkpointer, settings.checkpoints.map(|c| c.every))
                {
                    ck.save(&state, params, &opt)?;
                    data.checkpointed(state.loader.as_ref())?;
                }
                state.next_epoch();
                data.start_epoch(state.epoch, None)?;
                continue;
            }
        };
        state.skipped_samples += batch.skipped;
        let input_wait_s = waited.elapsed().as_secs_f64();
        let clock = Instant::now();
        let step = state.step;
        let lr = settings.schedule.lr(state.schedule_pos());

        // 2. Forward and backward over the micro-batches, clip, guard, AdamW.
        let step_settings =
            StepSettings { lr, max_grad_norm: settings.max_grad_norm, samples: batch.samples };
        let out =
            optimizer_step(params, &mut opt, &mut state, batch.micro.len(), step_settings, {
                let micro = &batch.micro;
                move |i, rng| task.loss(&micro[i], rng)
            })?;
        state.loader = batch.cursor;
        let samples_per_sec = batch.samples as f64 / clock.elapsed().as_secs_f64();

        // 3. The metrics record.
        let mut rec = MetricsRecord::new(step, state.epoch, lr);
        rec.losses = out.parts.clone();
        rec.losses.insert("total".into(), out.loss);
        rec.grad_norm = Some(out.grad_norm);
        rec.samples_per_sec = Some(samples_per_sec);
        rec.skipped_steps = state.guard.skipped_total;
        rec.skipped_samples = state.skipped_samples;
        match &out.verdict {
            StepVerdict::Skip { reason } => say(&bar, format!("step {step} skipped: {reason}")),
            StepVerdict::Apply { spike: true } => {
                rec.extra.insert("spike".into(), true.into());
            }
            StepVerdict::Apply { spike: false } => {}
        }
        if out.clip_coef < 1.0 {
            rec.extra.insert("clip_coef".into(), out.clip_coef.into());
        }
        rec.input_wait_s = Some(input_wait_s);
        without_grad.extend(out.without_grad.iter().cloned());
        if !out.without_grad.is_empty() && !warned_without_grad {
            // Once per run: an op with no backward fails this way, silently, on every step.
            let names = out.without_grad.join(", ");
            let n = out.without_grad.len();
            say(
                &bar,
                format!("warning: {n} trainable tensors got no gradient at step {step}: {names}"),
            );
            warned_without_grad = true;
        }

        // 4. Validation, and the best model so far.
        if let Some(v) = settings.validation.as_ref().filter(|v| state.step % v.every_steps == 0) {
            let val_data = extras.validation.as_deref_mut().ok_or_else(|| {
                Error::Config(
                    "validation.every_steps is set but the run has no validation data".into(),
                )
            })?;
            let values = task.validate(val_data)?;
            let improved =
                state.record_metric(&v.metric, metric_value(v, &values)?, v.higher_is_better);
            for (k, value) in values {
                rec.extra.insert(k, value.into());
            }
            if let (true, Some(write)) = (improved, extras.write_model) {
                write(&run.root.join("best"))?;
            }
        }
        history.push(rec.losses.clone());
        if state.step % settings.log_every_steps == 0 || state.step == settings.stop_after {
            metrics.append(&rec)?;
        }
        bar.set_position(state.step);
        bar.set_message(format!("loss {:.4} lr {lr:.2e} {samples_per_sec:.0} samples/s", out.loss));

        // 5. Checkpoint and curves.
        if let (Some(ck), Some(c)) = (&checkpointer, settings.checkpoints) {
            let due = matches!(c.every, SaveEvery::Steps(n) if state.step % n == 0);
            if due || state.step == settings.stop_after {
                ck.save(&state, params, &opt)?;
                data.checkpointed(state.loader.as_ref())?;
            }
        }
        if settings.plot_every_steps.is_some_and(|n| state.step % n == 0) {
            plot::plot_run(&run, &settings.title)?;
        }
    }
    bar.finish_and_clear();
    plot::plot_run(&run, &settings.title)?;
    if let Some(write) = extras.write_model {
        write(&run.root.join("model"))?;
    }
    say(
        &bar,
        format!("{}: {} steps done; run in {}", settings.title, state.step, run.root.display()),
    );
    let mut summary = summarize(&history, &state, started);
    summary.without_grad = without_grad.into_iter().collect();
    Ok(summary)
}

/// The newest checkpoint's state when resuming, else a fresh state. A run directory that already
/// holds checkpoints is only continued when asked to.
fn start_or_resume(
    settings: &Settings,
    run: &RunDir,
    checkpointer: Option<&Checkpointer>,
    params: &ParamStore,
    opt: &mut AdamW,
) -> Result<TrainState> {
    let fresh = || {
        let rng = rng::substream(settings.seed, &settings.rng_stream);
        TrainState::new(rng, StepGuard::from_config(&settings.guard))
    };
    let Some(ck) = checkpointer else { return Ok(fresh()) };
    match ck.resume(params, opt)? {
        Some((_, state)) if settings.resume => Ok(state),
        Some((path, _)) => Err(Error::Msg(format!(
            "{} already has checkpoints ({}): resume it or use another run directory",
            run.root.display(),
            path.display()
        ))),
        None => Ok(fresh()),
    }
}

fn metric_value(v: &ValidationSettings, values: &BTreeMap<String, f64>) -> Result<f64> {
    values.get(&v.metric).copied().ok_or_else(|| {
        let known: Vec<&str> = values.keys().map(String::as_str).collect();
        Error::Config(format!(
            "validation.metric `{}` is not one of the validation metrics ({})",
            v.metric,
            known.join(", ")
        ))
    })
}

fn summarize(
    history: &[BTreeMap<String, f64>],
    state: &TrainState,
    started: Instant,
) -> RunSummary {
    let n = history.len();
    let tenth = (n / 10).max(1).min(n.max(1));
    let mean = |rows: &[BTreeMap<String, f64>]| {
        let mut m = BTreeMap::new();
        for r in rows {
            for (k, v) in r {
                *m.entry(k.clone()).or_insert(0.0) += v / rows.len() as f64;
            }
        }
        m
    };
    RunSummary {
        steps: state.step,
        first: mean(&history[..tenth.min(n)]),
        last: mean(&history[n.saturating_sub(tenth)..]),
        seconds: started.elapsed().as_secs_f64(),
        skipped_steps: state.guard.skipped_total,
        best: state.best.clone(),
        without_grad: Vec::new(),
    }
}

/// One set of bars for the process: runs that train side by side get one each.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

fn progress_bar(title: &str, len: u64) -> Result<ProgressBar> {
    let bar = bars().add(ProgressBar::new(len));
    let style =
        ProgressStyle::with_template(&format!("{title} {{bar:30}} {{pos}}/{{len}} {{msg}}"))
            .map_err(|e| Error::Msg(format!("progress bar template: {e}")))?;
    bar.set_style(style);
    Ok(bar)
}

/// A line above the bars, or on stdout where the bars are hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}
