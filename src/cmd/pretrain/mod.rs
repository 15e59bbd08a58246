//! `blip2 pretrain`: the training loop of stage one (ITC + ITM + ITG with a frozen ViT) and
//! stage two (LM loss through a frozen OPT / FLAN-T5, `stage = "stage2"`, see `stage_two`).
//!
//! Each optimizer step takes `batch.size` samples from the loader, splits them into
//! `batch.micro_batches` forward/backward passes and runs `qformer::train::stage_one_step`
//! (the same function the LAVIS trajectory test drives). Checkpoints carry the trainable
//! weights, AdamW moments, the run RNG, the loader cursor and the step guard, so `--resume`
//! continues bit for bit.

mod data;
mod features;
mod model;
mod stage_two;
mod validate;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use datasets::text::TextTokenizer;
use datasets::{ImageTextBatch, LoaderState};
use qformer::masks::PaddingMask;
use qformer::model::ImageInput;
use qformer::objectives::{NegativeMode, ObjectiveConfig, PretrainBatch, StageTwoBatch};
use qformer::train::checkpoint::RunDir;
use qformer::train::config::Stage;
use qformer::train::{
    plot, rng, stage_one_step, stage_two_step, AdamW, Checkpointer, MetricsLog, MetricsRecord,
    ParamStore, Retention, RunConfig, StepGuard, StepVerdict, TrainState,
};

use crate::common::device::parse_device;

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Run config (TOML), or a preset name: `stage1` (LAVIS pretrain_stage1) or `tiny`.
    #[arg(long)]
    pub config: Option<String>,
    /// Override a config key, e.g. `--set optimizer.lr=1e-4` (repeatable; unknown keys are refused).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue the run in RUN_DIR from its newest checkpoint (its config.toml is the base config).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Run directory (default: `run_dir` of the config).
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Stop (with a checkpoint) once this many optimizer steps are done, without changing the
    /// schedule's horizon: a planned interruption.
    #[arg(long)]
    pub stop_after: Option<u64>,
}

fn resolve_config(args: &PretrainArgs) -> Result<(RunConfig, PathBuf)> {
    let base = match (&args.resume, &args.config) {
        (Some(dir), _) => RunConfig::load(&dir.join("config.toml"))?,
        (None, Some(c)) if c == "stage1" || c == "tiny" => RunConfig::preset(c)?,
        (None, Some(c)) => RunConfig::load(std::path::Path::new(c))?,
        (None, None) => {
            bail!("give --config FILE (or a preset name: stage1, tiny) or --resume RUN_DIR")
        }
    };
    let cfg = base.with_overrides(&args.overrides)?;
    cfg.validate()?;
    let root =
        args.resume.clone().or_else(|| args.out.clone()).unwrap_or_else(|| cfg.run_dir.clone());
    Ok((cfg, root))
}

