//! `blip2 pretrain` with `model.connector`: LLaVA's or MiniGPT-4's two stages through the one
//! trainer.
//!
//! - LLaVA (`model.init_from` = an HF or original LLaVA directory, or `model.vision_weights` +
//!   `model.llm` with a fresh projector): stage 1 trains `multi_modal_projector`
//!   on captions with the `plain` template; stage 2 trains the projector and the LLM on
//!   conversations with the `v1` template (`model.train_llm = false` keeps the LLM frozen).
//!   Images go through the directory's CLIP image processor, never augmented.
//! - MiniGPT-4 (`model.init_from` = a parts TOML): `llama_proj` trains in both stages; stage 1
//!   on captions, stage 2 on conversations in `###Human: ... ###Assistant: `. Images go through
//!   the BLIP-2 directory's processor, with MiniGPT-4's random resized crop (no flip) unless
//!   `data.augment = false`.
//!
//! Every sample is tokenized once before the run: those that cannot be read (no image marker,
//! LLaVA's tokenization mismatch, too long) are left out and counted, so that no step meets
//! one. The trained model is written as the inference commands open it: a LLaVA directory
//! (same layout and files as the one it started from), or a MiniGPT-4 directory holding
//! `minigpt4.toml` and `llama_proj.safetensors`.

mod llava_layout;
mod model;
mod samples;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use candle_core::Device;

use datasets::ImageTextBatch;
use qformer::connector::Piece;
use train::config::{ConnectorKind, Stage};
use train::tasks::{ConnectorMicro, ConnectorTask, TemplateTokenizer};
use train::{Extras, ParamStore, RunConfig, RunSummary, Settings};

use super::data::LoaderBatches;
use super::{model_error, pixels, PretrainArgs};

use model::ConnectorModel;
use samples::Samples;

pub fn run(cfg: &RunConfig, root: &Path, args: &PretrainArgs, dev: &Device) -> Result<RunSummary> {
    let model = ConnectorModel::load(cfg, dev)?;
    let connector = model.connector();
    let template = model.template(cfg.stage)?;
    let tokenizer = TemplateTokenizer::from_file(
        &model.tokenizer_path(),
        template,
        cfg.data.max_seq_len as usize,
        cfg.data.max_txt_len as usize,
        connector.tokens_per_image(),
    )?;
    let loader_config = model.loader_config(cfg)?;
    let marker = match &model {
        ConnectorModel::MiniGpt4 { model } => Some(model.parts().image_marker.clone()),
        ConnectorModel::Llava { .. } => None,
    };
    let (samples, mut data) = Samples::read(cfg, root, marker.as_deref())?;
    samples.keep_readable(&mut data, &tokenizer, &loader_config.caption)?;
    let n = data.len();
    let streams = data.streams();
    let cleaner = loader_config.caption.clone();
    let mut loader = data.into_loader(None, loader_config)?;
    let (samples, tokenizer) = (Arc::new(samples), Arc::new(tokenizer));
    if streams {
        let (s, t) = (samples.clone(), tokenizer.clone());
        loader = loader.with_check(Arc::new(move |item| s.readable(item, &t, &cleaner)));
    }

    let build = |b: &ImageTextBatch, r: Range<usize>| -> Result<ConnectorMicro> {
        let rows = r
            .clone()
            .map(|k| {
                tokenizer
                    .pieces(samples.text(b, k))
                    .map_err(|e| anyhow!("sample {}: {e}", b.keys[k]))
            })
            .collect::<Result<Vec<Vec<Piece>>>>()?;
        Ok(ConnectorMicro { pixels: pixels(b, &r, dev)?, rows })
    };
    let mut batches = LoaderBatches::new(&loader, cfg.seed, cfg.batch.micro_batches, 1, &build)
        .with_skip_log(root);
    let params = ParamStore::from_varmap(model.varmap(), cfg.optimizer.decay_rule);
    let task = ConnectorTask { model: connector };
    let write_model =
        |dir: &Path| -> train::Result<()> { model.save(dir).map_err(|e| model_error(dir, e)) };
    let extras = Extras { validation: None, write_model: Some(&write_model) };
    let kind = match cfg.model.connector {
        Some(ConnectorKind::Llava) => "LLaVA",
        _ => "MiniGPT-4",
    };
    let stage = if cfg.stage == Stage::Stage1 { 1 } else { 2 };
    let title = format!("blip2 pretrain ({kind} stage {stage})");
    let steps_per_epoch = (n / cfg.batch.size).max(1) as u64;
    let settings = Settings::from_config(
        cfg,
        root.to_path_buf(),
        &title,
        steps_per_epoch,
        args.stop_after,
        args.resume.is_some(),
    );
    Ok(train::run(&settings, &params, &task, &mut batches, extras)?)
}
