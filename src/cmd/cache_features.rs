//! `blip2 cache-features`: run the frozen ViT once over a dataset's images and store its output
//! (before `ln_vision`, which is trainable) so training can skip the ViT.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;

use datasets::formats::karpathy::read_karpathy_train;
use datasets::image::{eval_transform, DecodeLimits, ImageProcessorConfig};
use datasets::loader::load_pixels;
use qformer::weights::{load_hf_dir, LoadOptions};
use train::RunConfig;

use crate::cmd::pretrain::data::caption_items;
use crate::common::atomic::replace_dir;
use crate::common::feature_cache::{
    sha256_hex, FeatureIndex, FeatureShard, SkippedImage, INDEX_FILE, WHAT,
};

/// Cached features are computed with the EVAL transform (resize only): training from a cache
/// therefore sees no random crops or flips, unlike LAVIS's train transform.
#[derive(Debug, Args)]
#[command(
    after_help = "Training reads the cache when the run config sets `data.features = DIR`. The features are made with the eval transform (resize, no random resized crop, no flip), so a cached run trains without image augmentation."
)]
pub struct CacheFeaturesArgs {
    /// BLIP-2 HF model directory (config.json, model.safetensors, preprocessor_config.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Karpathy-style caption JSON (`[{"image": ..., "caption": ...}]`).
    #[arg(long, required_unless_present = "config", requires = "images")]
    pub data: Option<PathBuf>,
    /// Directory the `image` paths are relative to.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// A `blip2 pretrain` run config whose data to cache: `data.root` or `[[data.sources]]`
    /// (webdataset shards, tables, ...), as training reads it; `data_report.json` goes into
    /// `--out`.
    #[arg(long, conflicts_with_all = ["data", "images"])]
    pub config: Option<PathBuf>,
    /// Output directory: `features-NNNNN.safetensors` shards and `index.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per shard.
    #[arg(long, default_value_t = 1024)]
    pub shard_size: usize,
    /// Images per ViT forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
}

pub fn run(args: CacheFeaturesArgs) -> Result<()> {
    ensure!(
        args.shard_size > 0 && args.batch_size > 0,
        "--shard-size and --batch-size must be > 0"
    );
    let loaded =
        load_hf_dir(&args.model, &LoadOptions { allow_known_unused: true, ..Default::default() })
            .with_context(|| format!("loading the model {}", args.model.display()))?;
    let model = loaded.model;
    let pp = args.model.join("preprocessor_config.json");
    let image_cfg = if pp.exists() {
        ImageProcessorConfig::from_file(&pp)?
    } else {
        ImageProcessorConfig::square(model.config().vision_config.image_size)
    };
    // The new cache is written whole beside `--out` and renamed into place: a run that fails
    // half way leaves the previous cache as it was, never new shards under an old index.
    let is_cache = args.out.join(INDEX_FILE).is_file();
    let is_empty =
        args.out.is_dir() && std::fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_none());
    ensure!(
        !args.out.exists() || is_cache || is_empty,
        "--out {} exists and is not a feature cache (no {INDEX_FILE}): choose another directory",
        args.out.display()
    );
    replace_dir(&args.out, |out| fill_cache(&args, &model, &image_cfg, out))
}

/// Writes the cache of `args`'s images into the fresh directory `out`.
fn fill_cache(
    args: &CacheFeaturesArgs,
    model: &qformer::model::Blip2Qformer,
    image_cfg: &ImageProcessorConfig,
    out: &Path,
) -> Result<()> {
    let dev = Device::Cpu;
    let (items, what) = match (&args.config, &args.data, &args.images) {
        (Some(cfg), _, _) => {
            let run = RunConfig::load(cfg)?;
            run.validate()?;
            (caption_items(&run, out)?.into_items()?, cfg.display().to_string())
        }
        (None, Some(data), Some(images)) => {
            let items = read_karpathy_train(data, images)
                .with_context(|| format!("reading {}", data.display()))?;
            (items, data.display().to_string())
        }
        _ => anyhow::bail!("give --data with --images, or --config"),
    };
    // One entry per image (captions share it), in order of first appearance; an image that does
    // not decode is left out and listed in the index.
    let mut seen = BTreeSet::new();
    let images: Vec<_> = items.into_iter().filter(|it| seen.insert(it.image_id)).collect();
    ensure!(!images.is_empty(), "{what}: no images");
    let mut skipped = Vec::new();
    let mut shards = Vec::new();
    for shard in images.chunks(args.shard_size) {
        let (mut feats, mut kept) = (Vec::new(), Vec::new());
        for chunk in shard.chunks(args.batch_size) {
            let mut pixels = Vec::new();
            for it in chunk {
                match load_pixels(it, DecodeLimits::default()) {
                    Ok(img) => {
                        let t = eval_transform(&img, image_cfg);
                        pixels.push(Tensor::from_vec(
                            t.data,
                            (t.channels, t.height, t.width),
                            &dev,
                        )?);
                        kept.push(it);
                    }
                    Err(e) => {
                        eprintln!("warning: skipping image {}: {e}", it.key);
                        skipped.push(SkippedImage { key: it.key.clone(), reason: e.to_string() });
                    }
                }
            }
            if !pixels.is_empty() {
                feats.push(model.vision_features(&Tensor::stack(&pixels, 0)?)?);
            }
        }
        if kept.is_empty() {
            continue;
        }
        let file = format!("features-{:05}.safetensors", shards.len());
        // Serialized once in memory: the bytes written are the bytes hashed.
        let features = Tensor::cat(&feats, 0)?;
        let bytes = safetensors::serialize([("features", &features)], None)
            .context("serializing the features")?;
        let path = out.join(&file);
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} ({} images)", args.out.join(&file).display(), kept.len());
        let keys: Vec<String> = kept.iter().map(|it| it.key.clone()).collect();
        let ids: Vec<u64> = kept.iter().map(|it| it.image_id).collect();
        let sha256 = Some(sha256_hex(&bytes));
        shards.push(FeatureShard { file, keys, image_ids: ids, sha256 });
    }
    ensure!(!shards.is_empty(), "{what}: no image decoded");
    let index = FeatureIndex {
        model: args.model.display().to_string(),
        what: WHAT.to_string(),
        shards,
        skipped,
    };
    index.write(out)?;
    Ok(())
}
