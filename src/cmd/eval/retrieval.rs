//! `blip2 eval retrieval`: image-text retrieval on a Karpathy-format split, as LAVIS evaluates it (ITC
//! similarities, ITM re-ranking of the top `k_test`, Recall@1/5/10 both ways).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ::eval::retrieval::{
    compute_scores, encode_images, EncodedImages, Fnv64, ImageCache, ImageGallery, RetrievalReport,
    RetrievalScores, TextGallery,
};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use datasets::formats::read_karpathy_eval;
use datasets::image::{decode_bytes, eval_transform, DecodeLimits, ImageProcessorConfig};
use datasets::text::{pre_caption, Padding, TextTokenizer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qformer::masks::PaddingMask;
use qformer::model::Blip2Qformer;
use qformer::weights::{detect_parts, load, load_hf_dir, read_lavis_pth, LoadOptions, TensorSet};
use serde::Serialize;

use crate::common::model_dir::ModelArgs;

/// LAVIS `blip_caption` eval processor (`max_words` 50) and `compute_sim_matrix`'s tokenizer length.
const CAPTION_MAX_WORDS: usize = 50;
const TEXT_MAX_LENGTH: usize = 35;

#[derive(Debug, Args)]
pub struct RetrievalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Karpathy-format evaluation annotations: `[{"image": path, "caption": [..]}, ..]`.
    #[arg(long)]
    pub annotations: PathBuf,
    /// Directory the annotation image paths are relative to.
    #[arg(long)]
    pub images: PathBuf,
    /// Candidates re-ranked by ITM per image and per text (LAVIS: 128 on COCO, 256 on Flickr30k).
    #[arg(long, default_value_t = 128)]
    pub k_test: usize,
    /// Images, texts or ITM pairs per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Print `{"itc": {..}, "rerank": {..}, "images": N, "texts": M}` instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where the full report goes (default: `retrieval_<annotations stem>.json` in the model directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the ITC similarity and re-ranked score matrices (JSON) here.
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Directory that stores and reuses per-image ViT features and ITC image features.
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

#[derive(Serialize)]
struct FullReport<'a> {
    #[serde(flatten)]
    report: &'a RetrievalReport,
    model: &'a Path,
    lavis_checkpoint: Option<&'a Path>,
    annotations: &'a Path,
    k_test: usize,
    itm_pairs: usize,
    images_from_cache: usize,
    seconds: f64,
}

#[derive(Serialize)]
struct ScoreDump<'a> {
    sims_i2t: &'a [Vec<f32>],
    score_i2t: &'a [Vec<f32>],
    score_t2i: &'a [Vec<f32>],
}

fn load_model(args: &ModelArgs, device: &Device) -> Result<Blip2Qformer> {
    let opts = LoadOptions { device: device.clone(), ..Default::default() };
    match &args.lavis_checkpoint {
        None => Ok(load_hf_dir(&args.dir, &opts)
            .with_context(|| format!("loading the model in {}", args.dir.display()))?
            .model),
        Some(pth) => {
            let (cfg, hf) = TensorSet::from_hf_dir(&args.dir, device)
                .with_context(|| format!("loading the model in {}", args.dir.display()))?;
            let set = read_lavis_pth(pth, device)
                .with_context(|| format!("reading {}", pth.display()))?
                .merge(hf.vision_encoder_only())?;
            let parts = detect_parts(&cfg, &set);
            Ok(load(&cfg, &set, parts, &opts)
                .with_context(|| format!("loading {} into the model", pth.display()))?
                .model)
        }
    }
}

/// What the cached tensors depend on besides the image: every model input file (contents for configs,
/// size + modification time for weights, which can be gigabytes) and the build that computes them.
fn model_fingerprint(args: &ModelArgs) -> Result<String> {
    let mut h = Fnv64::default();
    h.field(env!("CARGO_PKG_VERSION").as_bytes());
    for name in ["config.json", "preprocessor_config.json"] {
        let p = args.dir.join(name);
        h.field(&std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
    }
    let mut weights: Vec<PathBuf> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("listing {}", args.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors" || x == "json") && p.is_file())
        .filter(|p| p.to_string_lossy().contains("model"))
        .collect();
    weights.extend(args.lavis_checkpoint.iter().cloned());
    weights.sort();
    for p in weights {
        let meta = std::fs::metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let abs = std::fs::canonicalize(&p).unwrap_or(p);
        h.field(abs.to_string_lossy().as_bytes())
            .field(&meta.len().to_le_bytes())
            .field(&mtime.to_le_bytes());
    }
    Ok(format!("{:016x}", h.finish()))
}

fn pixels_of(
    bytes: &[u8],
    path: &Path,
    cfg: &ImageProcessorConfig,
    dev: &Device,
) -> Result<Tensor> {
    let img = decode_bytes(bytes, &path.display().to_string(), DecodeLimits::default())?;
    let t = eval_transform(&img, cfg);
    Ok(Tensor::from_vec(t.data, (1, t.channels, t.height, t.width), dev)?)
}

fn encode_gallery(
    args: &RetrievalArgs,
    model: &Blip2Qformer,
    image_paths: &[PathBuf],
    device: &Device,
) -> Result<(ImageGallery, usize)> {
    let pre_path = args.model.dir.join("preprocessor_config.json");
    let pre = ImageProcessorConfig::from_file(&pre_path)?;
    let cache = match &args.cache {
        Some(dir) => Some((ImageCache::open(dir)?, model_fingerprint(&args.model)?)),
        None => None,
    };
    let mut parts: Vec<Option<EncodedImages>> = vec![None; image_paths.len()];
    let mut keys = vec![String::new(); image_paths.len()];
    let mut todo: Vec<(usize, Tensor)> = Vec::new();
    let mut from_cache = 0;
    let bar = progress_bar(image_paths.len() as u64, "images");
    let flush = |todo: &mut Vec<(usize, Tensor)>,
                 parts: &mut Vec<Option<EncodedImages>>,
                 keys: &[String]|
     -> Result<()> {
        if todo.is_empty() {
            return Ok(());
        }
        let pixels: Vec<Tensor> = todo.iter().map(|(_, t)| t.clone()).collect();
        let enc = encode_images(model, &Tensor::cat(&pixels, 0)?)?;
        for (b, (i, _)) in todo.iter().enumerate() {
            let one = EncodedImages {
                vision_features: enc.vision_features.narrow(0, b, 1)?,
                image_feats: enc.image_feats.narrow(0, b, 1)?,
            };
            if let Some((c, _)) = &cache {
                c.store(&keys[*i], &one)?;
            }
            parts[*i] = Some(one);
        }
        bar.inc(todo.len() as u64);
        todo.clear();
        Ok(())
    };
    for (i, path) in image_paths.iter().enumerate() {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading image {}", path.display()))?;
        if let Some((c, fp)) = &cache {
            keys[i] = ImageCache::key(fp, &bytes);
            if let Some(hit) = c.load(&keys[i], device)? {
                parts[i] = Some(hit);
                from_cache += 1;
                bar.inc(1);
                continue;
            }
        }
        todo.push((i, pixels_of(&bytes, path, &pre, device)?));
        if todo.len() >= args.batch_size.max(1) {
            flush(&mut todo, &mut parts, &keys)?;
        }
    }
    flush(&mut todo, &mut parts, &keys)?;
    bar.finish_and_clear();
    let parts: Vec<EncodedImages> = parts.into_iter().flatten().collect();
    Ok((ImageGallery::from_encoded(model, &parts)?, from_cache))
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what} {{bar:40}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{per_sec}}"
    )) {
        bar.set_style(style);
    }
    bar
}

