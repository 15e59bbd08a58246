//! `blip2 quickstart`: the whole BLIP-2 recipe end to end on a synthetic world, on CPU, with no
//! downloads. Phases (each timed, each training run with `metrics.jsonl` + `curves.png`):
//!
//! 1. write the shapes world (PNG + Karpathy JSON + VQAv2 files) and read it back;
//! 2. frozen parts: a tiny BLIP-2 ViT pretrained contrastively on the world's training images and
//!    captions (random with `--vit-steps 0`), frozen and run once over every image;
//!    and a tiny OPT pretrained on the world's text only;
//! 3. stage one: the Q-Former with ITC + ITM + ITG on the frozen features;
//! 4. retrieval on the test split (ITC and ITM re-ranked) against chance and the untrained Q-Former;
//! 5. stage two: Q-Former + projection into the frozen OPT;
//! 6. zero-shot VQA with the official metric against majority and no-image baselines; captions;
//! 7. `results.md` / `results.json`.

mod evaluate;
mod lm;
mod models;
mod plan;
mod report;
mod vit;
mod vocab;
mod world;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use clap::{Args, ValueEnum};

use datasets::text::{Padding, TextTokenizer};
use qformer::llm::{Blip2Llm, LanguageModel};
use qformer::masks::PaddingMask;
use qformer::objectives::{is_stage_two_trainable, NegativeMode, ObjectiveConfig};
use train::tasks::{ImageBatch, StageOne, StageOneBatch, StageTwo, StageTwoMicro};
use train::{rng, DecayRule, EpochSampler, Extras, ParamStore, RunSummary, SampledBatches};