/// The loader's batch as `micro` tensor batches: (pixels or cached features, ids, mask) each.
pub(crate) fn to_micro(
    b: &ImageTextBatch,
    micro: usize,
    cache: Option<&features::FeatureCache>,
    dev: &Device,
) -> Result<Vec<(Tensor, Tensor, PaddingMask)>> {
    let per = b.batch_size.div_ceil(micro);
    let img = b.channels * b.height * b.width;
    let mut out = Vec::new();
    for start in (0..b.batch_size).step_by(per.max(1)) {
        let n = per.min(b.batch_size - start);
        let px = &b.pixel_values[start * img..(start + n) * img];
        // Pixels [n, 3, H, W], or the cached ViT features [n, N, Dv] of the same images.
        let pixels = match cache {
            Some(c) => c.batch(&b.keys[start..start + n])?,
            None => Tensor::from_slice(px, (n, b.channels, b.height, b.width), dev)?,
        };
        let ids = &b.input_ids[start * b.seq_len..(start + n) * b.seq_len];
        let ids = Tensor::from_slice(ids, (n, b.seq_len), dev)?;
        let rows: Vec<Vec<u32>> = match b.seq_len {
            0 => vec![Vec::new(); n], // no Q-Former text (stage two)
            l => b.attention_mask[start * l..(start + n) * l]
                .chunks(l)
                .map(<[u32]>::to_vec)
                .collect(),
        };
        out.push((pixels, ids, PaddingMask::from_rows(&rows)?));
    }
    Ok(out)
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let (cfg, root) = resolve_config(&args)?;
    if cfg.stage == Stage::Stage2 && cfg.validation.every_steps.is_some() {
        bail!("validation.every_steps: validation losses are stage-one losses; unset it for stage = \"stage2\"");
    }
    let dev = parse_device(&cfg.device)?;
    let run = RunDir::create(&root)?;
    cfg.save(&run.config_path())?;

    let built = model::build(&cfg, &run.root, &dev)?;
    let stage_two = match cfg.stage {
        Stage::Stage1 => None,
        Stage::Stage2 => Some(stage_two::StageTwo::load(
            &cfg,
            built.model.config().qformer_config.hidden_size,
            &dev,
        )?),
    };
    let params = match &stage_two {
        None => ParamStore::from_varmap(&built.varmap, cfg.optimizer.decay_rule),
        Some(s2) => s2.params(&built.varmap, cfg.optimizer.decay_rule),
    };
    println!("{}", params.summary());
    let tok_path = built.tokenizer.clone();
    // Stage two never uses the Q-Former tokenizer (BLIP-2 OPT/T5 directories hold the LLM's).
    let tokenizer = match cfg.stage {
        Stage::Stage1 => Some(
            TextTokenizer::from_file(&tok_path, cfg.data.max_txt_len as usize)
                .with_context(|| format!("reading the tokenizer {}", tok_path.display()))?,
        ),
        Stage::Stage2 => None,
    };
    let objectives = ObjectiveConfig {
        negatives: NegativeMode::Sample,
        bos_token_id: tokenizer.as_ref().map_or(0, |t| t.bos_id),
        pad_token_id: tokenizer.as_ref().map_or(0, |t| t.pad_id),
        ..Default::default()
    };
    let image_size = built.model.config().vision_config.image_size;
    let loader = data::loader(&cfg, &run.root, tokenizer, image_size)?;
    // Built after `loader`, which writes the synthetic world the split is read from.
    let val_loader = cfg
        .validation
        .every_steps
        .map(|_| {
            let t = TextTokenizer::from_file(&tok_path, cfg.data.max_txt_len as usize)?;
            data::val_loader(&cfg, &run.root, t, image_size)
        })
        .transpose()?;
    let cache = match &cfg.data.features {
        Some(dir) => Some(
            features::FeatureCache::load(dir, &dev)
                .with_context(|| format!("data.features {}", dir.display()))?,
        ),
        None => None,
    };
    let steps_per_epoch = (loader.len() / cfg.batch.size).max(1) as u64;
    let schedule = cfg.lr_schedule(steps_per_epoch);
    let total = cfg.total_steps(steps_per_epoch);
    let stop = args.stop_after.unwrap_or(total).min(total);

    let mut opt = AdamW::new(cfg.optimizer.adamw());
    let retention = Retention {
        keep_last: cfg.checkpointing.keep_last,
        keep_best: cfg.checkpointing.keep_best,
    };
    let (ckpt, _) = Checkpointer::open(&run, retention)?;
    let mut state = match ckpt.resume(&params, &mut opt)? {
        Some((path, state)) if args.resume.is_some() => {
            println!("resumed from {} at step {}", path.display(), state.step);
            state
        }
        Some((path, _)) => bail!(
            "{} already has checkpoints ({}): use --resume or another --out",
            run.root.display(),
            path.display()
        ),
        None => {
            TrainState::new(rng::substream(cfg.seed, "train"), StepGuard::from_config(&cfg.guard))
        }
    };
    let mut cursor: LoaderState = match &state.loader {
        serde_json::Value::Null => LoaderState { seed: cfg.seed, epoch: state.epoch, position: 0 },
        v => {
            serde_json::from_value(v.clone()).context("checkpoint state.json: bad loader cursor")?
        }
    };
    let mut metrics = MetricsLog::open_resumed(&run.metrics_path(), state.step)?;

    let bar = ProgressBar::new(stop).with_position(state.step);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")?);
    let mut epoch = loader.epoch(cursor);
    while state.step < stop {
        let batch = match epoch.next() {
            Some(b) => b?,
            None => {
                if state.step_in_epoch == 0 {
                    bail!(
                        "a whole epoch gave no batch of at least 2 readable samples \
                         ({} samples skipped so far; see the warnings above)",
                        state.skipped_samples
                    );
                }
                state.next_epoch();
                cursor = LoaderState { seed: cfg.seed, epoch: state.epoch, position: 0 };
                epoch = loader.epoch(cursor);
                continue;
            }
        };
        state.skipped_samples += batch.skipped.len() as u64;
        let t0 = Instant::now();
        let lr = schedule.lr(state.schedule_pos());
        let micro = to_micro(&batch, cfg.batch.micro_batches, cache.as_ref(), &dev)?;
        let too_few = |n: usize| stage_two.is_none() && n < 2;
        if micro.is_empty() || micro.iter().any(|(_, ids, _)| ids.dim(0).map_or(true, too_few)) {
            // Stage one's ITM needs a negative from another sample of the same micro-batch: a batch thinned
            // out by unreadable samples is passed over (its cursor kept, so a resume does not
            // read it again).
            bar.println(format!(
                "batch with {} usable samples passed over ({} skipped)",
                batch.batch_size,
                batch.skipped.len()
            ));
            cursor = batch.state_after;
            state.loader = serde_json::to_value(cursor)?;
            continue;
        }
        let image = |px| match cache {
            Some(_) => ImageInput::VisionFeatures(px),
            None => ImageInput::Pixels(px),
        };
        let step = state.step;
        let samples = batch.batch_size as u64;
        let max_norm = cfg.optimizer.max_grad_norm;
        let out = match &stage_two {
            None => {
                let views: Vec<PretrainBatch> = micro
                    .iter()
                    .map(|(px, ids, mask)| PretrainBatch {
                        image: image(px),
                        input_ids: ids,
                        attention_mask: mask,
                        image_ids: None,
                    })
                    .collect();
                stage_one_step(
                    &built.model,
                    &params,
                    &mut opt,
                    &mut state,
                    &objectives,
                    &views,
                    lr,
                    max_norm,
                    samples,
                )?
            }
            Some(s2) => {
                // Same split as `to_micro`: consecutive chunks of ceil(B / micro) samples.
                let per = batch.batch_size.div_ceil(cfg.batch.micro_batches).max(1);
                let views = micro
                    .iter()
                    .zip(batch.captions.chunks(per))
                    .map(|((px, _, _), caps)| {
                        Ok(StageTwoBatch { image: image(px), text: s2.texts(caps)? })
                    })
                    .collect::<Result<Vec<_>>>()?;
                stage_two_step(
                    &built.model,
                    &s2.llm,
                    &params,
                    &mut opt,
                    &mut state,
                    &views,
                    lr,
                    max_norm,
                    samples,
                )?
            }
        };
        cursor = batch.state_after;
        state.loader = serde_json::to_value(cursor)?;

        let sps = batch.batch_size as f64 / t0.elapsed().as_secs_f64();
        let mut rec = MetricsRecord::new(step, state.epoch, lr);
        rec.losses = out.parts.clone();
        rec.losses.insert("total".into(), out.loss);
        rec.grad_norm = Some(out.grad_norm);
        rec.samples_per_sec = Some(sps);
        rec.skipped_steps = state.guard.skipped_total;
        rec.skipped_samples = state.skipped_samples;
        match &out.verdict {
            StepVerdict::Skip { reason } => bar.println(format!("step {step} skipped: {reason}")),
            StepVerdict::Apply { spike: true } => {
                rec.extra.insert("spike".into(), true.into());
            }
            StepVerdict::Apply { spike: false } => {}
        }
        let val_due = cfg.validation.every_steps.is_some_and(|n| state.step % n == 0);
        if let (true, Some(vl)) = (val_due, &val_loader) {
            let val = validate::validation_losses(&built.model, vl, &objectives, &dev)?;
            state.record_metric("val_loss", val["val_loss"], false);
            for (k, v) in val {
                rec.extra.insert(k, v.into());
            }
        }
        metrics.append(&rec)?;
        bar.set_position(state.step);
        bar.set_message(format!("loss {:.4} lr {lr:.2e} {sps:.1} samples/s", out.loss));

        let due = cfg.checkpointing.every_steps.is_some_and(|n| state.step % n == 0);
        if due || state.step == stop {
            ckpt.save(&state, &params, &opt)?;
        }
    }
    drop(epoch);
    bar.finish();
    let title = match cfg.stage {
        Stage::Stage1 => "blip2 pretrain (stage 1)",
        Stage::Stage2 => "blip2 pretrain (stage 2)",
    };
    plot::plot_run(&run, title)?;
    println!("{} steps done; run in {}", state.step, run.root.display());
    Ok(())
}
