//! Generate a synthetic world in memory and write it in the real formats: PNG files,
//! Karpathy caption JSON, VQAv2 questions/annotations and webdataset shards.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::json;

use super::scene::{Scene, SceneQuestion};
use crate::error::{DataError, Result};
use crate::formats::write_shard;
use crate::image::RgbImage8;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthConfig {
    pub images: usize,
    pub seed: u64,
    pub image_size: u32,
    /// Samples per webdataset shard.
    pub shard_size: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { images: 1000, seed: 0, image_size: 64, shard_size: 1000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// One generated image with everything that describes it.
#[derive(Debug, Clone)]
pub struct SynthSample {
    pub id: u64,
    pub split: Split,
    pub scene: Scene,
    pub captions: Vec<String>,
    pub questions: Vec<SceneQuestion>,
}

impl SynthSample {
    pub fn file_name(&self) -> String {
        format!("images/{:06}.png", self.id)
    }
}

/// 80 % train, 10 % val, 10 % test (by id, so splits are stable when `images` grows).
fn split_of(id: u64) -> Split {
    match id % 10 {
        8 => Split::Val,
        9 => Split::Test,
        _ => Split::Train,
    }
}

/// Generate the scenes (no pixels yet). Sample `i` only depends on `(seed, i)`.
pub fn generate(config: &SynthConfig) -> Vec<SynthSample> {
    (0..config.images as u64)
        .into_par_iter()
        .map(|id| {
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
            rng.set_stream(id);
            let scene = Scene::random(config.image_size, &mut rng);
            let questions = scene.questions(&mut rng);
            SynthSample { id, split: split_of(id), captions: scene.captions(), questions, scene }
        })
        .collect()
}

fn encode(img: &RgbImage8, format: ::image::ImageFormat) -> std::result::Result<Vec<u8>, String> {
    let buf = ::image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
        .ok_or("bad buffer")?;
    let mut out = Cursor::new(Vec::new());
    buf.write_to(&mut out, format).map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// Files written by [`write_world`], relative to its output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    pub images: usize,
    pub files: Vec<PathBuf>,
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string(value)
        .map_err(|source| DataError::Json { path: path.to_path_buf(), source })?;
    std::fs::write(path, text).map_err(|e| DataError::io(path, e))
}

/// Write the world under `out`.
pub fn write_world(out: &Path, config: &SynthConfig) -> Result<SynthSummary> {
    let samples = generate(config);
    for sub in ["images", "annotations", "vqa", "shards"] {
        let d = out.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, e))?;
    }
    // Pixels: PNG files for every image, JPEG bytes for the train shard.
    let jpegs: Vec<Option<Vec<u8>>> = samples
        .par_iter()
        .map(|s| {
            let img = s.scene.render();
            let path = out.join(s.file_name());
            let png = encode(&img, ::image::ImageFormat::Png)
                .map_err(|m| DataError::Image { what: path.display().to_string(), message: m })?;
            std::fs::write(&path, png).map_err(|e| DataError::io(&path, e))?;
            if s.split == Split::Train {
                encode(&img, ::image::ImageFormat::Jpeg)
                    .map(Some)
                    .map_err(|m| DataError::Image { what: path.display().to_string(), message: m })
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_>>()?;
    let mut files: Vec<PathBuf> = Vec::new();
    for split in [Split::Train, Split::Val, Split::Test] {
        let rows: Vec<&SynthSample> = samples.iter().filter(|s| s.split == split).collect();
        let karpathy: Vec<serde_json::Value> = if split == Split::Train {
            rows.iter()
                .flat_map(|s| {
                    s.captions.iter().map(move |c| {
                        json!({"caption": c, "image": s.file_name(), "image_id": format!("synth_{}", s.id)})
                    })
                })
                .collect()
        } else {
            rows.iter().map(|s| json!({"image": s.file_name(), "caption": s.captions})).collect()
        };
        let rel = PathBuf::from(format!("annotations/karpathy_{}.json", split.name()));
        write_json(&out.join(&rel), &serde_json::Value::Array(karpathy))?;
        files.push(rel);

        let mut questions = Vec::new();
        let mut annotations = Vec::new();
        for s in &rows {
            for (k, q) in s.questions.iter().enumerate() {
                let qid = s.id * 1000 + k as u64;
                questions
                    .push(json!({"image_id": s.id, "question": q.question, "question_id": qid}));
                let answers: Vec<_> = (1..=10)
                    .map(
                        |i| json!({"answer": q.answer, "answer_confidence": "yes", "answer_id": i}),
                    )
                    .collect();
                annotations.push(json!({
                    "question_id": qid, "image_id": s.id, "question_type": q.question_type,
                    "answer_type": q.answer_type, "multiple_choice_answer": q.answer,
                    "answers": answers,
                }));
            }
        }
        let sub = format!("synth_{}", split.name());
        let qrel = PathBuf::from(format!("vqa/{}_questions.json", split.name()));
        write_json(
            &out.join(&qrel),
            &json!({"info": {"description": "blip2 synthetic world"}, "task_type": "Open-Ended",
                    "data_type": "synth", "data_subtype": sub, "license": {}, "questions": questions}),
        )?;
        let arel = PathBuf::from(format!("vqa/{}_annotations.json", split.name()));
        write_json(
            &out.join(&arel),
            &json!({"info": {"description": "blip2 synthetic world"}, "license": {},
                    "data_type": "synth", "data_subtype": sub, "annotations": annotations}),
        )?;
        files.push(qrel);
        files.push(arel);
    }
    // img2dataset-style shards of the train split: key = shard * 10^4 + index, 9 digits.
    let train: Vec<(&SynthSample, &Vec<u8>)> =
        samples.iter().zip(&jpegs).filter_map(|(s, j)| j.as_ref().map(|j| (s, j))).collect();
    for (shard, chunk) in train.chunks(config.shard_size.max(1)).enumerate() {
        let members: Vec<crate::formats::ShardMembers> = chunk
            .iter()
            .enumerate()
            .map(|(i, (s, jpg))| {
                let key = format!("{:05}{:04}", shard, i);
                let meta = json!({"caption": s.captions[0], "key": key, "status": "success",
                                  "url": s.file_name(), "width": config.image_size,
                                  "height": config.image_size});
                (
                    key,
                    vec![
                        ("jpg".to_string(), (*jpg).clone()),
                        ("txt".to_string(), s.captions[0].clone().into_bytes()),
                        ("json".to_string(), serde_json::to_vec_pretty(&meta).unwrap_or_default()),
                    ],
                )
            })
            .collect();
        let rel = PathBuf::from(format!("shards/{shard:05}.tar"));
        write_shard(&out.join(&rel), &members)?;
        files.push(rel);
    }
    Ok(SynthSummary { images: samples.len(), files })
}
