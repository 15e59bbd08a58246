//! Phase 1: the synthetic shapes world on disk (PNG files, Karpathy caption JSON, VQAv2 files),
//! read back through the same readers users' COCO/VQAv2 data goes through, and the frozen ViT run
//! once over every image (the frozen-feature cache, kept in memory).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use datasets::formats::karpathy::{read_karpathy_eval, read_karpathy_train, RetrievalSplit};
use datasets::formats::vqa::{read_vqa_official, VqaQuestion};
use datasets::image::{decode_file, eval_transform, DecodeLimits, ImageProcessorConfig};
use datasets::synth::{write_world, SynthConfig};
use datasets::ImageTextItem;
use qformer::model::Blip2Qformer;

use crate::common::feature_cache::FeatureCache;

/// The world as read back from its files.
pub struct World {
    pub root: PathBuf,
    /// One row per training caption (three paraphrases per image).
    pub train: Vec<ImageTextItem>,
    pub test: RetrievalSplit,
    pub train_questions: Vec<VqaQuestion>,
    pub test_questions: Vec<VqaQuestion>,
}

impl World {
    pub fn write_and_read(root: &Path, images: usize, seed: u64, image_size: u32) -> Result<Self> {
        let config = SynthConfig { images, seed, image_size, shard_size: 10_000 };
        write_world(root, &config)
            .with_context(|| format!("writing the synthetic world to {}", root.display()))?;
        let ann = |name: &str| root.join("annotations").join(name);
        let vqa = |name: &str| root.join("vqa").join(name);
        let train = read_karpathy_train(&ann("karpathy_train.json"), root)?;
        let test = read_karpathy_eval(&ann("karpathy_test.json"))?;
        let train_questions =
            read_vqa_official(&vqa("train_questions.json"), Some(&vqa("train_annotations.json")))?;
        let test_questions =
            read_vqa_official(&vqa("test_questions.json"), Some(&vqa("test_annotations.json")))?;
        if test.images.len() < 2 || train.is_empty() {
            bail!(
                "the world is too small: {} test images, {} train captions",
                test.images.len(),
                train.len()
            );
        }
        Ok(Self { root: root.to_path_buf(), train, test, train_questions, test_questions })
    }

    /// Every text of the training split: what the tokenizers' vocabularies are built from.
    pub fn train_texts(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.train.iter().map(|i| i.caption.as_str()).collect();
        for q in &self.train_questions {
            v.push(&q.question);
            if let Some(a) = &q.annotation {
                v.extend(a.answers.iter().map(|x| x.answer.as_str()));
            }
        }
        v
    }

    /// Image file (relative to the root) of a VQA image id; the world names them `images/{id:06}.png`.
    pub fn image_of_question(q: &VqaQuestion) -> String {
        format!("images/{:06}.png", q.image_id)
    }
}

/// Per-channel pixel mean and std (in [0, 1] units) of `names`, to normalize with the
/// world's own statistics: CLIP's ImageNet values leave the flat background at +1.6 in every
/// channel, a shared component that dominates every patch embedding of a random ViT and
/// kept the contrastive loss at chance for hundreds of steps.
pub fn pixel_statistics(root: &Path, names: &[String]) -> Result<([f64; 3], [f64; 3])> {
    let sums = names
        .par_iter()
        .map(|n| -> Result<[f64; 6]> {
            let img = decode_file(&root.join(n), DecodeLimits::default())?;
            let mut acc = [0f64; 6];
            for px in img.data.chunks_exact(3) {
                for c in 0..3 {
                    let x = px[c] as f64 / 255.0;
                    acc[c] += x;
                    acc[3 + c] += x * x;
                }
            }
            let n = (img.width * img.height) as f64;
            Ok(acc.map(|v| v / n))
        })
        .collect::<Result<Vec<_>>>()?;
    let k = sums.len().max(1) as f64;
    let mut mean = [0f64; 3];
    let mut std = [0f64; 3];
    for c in 0..3 {
        mean[c] = sums.iter().map(|a| a[c]).sum::<f64>() / k;
        let sq = sums.iter().map(|a| a[3 + c]).sum::<f64>() / k;
        std[c] = (sq - mean[c] * mean[c]).max(1e-6).sqrt();
    }
    Ok((mean, std))
}

/// The frozen ViT's features of every image, computed once: decodes and preprocesses (eval
/// transform, `cfg`) every image, then runs the ViT in batches.
pub fn frozen_features(
    model: &Blip2Qformer,
    root: &Path,
    names: &[String],
    cfg: &ImageProcessorConfig,
    device: &Device,
) -> Result<FeatureCache> {
    let image_size = cfg.size.height;
    let mut rows = Vec::new();
    for chunk in names.chunks(256) {
        let pixels: Vec<f32> = chunk
            .par_iter()
            .map(|n| -> Result<Vec<f32>> {
                let img = decode_file(&root.join(n), DecodeLimits::default())?;
                Ok(eval_transform(&img, cfg).data)
            })
            .collect::<Result<Vec<_>>>()?
            .concat();
        let px = Tensor::from_vec(pixels, (chunk.len(), 3, image_size, image_size), device)?;
        rows.push(model.vision_features(&px)?);
    }
    FeatureCache::from_rows(&Tensor::cat(&rows, 0)?, names)
}