use crate::common::device::parse_device;
use crate::common::feature_cache::FeatureCache;
use crate::common::llm_text::{CaptionTokenizer, LlmKind};
use crate::common::train_error;
use evaluate::Context as VqaContext;
use models::Models;
use plan::Plan;
use report::{Results, Timings};
use train::init::named_vars;
use world::World;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scale {
    /// A few minutes on a 2-core machine: the numbers the README shows.
    Default,
    /// Twice the steps of `default`: better numbers for twice the time.
    Long,
    /// Seconds, tiny sizes: the pipeline test.
    Ci,
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Where everything goes (world, models, runs, results.md).
    #[arg(long, default_value = "runs/quickstart")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "default")]
    pub scale: Scale,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images in the world (10% are the test split).
    #[arg(long)]
    pub images: Option<usize>,
    /// Contrastive ViT pretraining steps (300 x 128 images by default; `--scale long` doubles
    /// them); 0 keeps the ViT random. Frozen either way. Pretrained, stage one measured far more
    /// robust across seeds (docs/quickstart.md).
    #[arg(long)]
    pub vit_steps: Option<u64>,
    #[arg(long)]
    pub lm_steps: Option<u64>,
    #[arg(long)]
    pub stage1_steps: Option<u64>,
    #[arg(long)]
    pub stage2_steps: Option<u64>,
    /// Peak learning rates of the four training runs.
    #[arg(long)]
    pub vit_lr: Option<f64>,
    #[arg(long)]
    pub lm_lr: Option<f64>,
    #[arg(long)]
    pub stage1_lr: Option<f64>,
    #[arg(long)]
    pub stage2_lr: Option<f64>,
    /// Q-Former dropout (hidden and attention). 0 by default: these tiny models underfit, and
    /// BERT's 0.1 lowered retrieval (docs/quickstart.md).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Batch sizes of the four training runs.
    #[arg(long)]
    pub vit_batch: Option<usize>,
    #[arg(long)]
    pub lm_batch: Option<usize>,
    #[arg(long)]
    pub stage1_batch: Option<usize>,
    #[arg(long)]
    pub stage2_batch: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads for tensor ops. 1 by default: at these sizes candle's spinning thread pool
    /// costs more than it saves (4-7x slower with 2 threads on a busy 2-core machine).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

pub fn run(args: QuickstartArgs) -> Result<()> {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Read once, when candle starts its pool on the first tensor op (none ran yet).
        std::env::set_var("CANDLE_NUM_THREADS", args.threads.max(1).to_string());
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // candle's element-wise kernels run on rayon's global pool whatever CANDLE_NUM_THREADS
        // says; at these sizes its wake-ups cost more than they save (stage one 18% faster).
        std::env::set_var("RAYON_NUM_THREADS", args.threads.max(1).to_string());
    }
    let plan = Plan::new(&args);
    let out = args.out.clone();
    if out.join("results.json").exists() || out.join("world").exists() {
        anyhow::bail!(
            "{} already holds a quickstart run: remove it or pass another --out",
            out.display()
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let dev = parse_device(&args.device)?;
    let mut t = Timings::default();
    let total = Instant::now();

    // 1. The world.
    let clock = Instant::now();
    let world = World::write_and_read(
        &out.join("world"),
        plan.images,
        plan.seed,
        plan.sizes.image_size as u32,
    )?;
    t.add("1. synthesize + read the world", clock);
    println!(
        "world: {} train captions, {} test images / {} test captions, {} test questions",
        world.train.len(),
        world.test.images.len(),
        world.test.texts.len(),
        world.test_questions.len()
    );

    // 2. Tokenizers, models, frozen features, LM pretraining.
    let clock = Instant::now();
    let model_dir = out.join("model");
    std::fs::create_dir_all(&model_dir)?;
    let words = vocab::world_words(world.train_texts());
    let q_vocab =
        vocab::write_qformer_tokenizer(&model_dir.join("qformer_tokenizer.json"), &words)?;
    let o_vocab = vocab::write_opt_tokenizer(&model_dir.join("tokenizer.json"), &words)?;
    models::write_config(&model_dir.join("config.json"), &plan.sizes, q_vocab, o_vocab)?;
    let mut models = Models::fresh(&model_dir.join("config.json"), plan.seed, &dev)?;
    let qtok = TextTokenizer::from_file(&model_dir.join("qformer_tokenizer.json"), 32)?;
    let otok = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json"))
        .map_err(|e| anyhow::anyhow!("reading the OPT tokenizer: {e}"))?;
    let mut all_images: Vec<String> = world.train.iter().map(|i| i.key.clone()).collect();
    all_images.extend(world.test.images.iter().map(|i| i.image.clone()));
    all_images.sort();
    all_images.dedup();
    // The image processor normalizes with the training images' own statistics (written as the
    // model's preprocessor_config.json).
    let test_names: std::collections::HashSet<&str> =
        world.test.images.iter().map(|i| i.image.as_str()).collect();
    let train_images: Vec<String> =
        all_images.iter().filter(|n| !test_names.contains(n.as_str())).cloned().collect();
    let (mean, std) = world::pixel_statistics(&world.root, &train_images)?;
    let processor = datasets::image::ImageProcessorConfig {
        image_mean: mean.to_vec(),
        image_std: std.to_vec(),
        ..datasets::image::ImageProcessorConfig::square(plan.sizes.image_size)
    };
    std::fs::write(
        model_dir.join("preprocessor_config.json"),
        serde_json::to_string_pretty(&processor)?,
    )?;
    t.add("2. tokenizers, models, pixel statistics", clock);

    let corpus = lm::LmCorpus::from_world(&world, &otok, vocab_id(&otok, vocab::NEWLINE)?)?;
    let objectives = ObjectiveConfig {
        negatives: NegativeMode::Sample,
        bos_token_id: qtok.bos_id,
        pad_token_id: qtok.pad_id,
        ..Default::default()
    };
    // The LM (2b) and the image side (2a ViT, its frozen features, 3 stage one) need nothing
    // from each other, so with one thread per phase the LM trains on the second core beside
    // them. Each runs to the same numbers alone or side by side: own seeded streams, one thread
    // each.
    let side_by_side = args.threads <= 1;
    let lm_phase =
        || on_own_thread(side_by_side, || pretrain_lm(&models, &corpus, &plan, &out, &dev));
    let stage_one_phase = || {
        on_own_thread(side_by_side, || {
            let mut times = Vec::new();
            let vit_summary = pretrain_vit(&models, &world, &processor, &qtok, &plan, &out, &dev)?;
            if let Some(v) = &vit_summary {
                times.push(("2a. pretrain the ViT (contrastive, world captions)", v.seconds));
            }
            let clock = Instant::now();
            let features = world::frozen_features(
                &models.qformer,
                &world.root,
                &all_images,
                &processor,
                &dev,
            )?;
            times.push(("2a. frozen ViT features (once)", clock.elapsed().as_secs_f64()));
            let clock = Instant::now();
            let untrained = evaluate::retrieval(&models, &features, &world, &qtok, None)?;
            times.push(("4a. retrieval, untrained Q-Former (ITC)", clock.elapsed().as_secs_f64()));
            let s1 = train_stage_one(&models, &features, &world, &qtok, &objectives, &plan, &out)?;
            times.push(("3. stage one (ITC + ITM + ITG)", s1.seconds));
            Ok::<_, anyhow::Error>((vit_summary, features, untrained, times, s1))
        })
    };
    let (lm_summary, (vit_summary, features, untrained, image_times, s1_summary)) = if side_by_side
    {
        std::thread::scope(|s| {
            let lm = s.spawn(lm_phase);
            let s1 = stage_one_phase();
            let lm = lm.join().map_err(|_| anyhow::anyhow!("the LM pretraining thread panicked"));
            Ok::<_, anyhow::Error>((lm??, s1?))
        })?
    } else {
        (lm_phase()?, stage_one_phase()?)
    };
    freeze_language_model(&mut models)?;
    t.overlapped = side_by_side;
    let beside = if side_by_side { ", beside stage one" } else { "" };
    t.push(&format!("2b. pretrain the OPT on world text{beside}"), lm_summary.seconds);
    for (name, secs) in image_times {
        t.push(name, secs);
    }

    // 4. Retrieval.
    let clock = Instant::now();
    let trained = evaluate::retrieval(&models, &features, &world, &qtok, Some(plan.k_test))?;
    t.add("4b. retrieval, trained Q-Former", clock);

    // 5. Stage two.
    let clock = Instant::now();
    let s2_summary = train_stage_two(&models, &features, &world, &otok, &plan, &out)?;
    t.add("5. stage two (Q-Former -> frozen OPT)", clock);

    // 6. Zero-shot VQA, baselines, captions.
    let clock = Instant::now();
    let ann = world.root.join("vqa/test_annotations.json");
    let items = evaluate::vqa_items(&world.test_questions)?;
    let gold: HashMap<String, String> =
        world.test.images.iter().map(|i| (i.image.clone(), i.captions[0].clone())).collect();
    let mut answerer = evaluate::WorldAnswerer {
        models: &models,
        features: &features,
        tokenizer: &otok,
        gen: evaluate::generation_config(5),
        context: VqaContext::Image,
        captions: &gold,
        device: dev.clone(),
    };
    let vqa_dir = out.join("vqa");
    std::fs::create_dir_all(&vqa_dir)?;
    let vqa_image =
        evaluate::vqa(&mut answerer, &items, &ann, &vqa_dir.join("results_image.json"))?;
    answerer.context = VqaContext::NoImage;
    let vqa_no_image =
        evaluate::vqa(&mut answerer, &items, &ann, &vqa_dir.join("results_no_image.json"))?;
    answerer.context = VqaContext::GoldCaption;
    let vqa_gold =
        evaluate::vqa(&mut answerer, &items, &ann, &vqa_dir.join("results_gold_caption.json"))?;
    let majority = evaluate::score(
        evaluate::majority_predictions(&world.train_questions, &world.test_questions, false),
        &ann,
        &vqa_dir.join("results_majority.json"),
    )?;
    let type_majority = evaluate::score(
        evaluate::majority_predictions(&world.train_questions, &world.test_questions, true),
        &ann,
        &vqa_dir.join("results_type_majority.json"),
    )?;
    answerer.context = VqaContext::Image;
    answerer.gen = evaluate::generation_config(20);
    let shown: Vec<&str> = world.test.images.iter().take(6).map(|i| i.image.as_str()).collect();
    let generated = answerer.continue_prompts(&shown, &vec![String::new(); shown.len()])?;
    let captions: Vec<(String, String, String)> = shown
        .iter()
        .zip(generated)
        .map(|(img, g)| (img.to_string(), g.trim().to_string(), gold[*img].clone()))
        .collect();
    t.add("6. zero-shot VQA (5 variants) + captions", clock);

    models.save(&model_dir.join("model.safetensors"))?;
    t.total = total.elapsed().as_secs_f64();
    let results = Results {
        plan,
        world_counts: report::WorldCounts {
            train_captions: world.train.len(),
            test_images: world.test.images.len(),
            test_texts: world.test.texts.len(),
            test_questions: world.test_questions.len(),
        },
        timings: t,
        vit: vit_summary,
        lm: lm_summary,
        stage1: s1_summary,
        stage2: s2_summary,
        retrieval_untrained: untrained,
        retrieval_trained: trained,
        vqa: report::VqaTable::new(&vqa_image, &vqa_no_image, &vqa_gold, &majority, &type_majority),
        captions,
    };
    results.write(&out)?;
    println!("{}", results.markdown());
    println!("wrote {}", out.join("results.md").display());
    Ok(())
}

/// With `one_thread`, runs `f` on a one-thread rayon pool of its own: the fused kernels' and
/// AdamW's `par_chunks` then run in place instead of waking a global-pool worker for every op,
/// and two phases on two such pools never queue behind each other. Without it, `f` runs here, on
/// the global pool that `--threads N` sized (a one-thread pool would serialize gemm's N tasks).
fn on_own_thread<T: Send>(one_thread: bool, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    if !one_thread {
        return f();
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .context("starting a one-thread pool")?
        .install(f)
}

/// Phase 2a: the ViT learns the world's images against their captions, then stays frozen
/// (`None` with 0 steps: the ViT stays random).
fn pretrain_vit(
    models: &Models,
    world: &World,
    processor: &datasets::image::ImageProcessorConfig,
    qtok: &TextTokenizer,
    plan: &Plan,
    out: &std::path::Path,
    dev: &candle_core::Device,
) -> Result<Option<RunSummary>> {
    if plan.vit.steps == 0 {
        return Ok(None);
    }
    let vision = models.qformer.vision().context("the quickstart model has a ViT")?;
    let data = vit::ImageCaptions::load(world, processor, dev)?;
    let embed = plan.sizes.embed_dim;
    vit::pretrain_vit(vision, &models.vision_vars, &data, qtok, embed, plan.vit, plan.seed, out)
        .map(Some)
}

/// Phase 2b: the OPT learns the world's text (it never sees an image).
fn pretrain_lm(
    models: &Models,
    corpus: &lm::LmCorpus,
    plan: &Plan,
    out: &std::path::Path,
    dev: &candle_core::Device,
) -> Result<RunSummary> {
    let params = ParamStore::from_varmaps_where(&[&models.llm_vars], DecayRule::LavisBase, |n| {
        n.starts_with("language_model.")
    });
    let task = lm::TextLm { opt: models.opt(), corpus, batch: plan.lm.batch, device: dev.clone() };
    let settings = plan.lm.settings(out, "lm", plan.seed);
    let mut documents = lm::Documents { per_step: plan.lm.batch };
    Ok(train::run(&settings, &params, &task, &mut documents, Extras::default())?)
}

/// Phase 3: ITC + ITM + ITG on the frozen ViT features.
fn train_stage_one(
    models: &Models,
    features: &FeatureCache,
    world: &World,
    qtok: &TextTokenizer,
    objectives: &ObjectiveConfig,
    plan: &Plan,
    out: &std::path::Path,
) -> Result<RunSummary> {
    let dev = features.device().clone();
    let params = ParamStore::from_varmap(&models.qformer_vars, DecayRule::LavisBase);
    let task = StageOne { model: &models.qformer, objectives: objectives.clone() };
    let sampler = EpochSampler::new(world.train.len(), rng::substream(plan.seed, "data/stage1"));
    let build = move |idx: &[usize]| -> train::Result<StageOneBatch> {
        let items: Vec<_> = idx.iter().map(|&i| &world.train[i]).collect();
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        let captions: Vec<&str> = items.iter().map(|i| i.caption.as_str()).collect();
        let tok = qtok.encode(&captions, Padding::Longest).map_err(|e| train_error(e.into()))?;
        let input_ids = Tensor::from_vec(tok.input_ids.clone(), (tok.batch, tok.seq_len), &dev)?;
        let rows: Vec<Vec<u32>> =
            tok.attention_mask.chunks(tok.seq_len).map(<[u32]>::to_vec).collect();
        Ok(StageOneBatch {
            image: ImageBatch::Features(features.batch(&keys).map_err(train_error)?),
            input_ids,
            attention_mask: PaddingMask::from_rows(&rows)?,
            image_ids: Some(items.iter().map(|i| i.image_id as i64).collect()),
        })
    };
    let mut batches = SampledBatches::new(sampler, plan.stage1.batch, false, Box::new(build));
    let settings = plan.stage1.settings(out, "stage1", plan.seed);
    Ok(train::run(&settings, &params, &task, &mut batches, Extras::default())?)
}

/// Phase 5: the query path and `language_projection` trained through the frozen OPT, on the
/// captions as LAVIS `blip2_opt` reads them (`</s> caption \n`, no prompt).
fn train_stage_two(
    models: &Models,
    features: &FeatureCache,
    world: &World,
    otok: &tokenizers::Tokenizer,
    plan: &Plan,
    out: &std::path::Path,
) -> Result<RunSummary> {
    let params = ParamStore::from_varmaps_where(
        &[&models.qformer_vars, &models.llm_vars],
        DecayRule::LavisBase,
        |n| is_stage_two_trainable(n) || n.starts_with("language_projection."),
    );
    let task = StageTwo { model: &models.qformer, llm: &models.llm };
    let captions = CaptionTokenizer::new(
        otok.clone(),
        "the quickstart OPT tokenizer".into(),
        LlmKind::Opt,
        "",
        LLM_MAX_TXT_LEN,
    );
    let sampler = EpochSampler::new(world.train.len(), rng::substream(plan.seed, "data/stage2"));
    let build = move |idx: &[usize]| -> train::Result<StageTwoMicro> {
        let items: Vec<_> = idx.iter().map(|&i| &world.train[i]).collect();
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        let texts: Vec<String> = items.iter().map(|i| i.caption.clone()).collect();
        Ok(StageTwoMicro {
            image: ImageBatch::Features(features.batch(&keys).map_err(train_error)?),
            text: captions.texts(&texts).map_err(train_error)?,
        })
    };
    let mut batches = SampledBatches::new(sampler, plan.stage2.batch, false, Box::new(build));
    let settings = plan.stage2.settings(out, "stage2", plan.seed);
    Ok(train::run(&settings, &params, &task, &mut batches, Extras::default())?)
}

/// LAVIS `blip2_opt`'s `max_txt_len`: the world's captions are far shorter.
const LLM_MAX_TXT_LEN: usize = 32;

fn vocab_id(tok: &tokenizers::Tokenizer, s: &str) -> Result<u32> {
    tok.token_to_id(s).with_context(|| format!("{s:?} is not in the tokenizer"))
}

/// After its pretraining the OPT becomes constants: no gradient is computed for it again.
fn freeze_language_model(models: &mut Models) -> Result<()> {
    let tensors: HashMap<String, Tensor> = named_vars(&models.llm_vars)?
        .into_iter()
        .filter(|(n, _)| n.starts_with("language_model."))
        .map(|(n, v)| (n.trim_start_matches("language_model.").to_string(), v.as_tensor().detach()))
        .collect();
    let dev = models.qformer.query_tokens().device().clone();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
    let language_model = LanguageModel::load(vb, &models.llm.config.text)?;
    models.llm = Blip2Llm {
        projection: models.llm.projection.clone(),
        language_model,
        config: models.llm.config.clone(),
    };
    Ok(())
}
