//! `blip2 pretrain`: stage one (ITC + ITM + ITG with a frozen ViT) or stage two (the LLM's loss
//! through a frozen OPT / FLAN-T5 / LLaMA, `stage = "stage2"`), through `train::run`; or, with
//! `model.connector`, LLaVA's or MiniGPT-4's stages (`connector.rs`).
//!
//! The run directory holds the resolved `config.toml`, `metrics.jsonl`, `curves.png`,
//! checkpoints (weights, AdamW moments, RNG, loader cursor, guard: `--resume` continues bit for
//! bit) and, when the run stops, `model/`: the trained model in HF Hub layout, which `score`,
//! `embed`, `eval` and `generate` open (`best/` too, the best by the validation metric).

mod connector;
pub(crate) mod data;
mod model;
mod stage_two;

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;

use datasets::image::ImageProcessorConfig;
use datasets::text::TextTokenizer;
use datasets::ImageTextBatch;
use qformer::masks::PaddingMask;
use qformer::objectives::{NegativeMode, ObjectiveConfig};
use train::config::Stage;
use train::tasks::{ImageBatch, StageOne, StageOneBatch, StageTwo, StageTwoMicro};
use train::{Extras, ParamStore, RunConfig, RunLock, RunSummary, Settings};

use crate::common::device::parse_device;
use crate::common::feature_cache::FeatureCache;
use crate::common::model_dir::save_model_dir;
use crate::common::train_error;
use data::LoaderBatches;
use model::RunModel;
use stage_two::StageTwoLlm;

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Run config (TOML), or a preset name: `stage1` (LAVIS pretrain_stage1) or `tiny`.
    #[arg(long, conflicts_with = "resume")]
    pub config: Option<String>,
    /// Override a config key, e.g. `--set optimizer.lr=1e-4` (repeatable; unknown keys are
    /// refused). With `--resume` the overrides apply on top of the run's saved config.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue the run in RUN_DIR from its newest checkpoint, with its saved config.toml.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Run directory (default: `run_dir` of the config).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Stop (with a checkpoint) once this many optimizer steps are done, without changing the
    /// schedule's horizon: a planned interruption.
    #[arg(long)]
    pub stop_after: Option<u64>,
}

/// The run's config and directory. A resumed run keeps the config it was started with (plus
/// `--set` overrides); `--config` or `--out` beside `--resume` is refused by the argument parser.
fn resolve_config(args: &PretrainArgs) -> Result<(RunConfig, PathBuf)> {
    let base = match (&args.resume, &args.config) {
        (Some(dir), _) => RunConfig::load(&dir.join("config.toml"))
            .with_context(|| format!("--resume {}: not a run directory", dir.display()))?,
        (None, Some(c)) if c == "stage1" || c == "tiny" => RunConfig::preset(c)?,
        (None, Some(c)) => RunConfig::load(Path::new(c))?,
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

/// What both stages start from: the resolved config, the run directory, the model and where the
/// images come from.
struct Run<'a> {
    cfg: RunConfig,
    root: PathBuf,
    args: &'a PretrainArgs,
    dev: Device,
    built: RunModel,
    /// `data.features`: cached frozen-ViT features instead of pixels.
    cache: Option<FeatureCache>,
}

impl Run<'_> {
    fn image_size(&self) -> usize {
        self.built.model.config().vision_config.image_size
    }

    /// The images of samples `r` of a loader batch, as the model reads them.
    fn images(&self, b: &ImageTextBatch, r: &Range<usize>) -> Result<ImageBatch> {
        Ok(match &self.cache {
            Some(c) => ImageBatch::Features(c.batch(&b.keys[r.clone()]).context("data.features")?),
            None => ImageBatch::Pixels(pixels(b, r, &self.dev)?),
        })
    }

    fn settings(&self, title: &str, samples: usize) -> Settings {
        let steps_per_epoch = (samples / self.cfg.batch.size).max(1) as u64;
        let resume = self.args.resume.is_some();
        let (cfg, root) = (&self.cfg, self.root.clone());
        Settings::from_config(cfg, root, title, steps_per_epoch, self.args.stop_after, resume)
    }
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let (cfg, root) = resolve_config(&args)?;
    let dev = parse_device(&cfg.device)?;
    // Claimed before anything is written: a refused run leaves the directory as it was.
    let _lock = RunLock::claim(&root, args.resume.is_some())?;
    cfg.save(&root.join("config.toml"))?;
    if cfg.model.connector.is_some() {
        connector::run(&cfg, &root, &args, &dev)?;
        return Ok(());
    }
    let built = model::build(&cfg, &root, &dev)?;
    let cache = match &cfg.data.features {
        Some(dir) => Some(
            FeatureCache::load(dir, &dev)
                .with_context(|| format!("data.features {}", dir.display()))?,
        ),
        None => None,
    };
    let run = Run { cfg, root, args: &args, dev, built, cache };
    let summary = match run.cfg.stage {
        Stage::Stage1 => stage_one(&run)?,
        Stage::Stage2 => stage_two(&run)?,
    };
    if let Some(best) = &summary.best {
        println!("best {} {} at step {}", best.name, best.value, best.step);
    }
    Ok(())
}