pub fn run(args: RetrievalArgs) -> Result<()> {
    let start = Instant::now();
    if args.k_test == 0 {
        anyhow::bail!("--k-test must be at least 1");
    }
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let device = args.model.open_device()?;
    let split = read_karpathy_eval(&args.annotations)?;
    if split.images.is_empty() {
        anyhow::bail!("{}: no images to retrieve", args.annotations.display());
    }
    let model = load_model(&args.model, &device)?;

    let tok_path = args.model.dir.join("tokenizer.json");
    // LAVIS's 35 tokens, capped by the model's position table (small Q-Formers have fewer).
    let max_len = TEXT_MAX_LENGTH.min(model.config().qformer_config.max_position_embeddings);
    let tokenizer = TextTokenizer::from_file(&tok_path, max_len)?;
    let captions: Vec<String> =
        split.texts.iter().map(|c| pre_caption(c, CAPTION_MAX_WORDS)).collect();
    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    let tokens = tokenizer.encode(&refs, Padding::MaxLength)?;
    let input_ids =
        Tensor::from_vec(tokens.input_ids.clone(), (tokens.batch, tokens.seq_len), &device)?;
    let mask_rows: Vec<Vec<u32>> =
        tokens.attention_mask.chunks(tokens.seq_len.max(1)).map(<[u32]>::to_vec).collect();
    let texts = TextGallery::encode(
        &model,
        input_ids,
        PaddingMask::from_rows(&mask_rows)?,
        args.batch_size,
    )?;

    let image_paths: Vec<PathBuf> =
        split.images.iter().map(|im| args.images.join(&im.image)).collect();
    let (images, from_cache) = encode_gallery(&args, &model, &image_paths, &device)?;

    let mut bar: Option<ProgressBar> = None;
    let scores: RetrievalScores = compute_scores(
        &model,
        &images,
        &texts,
        args.k_test,
        args.batch_size,
        &mut |done, total| {
            bar.get_or_insert_with(|| progress_bar(total as u64, "ITM rerank"))
                .set_position(done as u64);
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = scores.report(&split.img2txt, &split.txt2img)?;

    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args.annotations.file_stem().map_or("split".into(), |s| s.to_string_lossy());
        args.model.dir.join(format!("retrieval_{stem}.json"))
    });
    let full = FullReport {
        report: &report,
        model: &args.model.dir,
        lavis_checkpoint: args.model.lavis_checkpoint.as_deref(),
        annotations: &args.annotations,
        k_test: args.k_test,
        itm_pairs: scores.itm_pairs,
        images_from_cache: from_cache,
        seconds: start.elapsed().as_secs_f64(),
    };
    std::fs::write(&out, serde_json::to_string_pretty(&full)? + "\n")
        .with_context(|| format!("writing the report to {}", out.display()))?;
    if let Some(p) = &args.scores {
        let dump = ScoreDump {
            sims_i2t: &scores.sims_i2t,
            score_i2t: &scores.score_i2t,
            score_t2i: &scores.score_t2i,
        };
        std::fs::write(p, serde_json::to_string(&dump)? + "\n")
            .with_context(|| format!("writing the score matrices to {}", p.display()))?;
    }

    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} images, {} texts, k_test {}, {} ITM pairs",
            report.images, report.texts, args.k_test, scores.itm_pairs
        );
        println!(
            "{:<8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            "", "txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "r_mean"
        );
        let rows = [("itc", Some(&report.itc)), ("rerank", report.rerank.as_ref())];
        for (name, m) in rows {
            if let Some(m) = m {
                println!(
                    "{name:<8} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
                    m.txt_r1, m.txt_r5, m.txt_r10, m.img_r1, m.img_r5, m.img_r10, m.r_mean
                );
            }
        }
        println!("report: {}", out.display());
    }
    Ok(())
}
