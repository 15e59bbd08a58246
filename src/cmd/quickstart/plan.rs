//! What a quickstart run is made of: sizes, the four training phases' optimizer settings and
//! how each becomes the `train::Settings` of its run.

use std::path::Path;

use train::config::GuardConfig;
use train::{AdamWConfig, LrSchedule, Settings};

use super::models::Sizes;
use super::{QuickstartArgs, Scale};

/// The warmup starts at this fraction of the peak learning rate, and the cosine ends at
/// `MIN_LR_RATIO` of it: one schedule shape for every phase.
const WARMUP_LR_RATIO: f64 = 0.01;
const MIN_LR_RATIO: f64 = 0.05;
/// Global-norm clipping of every phase.
const MAX_GRAD_NORM: f64 = 1.0;

/// Optimizer settings of one phase.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PhaseOptim {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
}

impl PhaseOptim {
    /// The phase `name` as a run in `OUT/runs/NAME` (no checkpoints: a quickstart is rerun, not
    /// resumed), its RNG the `train/NAME` stream of `seed`.
    pub fn settings(&self, out: &Path, name: &str, seed: u64) -> Settings {
        Settings {
            run_dir: out.join("runs").join(name),
            title: format!("quickstart: {name}"),
            seed,
            rng_stream: format!("train/{name}"),
            optimizer: AdamWConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                ..Default::default()
            },
            max_grad_norm: Some(MAX_GRAD_NORM),
            schedule: LrSchedule::LinearWarmupCosine {
                warmup_steps: self.warmup_steps,
                warmup_lr: self.lr * WARMUP_LR_RATIO,
                init_lr: self.lr,
                min_lr: self.lr * MIN_LR_RATIO,
                total_steps: self.steps,
            },
            stop_after: self.steps,
            guard: GuardConfig::default(),
            checkpoints: None,
            validation: None,
            log_every_steps: 1,
            plot_every_steps: None,
            resume: false,
        }
    }
}

/// Everything a run is made of.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub images: usize,
    pub seed: u64,
    pub sizes: Sizes,
    /// Contrastive ViT pretraining (0 steps: the ViT stays random).
    pub vit: PhaseOptim,
    pub lm: PhaseOptim,
    pub stage1: PhaseOptim,
    pub stage2: PhaseOptim,
    pub k_test: usize,
}

impl Plan {
    pub fn new(args: &QuickstartArgs) -> Self {
        let (images, sizes, vit, lm, s1, s2, k_test) = match args.scale {
            Scale::Ci => (
                200,
                Sizes {
                    image_size: 32,
                    patch_size: 8,
                    vit_hidden: 32,
                    vit_layers: 1,
                    qformer_hidden: 32,
                    qformer_layers: 1,
                    queries: 4,
                    embed_dim: 16,
                    opt_hidden: 32,
                    opt_layers: 1,
                    qformer_dropout: 0.0,
                },
                PhaseOptim { steps: 10, batch: 16, lr: 1e-3, warmup_steps: 2, weight_decay: 0.05 },
                PhaseOptim { steps: 30, batch: 16, lr: 3e-3, warmup_steps: 3, weight_decay: 0.01 },
                PhaseOptim { steps: 30, batch: 16, lr: 1e-3, warmup_steps: 3, weight_decay: 0.05 },
                PhaseOptim { steps: 15, batch: 16, lr: 1e-3, warmup_steps: 2, weight_decay: 0.05 },
                4,
            ),
            Scale::Default | Scale::Long => (
                5000,
                Sizes {
                    image_size: 48,
                    patch_size: 8,
                    vit_hidden: 64,
                    vit_layers: 2,
                    qformer_hidden: 64,
                    qformer_layers: 2,
                    queries: 8,
                    embed_dim: 32,
                    opt_hidden: 96,
                    opt_layers: 2,
                    qformer_dropout: 0.0,
                },
                PhaseOptim {
                    // On: a pretrained ViT measured far more robust across seeds than a random
                    // one, with which stage one could fail to take off (docs/quickstart.md).
                    steps: 300,
                    batch: 128,
                    lr: 1e-3,
                    warmup_steps: 20,
                    weight_decay: 0.05,
                },
                PhaseOptim {
                    // Free: it trains on the second core while the ViT and stage one run, and
                    // more steps kept raising its VQA reading a true caption (docs/quickstart.md).
                    steps: 6500,
                    batch: 32,
                    lr: 2e-3,
                    warmup_steps: 30,
                    weight_decay: 0.01,
                },
                PhaseOptim {
                    steps: 2000,
                    batch: 32,
                    lr: 2e-3,
                    warmup_steps: 30,
                    weight_decay: 0.05,
                },
                PhaseOptim {
                    steps: 1200,
                    batch: 32,
                    lr: 1e-3,
                    warmup_steps: 15,
                    weight_decay: 0.05,
                },
                8,
            ),
        };
        let mul = if args.scale == Scale::Long { 2 } else { 1 };
        let steps = |o: Option<u64>, lr: Option<f64>, b: Option<usize>, p: PhaseOptim| PhaseOptim {
            steps: o.unwrap_or(p.steps * mul),
            lr: lr.unwrap_or(p.lr),
            batch: b.unwrap_or(p.batch),
            ..p
        };
        let sizes =
            Sizes { qformer_dropout: args.dropout.unwrap_or(sizes.qformer_dropout), ..sizes };
        Plan {
            images: args.images.unwrap_or(images),
            seed: args.seed,
            sizes,
            vit: steps(args.vit_steps, args.vit_lr, args.vit_batch, vit),
            lm: steps(args.lm_steps, args.lm_lr, args.lm_batch, lm),
            stage1: steps(args.stage1_steps, args.stage1_lr, args.stage1_batch, s1),
            stage2: steps(args.stage2_steps, args.stage2_lr, args.stage2_batch, s2),
            k_test,
        }
    }
}