/// ITC + ITM + ITG on the loader's batches, validated on the held-out split when asked.
fn stage_one(run: &Run) -> Result<RunSummary> {
    let (cfg, built, dev) = (&run.cfg, &run.built, &run.dev);
    let qformer_tokenizer = || {
        TextTokenizer::from_file(&built.tokenizer, cfg.data.max_txt_len as usize)
            .with_context(|| format!("reading the tokenizer {}", built.tokenizer.display()))
    };
    let tokenizer = qformer_tokenizer()?;
    let task = StageOne {
        model: &built.model,
        objectives: ObjectiveConfig {
            negatives: NegativeMode::Sample,
            bos_token_id: tokenizer.bos_id,
            pad_token_id: tokenizer.pad_id,
            ..Default::default()
        },
    };
    let params = ParamStore::from_varmap(&built.varmap, cfg.optimizer.decay_rule);
    let loader = data::loader(cfg, &run.root, Some(tokenizer), run.image_size())?;
    // Built after `loader`, which writes the synthetic world the split is read from.
    let val_loader = match cfg.validation.every_steps {
        Some(_) => Some(data::val_loader(cfg, &run.root, qformer_tokenizer()?, run.image_size())?),
        None => None,
    };
    let train_batch = |b: &ImageTextBatch, r: Range<usize>| {
        let (input_ids, attention_mask) = text_rows(b, &r, dev)?;
        let image = run.images(b, &r)?;
        Ok(StageOneBatch { image, input_ids, attention_mask, image_ids: None })
    };
    // Validation reads pixels with the eval transform, never the training cache.
    let val_batch = |b: &ImageTextBatch, r: Range<usize>| {
        let (input_ids, attention_mask) = text_rows(b, &r, dev)?;
        let image = ImageBatch::Pixels(pixels(b, &r, dev)?);
        Ok(StageOneBatch { image, input_ids, attention_mask, image_ids: None })
    };
    let mut batches =
        LoaderBatches::new(&loader, cfg.seed, cfg.batch.micro_batches, 2, &train_batch)
            .with_skip_log(&run.root);
    let mut val = val_loader.as_ref().map(|l| LoaderBatches::new(l, 0, 1, 2, &val_batch));
    let processor = ImageProcessorConfig::square(run.image_size());
    let write_model = |dir: &Path| -> train::Result<()> {
        let written = built
            .config_json()
            .and_then(|c| save_model_dir(dir, &c, &built.tensors()?, &built.tokenizer, &processor));
        written.map_err(|e| model_error(dir, e))
    };
    let extras = Extras {
        validation: val.as_mut().map(|v| v as &mut dyn train::Batches<Batch = StageOneBatch>),
        write_model: Some(&write_model),
    };
    let settings = run.settings("blip2 pretrain (stage 1)", loader.len());
    Ok(train::run(&settings, &params, &task, &mut batches, extras)?)
}

/// The LLM's loss through the projected queries, the LLM frozen.
fn stage_two(run: &Run) -> Result<RunSummary> {
    let (cfg, built) = (&run.cfg, &run.built);
    if cfg.validation.every_steps.is_some() {
        bail!("validation.every_steps: stage two has no validation loss; unset it for stage = \"stage2\"");
    }
    let hidden = built.model.config().qformer_config.hidden_size;
    let s2 = StageTwoLlm::load(cfg, hidden, &run.dev)?;
    let task = StageTwo { model: &built.model, llm: &s2.llm };
    let params = s2.params(&built.varmap, cfg.optimizer.decay_rule);
    // Stage two never uses the Q-Former tokenizer (BLIP-2 OPT/T5 directories hold the LLM's).
    let loader = data::loader(cfg, &run.root, None, run.image_size())?;
    let build = |b: &ImageTextBatch, r: Range<usize>| {
        let text = s2.captions.texts(&b.captions[r.clone()])?;
        Ok(StageTwoMicro { image: run.images(b, &r)?, text })
    };
    let mut batches = LoaderBatches::new(&loader, cfg.seed, cfg.batch.micro_batches, 1, &build)
        .with_skip_log(&run.root);
    let processor = ImageProcessorConfig::square(run.image_size());
    let write_model = |dir: &Path| -> train::Result<()> {
        s2.save_model(dir, built, &processor).map_err(|e| model_error(dir, e))
    };
    let extras = Extras { validation: None, write_model: Some(&write_model) };
    let settings = run.settings("blip2 pretrain (stage 2)", loader.len());
    Ok(train::run(&settings, &params, &task, &mut batches, extras)?)
}

fn model_error(dir: &Path, e: anyhow::Error) -> train::Error {
    train_error(e.context(format!("writing the model to {}", dir.display())))
}

/// Pixels `[n, 3, H, W]` of samples `r` of a loader batch.
fn pixels(b: &ImageTextBatch, r: &Range<usize>, dev: &Device) -> Result<Tensor> {
    let img = b.channels * b.height * b.width;
    let px = &b.pixel_values[r.start * img..r.end * img];
    Ok(Tensor::from_slice(px, (r.len(), b.channels, b.height, b.width), dev)?)
}

/// The Q-Former token ids `[n, L]` and padding mask of samples `r` of a loader batch.
fn text_rows(b: &ImageTextBatch, r: &Range<usize>, dev: &Device) -> Result<(Tensor, PaddingMask)> {
    let l = b.seq_len;
    let ids = Tensor::from_slice(&b.input_ids[r.start * l..r.end * l], (r.len(), l), dev)?;
    let rows: Vec<Vec<u32>> =
        b.attention_mask[r.start * l..r.end * l].chunks(l).map(<[u32]>::to_vec).collect();
    Ok((ids, PaddingMask::from_rows(&rows)?))
}
