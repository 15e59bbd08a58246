//! `blip2 cache-features`: run the frozen ViT once over a dataset's images and store its output
//! (before `ln_vision`, which is trainable) so training can skip the ViT.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;

use datasets::formats::karpathy::read_karpathy_train;
use datasets::image::{decode_file, eval_transform, DecodeLimits, ImageProcessorConfig};
use datasets::ImageSource;
use qformer::weights::{load_hf_dir, LoadOptions};

use crate::common::feature_cache::{FeatureIndex, FeatureShard, WHAT};

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
    #[arg(long)]
    pub data: PathBuf,
    /// Directory the `image` paths are relative to.
    #[arg(long)]
    pub images: PathBuf,
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
    let dev = Device::Cpu;
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
    let items = read_karpathy_train(&args.data, &args.images)
        .with_context(|| format!("reading {}", args.data.display()))?;
    // One entry per image (captions share it), in order of first appearance.
    let mut seen = BTreeSet::new();
    let images: Vec<_> = items.into_iter().filter(|it| seen.insert(it.image_id)).collect();
    ensure!(!images.is_empty(), "{}: no images", args.data.display());
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let mut shards = Vec::new();
    for (s, shard) in images.chunks(args.shard_size).enumerate() {
        let mut feats = Vec::new();
        for chunk in shard.chunks(args.batch_size) {
            let mut pixels = Vec::new();
            for it in chunk {
                let ImageSource::Path(p) = &it.image else {
                    anyhow::bail!("{}: image {} is not a file", args.data.display(), it.key);
                };
                let img = decode_file(p, DecodeLimits::default())?;
                let t = eval_transform(&img, &image_cfg);
                pixels.push(Tensor::from_vec(t.data, (t.channels, t.height, t.width), &dev)?);
            }
            feats.push(model.vision_features(&Tensor::stack(&pixels, 0)?)?);
        }
        let file = format!("features-{s:05}.safetensors");
        let path = args.out.join(&file);
        candle_core::safetensors::save(
            &[("features", Tensor::cat(&feats, 0)?)].into_iter().collect(),
            &path,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        let keys: Vec<String> = shard.iter().map(|it| it.key.clone()).collect();
        let ids: Vec<u64> = shard.iter().map(|it| it.image_id).collect();
        shards.push(FeatureShard { file, keys, image_ids: ids });
        println!("wrote {} ({} images)", path.display(), shard.len());
    }
    let index =
        FeatureIndex { model: args.model.display().to_string(), what: WHAT.to_string(), shards };
    index.write(&args.out)?;
    Ok(())
}
