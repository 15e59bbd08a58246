//! `RunConfig`: everything a training run is given, as TOML.
//!
//! Loading is strict: unknown keys are refused with their full dotted name, values are checked by
//! `validate`, and `--set a.b=v` overrides are typed by the value they replace. The resolved
//! config is written to `RUN_DIR/config.toml` so every run can be repeated.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::optim::AdamWConfig;
use crate::params::DecayRule;
use crate::schedule::LrSchedule;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Q-Former representation learning with a frozen image encoder (ITC + ITM + ITG).
    Stage1,
    /// Generative learning through a frozen LLM.
    Stage2,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub stage: Stage,
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub run_dir: PathBuf,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub batch: BatchConfig,
    pub steps: StepsConfig,
    pub checkpointing: CheckpointConfig,
    pub validation: ValidationConfig,
    pub guard: GuardConfig,
    pub logging: LoggingConfig,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A built-in model config: `tiny` (a model that trains in seconds, with its tokenizer).
    /// Unset, the model comes from `config` or `init_from`.
    pub preset: Option<String>,
    /// HF-style model config JSON (with `tokenizer.json` beside it); overrides `preset` when set.
    pub config: Option<PathBuf>,
    /// A whole stage-one model to start from: an HF BLIP-2 directory or a LAVIS `.pth`.
    pub init_from: Option<PathBuf>,
    /// A BERT checkpoint in HF layout (`config.json` + `model.safetensors` or
    /// `pytorch_model.bin`) to start the Q-Former from, as LAVIS `init_Qformer` does
    /// (bert-base-uncased for `stage1`); the rest is freshly initialized from `seed`.
    pub bert: Option<PathBuf>,
    /// Frozen image-encoder weights: an HF BLIP-2 directory (its `vision_model.*`).
    pub vision_weights: Option<PathBuf>,
    /// Stage two: a BLIP-2 OPT / FLAN-T5 directory in HF layout (`config.json` with
    /// `text_config`, `language_model.*` weights, the LLM's `tokenizer.json`). The LLM is frozen;
    /// its `language_projection` is continued when present, else freshly initialized.
    pub llm: Option<PathBuf>,
    /// Stage two: text before every caption (LAVIS `prompt`, "" in pretrain_stage2); it takes
    /// no loss.
    pub prompt: String,
    /// Train a connector into a LLaMA-family LLM instead of BLIP-2's Q-Former: `llava` (with
    /// `init_from` an HF LLaVA directory) or `minigpt4` (with `init_from` a MiniGPT-4 parts
    /// TOML). `stage1` aligns the projector on captions; `stage2` tunes on conversations
    /// (`data.conversations`).
    pub connector: Option<ConnectorKind>,
    /// Train the LLM too (LLaVA stage 2, as LLaVA's own recipe does). Unset: true for LLaVA's
    /// stage 2, false otherwise.
    pub train_llm: Option<bool>,
}

/// The connector a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// CLIP grid features through `multi_modal_projector` (LLaVA `plain` template in stage 1,
    /// `v1` conversations in stage 2).
    Llava,
    /// BLIP-2's frozen Q-Former through `llama_proj` (captions in stage 1, `###Human: ...
    /// ###Assistant: ` in stage 2).
    Minigpt4,
}

impl ModelConfig {
    /// Whether the LLM trains (see [`ModelConfig::train_llm`]).
    pub fn trains_llm(&self, stage: Stage) -> bool {
        self.train_llm
            .unwrap_or(self.connector == Some(ConnectorKind::Llava) && stage == Stage::Stage2)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A directory with `annotations/karpathy_train.json` (and `karpathy_val.json` for
    /// validation) and the images the captions name.
    pub root: Option<PathBuf>,
    /// Use N synthetic image–text pairs instead of `root` (tests, benchmarks).
    pub synthetic: Option<u64>,
    /// Frozen-ViT features written by `blip2 cache-features`: used instead of running the ViT
    /// (no random crops or flips then: the cache was made with the eval transform).
    pub features: Option<PathBuf>,
    pub image_size: u32,
    pub max_txt_len: u32,
    /// Batches the loader decodes ahead of the step (each batch's images decode in parallel).
    pub prefetch_batches: usize,
    /// Threads of the loader's own that decode and augment images (LAVIS `num_workers`); 0
    /// shares the process's thread pool with the model.
    pub num_workers: usize,
    /// Random resized crop + flip on the training images (BLIP-2 and MiniGPT-4); LLaVA never
    /// augments. Off: the eval transform.
    pub augment: bool,
    /// Connector stage 2: a LLaVA-format conversation JSON (`[{"id", "image", "conversations":
    /// [{"from": "human"|"gpt", "value"}...]}]`).
    pub conversations: Option<PathBuf>,
    /// The folder the conversations' `image` paths are relative to (default: the JSON's folder).
    pub images: Option<PathBuf>,
    /// Training data as it lies on disk, mixed by weight (`[[data.sources]]`: `kind` =
    /// `webdataset` (`urls`), `karpathy` (`annotations`, `images`), `pairs` / `capfilt` / `table`
    /// (`path`, `images`), `weight`); instead of `root` / `synthetic`.
    pub sources: Vec<datasets::sources::SourceSpec>,
    /// webdataset sources stream: an epoch reads their shards in a seeded order, in windows of
    /// consecutive shards holding at least this many samples, each window in a seeded order of
    /// its own (the number LAVIS gives webdataset's shuffle buffer). Memory holds one window's
    /// index, whatever the dataset's size.
    pub shuffle_buffer: usize,
    /// MiniGPT-4 stage 2 on captions (its `cc_sbu_align`): a prompt file, one instruction per
    /// line holding the image marker (`prompts/alignment.txt`); each batch draws one.
    pub instructions: Option<PathBuf>,
    /// LLaVA: the longest sequence after image expansion (its `model_max_length`); longer ones
    /// are cut, as LLaVA cuts them.
    pub max_seq_len: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate (LAVIS `init_lr`).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decay_rule: DecayRule,
    /// Global gradient-norm clipping; LAVIS stage 1 does not clip.
    pub max_grad_norm: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    LinearWarmupCosine,
    LavisEpochCosine,
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    pub warmup_steps: u64,
    pub warmup_lr: f64,
    pub min_lr: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Samples per optimizer step (per device).
    pub size: usize,
    /// Gradient accumulation: `size` is split into this many forward/backward passes.
    pub micro_batches: usize,
    pub eval_size: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StepsConfig {
    pub epochs: u64,
    /// Stop after this many optimizer steps (also the cosine horizon when set).
    pub max_steps: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Save every N steps; `None` saves at the end of each epoch only (LAVIS).
    pub every_steps: Option<u64>,
    pub keep_last: usize,
    pub keep_best: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Validate every N steps; `None`: never (LAVIS stage 1 has no validation split).
    pub every_steps: Option<u64>,
    /// Validation metric that picks the best model (`RUN_DIR/best/`, kept by `keep_best`):
    /// `val_loss`, `val_itc`, `val_itm` or `val_itg`.
    pub metric: String,
    pub higher_is_better: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Stop after this many consecutive steps with a NaN/Inf loss or gradient.
    pub max_consecutive_bad_steps: u32,
    /// Flag losses above this multiple of their moving average.
    pub spike_factor: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    pub every_steps: u64,
    /// Redraw `curves.png` every N steps (`None`: at the end only).
    pub plot_every_steps: Option<u64>,
}

/// The defaults are LAVIS `lavis/projects/blip2/train/pretrain_stage1.yaml`.
impl Default for RunConfig {
    fn default() -> Self {
        Self {
            stage: Stage::Stage1,
            seed: 42,
            device: "cpu".into(),
            run_dir: "runs/blip2-stage1".into(),
            model: ModelConfig::default(),
            data: DataConfig::default(),
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            batch: BatchConfig::default(),
            steps: StepsConfig::default(),
            checkpointing: CheckpointConfig::default(),
            validation: ValidationConfig::default(),
            guard: GuardConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            root: None,
            synthetic: None,
            features: None,
            image_size: 224,
            max_txt_len: 32, // blip2 pretrain model yaml
            prefetch_batches: 2,
            num_workers: 4, // LAVIS pretrain_stage1.yaml
            augment: true,
            conversations: None,
            images: None,
            instructions: None,
            sources: Vec::new(),
            shuffle_buffer: 1000,
            max_seq_len: 2048, // LLaVA-1.5 scripts
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        let a = AdamWConfig::default();
        Self {
            lr: a.lr,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            weight_decay: a.weight_decay,
            decay_rule: DecayRule::Blip2,
            max_grad_norm: None,
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::LavisEpochCosine,
            warmup_steps: 5000,
            warmup_lr: 1e-6,
            min_lr: 1e-5,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { size: 100, micro_batches: 1, eval_size: 64 }
    }
}

impl Default for StepsConfig {
    fn default() -> Self {
        Self { epochs: 10, max_steps: None }
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self { every_steps: None, keep_last: 3, keep_best: true }
    }
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self { every_steps: None, metric: "val_loss".into(), higher_is_better: false }
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self { max_consecutive_bad_steps: 10, spike_factor: 3.0 }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { every_steps: 50, plot_every_steps: None } // LAVIS log_freq 50
    }
}

impl OptimizerConfig {
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

impl RunConfig {
    /// LAVIS pretrain_stage1 hyper-parameters (`lavis/projects/blip2/train/pretrain_stage1.yaml`).
    pub fn stage1() -> Self {
        Self::default()
    }

    /// A run that finishes in seconds on CPU: tiny model, synthetic data, clipping on,
    /// checkpoints every 4 steps.
    pub fn tiny() -> Self {
        Self {
            seed: 0,
            run_dir: "runs/tiny".into(),
            model: ModelConfig { preset: Some("tiny".into()), ..ModelConfig::default() },
            data: DataConfig {
                root: None,
                synthetic: Some(64),
                features: None,
                image_size: 32,
                max_txt_len: 16,
                prefetch_batches: 2,
                ..DataConfig::default()
            },
            optimizer: OptimizerConfig {
                lr: 1e-3,
                max_grad_norm: Some(1.0),
                ..OptimizerConfig::default()
            },
            schedule: ScheduleConfig {
                kind: ScheduleKind::LinearWarmupCosine,
                warmup_steps: 2,
                warmup_lr: 1e-5,
                min_lr: 1e-5,
            },
            batch: BatchConfig { size: 8, micro_batches: 2, eval_size: 8 },
            steps: StepsConfig { epochs: 1, max_steps: Some(8) },
            checkpointing: CheckpointConfig { every_steps: Some(4), keep_last: 2, keep_best: true },
            validation: ValidationConfig {
                every_steps: Some(4),
                metric: "val_loss".into(),
                higher_is_better: false,
            },
            guard: GuardConfig { max_consecutive_bad_steps: 3, spike_factor: 5.0 },
            logging: LoggingConfig { every_steps: 1, plot_every_steps: None },
            ..Self::default()
        }
    }

    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "stage1" => Ok(Self::stage1()),
            "tiny" => Ok(Self::tiny()),
            other => {
                Err(Error::Config(format!("unknown run preset `{other}` (known: stage1, tiny)")))
            }
        }
    }

    /// Parses a (possibly partial) TOML config; missing keys take the stage-1 defaults.
    /// `source` names the file in errors.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Self> {
        let value: toml::Table = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{source}: invalid TOML: {e}")))?;
        check_known_keys(&value, &schema(), "", source)?;
        let cfg: Self = toml::Value::Table(value)
            .try_into()
            .map_err(|e| Error::Config(format!("{source}: {e}")))?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Applies `key.path=value` overrides; each value is parsed as the type of the value it
    /// replaces, and keys the config does not have are refused.
    pub fn with_overrides<S: AsRef<str>>(self, overrides: &[S]) -> Result<Self> {
        if overrides.is_empty() {
            return Ok(self);
        }
        let mut tree = self.to_value()?;
        let schema = schema();
        let mut cfg = self;
        for ov in overrides {
            apply_override(&mut tree, &schema, ov.as_ref())?;
            // Deserialize after each one so that a bad value is reported with its own `--set`.
            cfg = toml::Value::Table(tree.clone())
                .try_into()
                .map_err(|e| Error::Config(format!("--set {}: {e}", ov.as_ref())))?;
        }
        Ok(cfg)
    }

    /// Refuses values that cannot describe a run, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str, got: String| {
            Err(Error::Config(format!("{key} {why} (got {got})")))
        };
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad("optimizer.lr", "must be positive", o.lr.to_string());
        }
        for (key, b) in [("optimizer.beta1", o.beta1), ("optimizer.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(key, "must be in [0, 1)", b.to_string());
            }
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return bad("optimizer.eps", "must be positive", o.eps.to_string());
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) || o.lr * o.weight_decay >= 1.0 {
            return bad(
                "optimizer.weight_decay",
                "must be >= 0 with lr·weight_decay < 1",
                o.weight_decay.to_string(),
            );
        }
        if let Some(m) = o.max_grad_norm {
            if !(m.is_finite() && m > 0.0) {
                return bad("optimizer.max_grad_norm", "must be positive when set", m.to_string());
            }
        }
        let s = &self.schedule;
        if !(s.min_lr.is_finite() && s.min_lr >= 0.0 && s.min_lr <= o.lr) {
            return bad("schedule.min_lr", "must be in [0, optimizer.lr]", s.min_lr.to_string());
        }
        if !(s.warmup_lr.is_finite() && s.warmup_lr >= 0.0 && s.warmup_lr <= o.lr) {
            return bad(
                "schedule.warmup_lr",
                "must be in [0, optimizer.lr]",
                s.warmup_lr.to_string(),
            );
        }
        if let Some(max) = self.steps.max_steps {
            if max == 0 {
                return bad("steps.max_steps", "must be at least 1", max.to_string());
            }
            if s.kind == ScheduleKind::LinearWarmupCosine && s.warmup_steps >= max {
                return bad(
                    "schedule.warmup_steps",
                    "must be below steps.max_steps",
                    s.warmup_steps.to_string(),
                );
            }
        }
        if self.steps.epochs == 0 {
            return bad("steps.epochs", "must be at least 1", "0".into());
        }
        let b = &self.batch;
        if b.size == 0 {
            return bad("batch.size", "must be at least 1", "0".into());
        }
        if b.micro_batches == 0 || !b.size.is_multiple_of(b.micro_batches) {
            return bad(
                "batch.micro_batches",
                "must be >= 1 and divide batch.size",
                b.micro_batches.to_string(),
            );
        }
        if b.eval_size == 0 {
            return bad("batch.eval_size", "must be at least 1", "0".into());
        }
        if self.checkpointing.keep_last == 0 {
            return bad("checkpointing.keep_last", "must be at least 1", "0".into());
        }
        for (key, v) in [
            ("checkpointing.every_steps", self.checkpointing.every_steps),
            ("validation.every_steps", self.validation.every_steps),
            ("logging.plot_every_steps", self.logging.plot_every_steps),
            ("data.synthetic", self.data.synthetic),
        ] {
            if v == Some(0) {
                return bad(key, "must be at least 1 when set", "0".into());
            }
        }
        if self.logging.every_steps == 0 {
            return bad("logging.every_steps", "must be at least 1", "0".into());
        }
        if self.guard.max_consecutive_bad_steps == 0 {
            return bad("guard.max_consecutive_bad_steps", "must be at least 1", "0".into());
        }
        if !(self.guard.spike_factor.is_finite() && self.guard.spike_factor > 1.0) {
            return bad("guard.spike_factor", "must be > 1", self.guard.spike_factor.to_string());
        }
        if self.data.image_size == 0 || self.data.max_txt_len == 0 {
            return bad("data.image_size/max_txt_len", "must be positive", "0".into());
        }
        if self.model.connector.is_some() {
            self.validate_connector()?;
        } else if !self.data.sources.is_empty() {
            if self.data.root.is_some() || self.data.synthetic.is_some() {
                return bad(
                    "data.sources",
                    "replaces data.root and data.synthetic: set one of them",
                    "both set".into(),
                );
            }
        } else if self.data.synthetic.is_none() && self.data.root.is_none() {
            return bad(
                "data.root",
                "must be set (a directory with annotations/karpathy_train.json and the images) unless data.synthetic is set",
                "unset".into(),
            );
        }
        if self.data.prefetch_batches == 0 {
            return bad("data.prefetch_batches", "must be at least 1", "0".into());
        }
        let m = &self.model;
        if m.connector.is_none()
            && m.preset.is_none()
            && m.config.is_none()
            && m.init_from.is_none()
        {
            return bad(
                "model",
                "needs one of model.preset (`tiny`), model.config (a config.json) or model.init_from (an HF directory or a LAVIS .pth)",
                "none set".into(),
            );
        }
        if let Some(p) = m.preset.as_deref().filter(|p| *p != "tiny") {
            return bad(
                "model.preset",
                "must be `tiny` (the one built-in model config)",
                format!("`{p}`"),
            );
        }
        if self.model.init_from.is_some() && self.model.bert.is_some() {
            return bad(
                "model.bert",
                "cannot be combined with model.init_from (a whole model to start from)",
                "both set".into(),
            );
        }
        let dev = self.device.as_str();
        let cuda_ok =
            dev == "cuda" || dev.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
        if dev != "cpu" && !cuda_ok {
            return bad("device", "must be `cpu`, `cuda` or `cuda:N`", format!("`{dev}`"));
        }
        Ok(())
    }

    /// The keys a connector run needs and the ones it cannot use.
    fn validate_connector(&self) -> Result<()> {
        let (m, d) = (&self.model, &self.data);
        let kind = match m.connector {
            Some(ConnectorKind::Llava) => "llava",
            Some(ConnectorKind::Minigpt4) => "minigpt4",
            None => return Ok(()),
        };
        let refuse = |key: &str, why: &str| {
            Err(Error::Config(format!(
                "{key} cannot be used with model.connector = \"{kind}\": {why}"
            )))
        };
        let llava_parts = m.vision_weights.is_some() && m.llm.is_some();
        let is_llava = m.connector == Some(ConnectorKind::Llava);
        if m.init_from.is_none() && !(is_llava && llava_parts) {
            let what = match m.connector {
                Some(ConnectorKind::Llava) => "an HF LLaVA directory (or model.vision_weights = a CLIP directory with model.llm = a LLaMA directory, for a fresh projector)",
                _ => "a MiniGPT-4 parts TOML (qformer, llm, projection)",
            };
            return Err(Error::Config(format!(
                "model.connector = \"{kind}\" needs model.init_from: {what}"
            )));
        }
        let parts_beside_init = m.init_from.is_some() || !is_llava;
        for (key, set) in [
            ("model.preset", m.preset.is_some()),
            ("model.config", m.config.is_some()),
            ("model.bert", m.bert.is_some()),
            ("model.vision_weights", m.vision_weights.is_some() && parts_beside_init),
            ("model.llm", m.llm.is_some() && parts_beside_init),
            ("data.features", d.features.is_some()),
        ] {
            if set {
                return refuse(key, "the connector's model is all in model.init_from");
            }
        }
        if self.validation.every_steps.is_some() {
            return refuse("validation.every_steps", "connector runs have no validation loss yet");
        }
        if m.train_llm == Some(true) && m.connector == Some(ConnectorKind::Minigpt4) {
            return refuse("model.train_llm = true", "MiniGPT-4 trains llama_proj only");
        }
        match self.stage {
            Stage::Stage1
                if d.root.is_none()
                    && d.synthetic.is_none()
                    && d.conversations.is_none()
                    && d.sources.is_empty() =>
            {
                Err(Error::Config(
                    "a connector's stage 1 needs captions: data.root (a directory with annotations/karpathy_train.json and the images), data.conversations (LLaVA's LCS-558K layout) or data.synthetic".into(),
                ))
            }
            _ if d.instructions.is_some()
                && (self.stage == Stage::Stage1 || m.connector == Some(ConnectorKind::Llava)) =>
            {
                refuse("data.instructions", "it is MiniGPT-4's stage-2 prompt list")
            }
            _ if d.instructions.is_some() && d.conversations.is_some() => {
                refuse("data.instructions", "conversations bring their own questions")
            }
            Stage::Stage2 if d.conversations.is_none() && d.instructions.is_none() => {
                Err(Error::Config(
                    "a connector's stage 2 needs data.conversations (a LLaVA-format conversation JSON), or for MiniGPT-4 captions (data.root) with data.instructions".into(),
                ))
            }
            Stage::Stage2
                if d.instructions.is_some()
                    && d.root.is_none()
                    && d.synthetic.is_none()
                    && d.sources.is_empty() =>
            {
                Err(Error::Config("data.instructions needs captions: set data.root".into()))
            }
            _ if d.max_seq_len == 0 => {
                Err(Error::Config("data.max_seq_len must be at least 1 (got 0)".into()))
            }
            _ => Ok(()),
        }
    }

    /// The schedule of this run; `steps_per_epoch` comes from the data loader.
    pub fn lr_schedule(&self, steps_per_epoch: u64) -> LrSchedule {
        let s = &self.schedule;
        let init_lr = self.optimizer.lr;
        match s.kind {
            ScheduleKind::LinearWarmupCosine => LrSchedule::LinearWarmupCosine {
                warmup_steps: s.warmup_steps,
                warmup_lr: s.warmup_lr,
                init_lr,
                min_lr: s.min_lr,
                total_steps: self.total_steps(steps_per_epoch),
            },
            ScheduleKind::LavisEpochCosine => LrSchedule::LavisEpochCosine {
                warmup_steps: s.warmup_steps,
                warmup_lr: s.warmup_lr,
                init_lr,
                min_lr: s.min_lr,
                max_epoch: self.steps.epochs,
            },
            ScheduleKind::Constant => LrSchedule::Constant { lr: init_lr },
        }
    }

    pub fn total_steps(&self, steps_per_epoch: u64) -> u64 {
        let by_epochs = self.steps.epochs.saturating_mul(steps_per_epoch);
        self.steps.max_steps.map_or(by_epochs, |m| m.min(by_epochs.max(1)))
    }

    fn to_value(&self) -> Result<toml::Table> {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => Ok(t),
            Ok(_) => Err(Error::Msg("run config did not serialize to a table".into())),
            Err(e) => Err(Error::Config(format!("cannot serialize run config: {e}"))),
        }
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self)
            .map_err(|e| Error::Config(format!("cannot serialize run config: {e}")))
    }

    /// Writes the resolved config (atomically: `.tmp` then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, self.to_toml()?).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }
}

/// Every key a config may have: the defaults with every optional value filled in.
fn schema() -> toml::Table {
    let mut c = RunConfig::default();
    c.model.config = Some(PathBuf::new());
    c.model.init_from = Some(PathBuf::new());
    c.model.bert = Some(PathBuf::new());
    c.model.vision_weights = Some(PathBuf::new());
    c.model.llm = Some(PathBuf::new());
    c.data.root = Some(PathBuf::new());
    c.data.synthetic = Some(1);
    c.data.features = Some(PathBuf::new());
    c.data.conversations = Some(PathBuf::new());
    c.data.images = Some(PathBuf::new());
    c.data.instructions = Some(PathBuf::new());
    c.model.connector = Some(ConnectorKind::Llava);
    c.model.train_llm = Some(true);
    c.model.preset = Some(String::new());
    c.optimizer.max_grad_norm = Some(1.0);
    c.steps.max_steps = Some(1);
    c.checkpointing.every_steps = Some(1);
    c.validation.every_steps = Some(1);
    c.logging.plot_every_steps = Some(1);
    c.to_value().expect("default config serializes")
}

fn check_known_keys(
    value: &toml::Table,
    schema: &toml::Table,
    prefix: &str,
    source: &str,
) -> Result<()> {
    for (key, v) in value {
        let full = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match schema.get(key) {
            None => {
                let known: Vec<&str> = schema.keys().map(|k| k.as_str()).collect();
                return Err(Error::Config(format!(
                    "{source}: unknown key `{full}` (known here: {})",
                    known.join(", ")
                )));
            }
            Some(toml::Value::Table(sub)) => match v {
                toml::Value::Table(t) => check_known_keys(t, sub, &full, source)?,
                _ => return Err(Error::Config(format!("{source}: `{full}` must be a table"))),
            },
            Some(_) => {}
        }
    }
    Ok(())
}

fn apply_override(tree: &mut toml::Table, schema: &toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("--set `{spec}`: expected key.path=value")))?;
    let (key, raw) = (key.trim(), raw.trim());
    let parts: Vec<&str> = key.split('.').collect();
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut node = tree;
    let mut schema_node = schema;
    for (i, part) in parents.iter().enumerate() {
        let here = parts[..=i].join(".");
        schema_node = match schema_node.get(*part) {
            Some(toml::Value::Table(t)) => t,
            _ => return Err(Error::Config(format!("--set {key}: unknown key `{here}`"))),
        };
        node = match node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
        {
            toml::Value::Table(t) => t,
            _ => return Err(Error::Config(format!("--set {key}: `{here}` is not a table"))),
        };
    }
    // The type comes from the current value, or for an unset optional from the schema.
    let template = match (node.get(*last), schema_node.get(*last)) {
        (Some(v), _) | (None, Some(v)) => v.clone(),
        (None, None) => {
            let known: Vec<&str> = schema_node.keys().map(|k| k.as_str()).collect();
            return Err(Error::Config(format!(
                "--set {key}: unknown key (known here: {})",
                known.join(", ")
            )));
        }
    };
    let type_err = |ty: &str| Error::Config(format!("--set {key}={raw}: expected {ty}"));
    let value = match template {
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.parse().map_err(|_| type_err("an integer"))?)
        }
        toml::Value::Float(_) => toml::Value::Float(raw.parse().map_err(|_| type_err("a number"))?),
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(raw.parse().map_err(|_| type_err("true or false"))?)
        }
        toml::Value::String(_) => toml::Value::String(raw.trim_matches('"').to_string()),
        toml::Value::Table(_) => return Err(type_err("a single value (this key is a table)")),
        toml::Value::Array(_) | toml::Value::Datetime(_) => {
            let t: toml::Table =
                toml::from_str(&format!("v = {raw}")).map_err(|_| type_err("a TOML array"))?;
            t["v"].clone()
        }
    };
    node.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage1_preset_is_lavis_pretrain_stage1() {
        // Reference: LAVIS lavis/projects/blip2/train/pretrain_stage1.yaml.
        let c = RunConfig::stage1();
        assert_eq!(c.optimizer.lr, 1e-4);
        assert_eq!(c.schedule.min_lr, 1e-5);
        assert_eq!(c.schedule.warmup_lr, 1e-6);
        assert_eq!(c.schedule.warmup_steps, 5000);
        assert_eq!(c.schedule.kind, ScheduleKind::LavisEpochCosine);
        assert_eq!(c.optimizer.weight_decay, 0.05);
        assert_eq!((c.optimizer.beta1, c.optimizer.beta2), (0.9, 0.999));
        assert_eq!(c.batch.size, 100);
        assert_eq!(c.batch.eval_size, 64);
        assert_eq!(c.batch.micro_batches, 1);
        assert_eq!(c.steps.epochs, 10);
        assert_eq!(c.seed, 42);
        assert_eq!(c.data.image_size, 224);
        assert_eq!(c.optimizer.max_grad_norm, None);
        // LAVIS's hyper-parameters name no data or model of ours: a run sets both.
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("data.root"), "{msg}");
        let mut c = c;
        c.data.root = Some("coco".into());
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("model.init_from"), "{msg}");
        c.model.init_from = Some("blip2-stage1".into());
        c.validate().unwrap();
        RunConfig::tiny().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = RunConfig::from_toml_str("[optimizer]\nlr = 1e-4\nlrr = 2e-4\n", "run.toml")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("run.toml") && msg.contains("unknown key `optimizer.lrr`"), "{msg}");
        assert!(msg.contains("weight_decay"), "should list known keys: {msg}");
        let msg = RunConfig::from_toml_str("bogus = 1\n", "run.toml").unwrap_err().to_string();
        assert!(msg.contains("unknown key `bogus`"), "{msg}");
        let msg = RunConfig::from_toml_str("[optimizer]\nlr = \"fast\"\n", "run.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("run.toml") && msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn partial_file_takes_stage1_defaults() {
        let c = RunConfig::from_toml_str(
            "seed = 7\n[optimizer]\nlr = 2e-4\n[steps]\nmax_steps = 100\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.seed, 7);
        assert_eq!(c.optimizer.lr, 2e-4);
        assert_eq!(c.steps.max_steps, Some(100));
        assert_eq!(c.optimizer.weight_decay, 0.05);
        assert_eq!(c.batch.size, 100);
    }

    #[test]
    fn overrides_are_typed_by_the_existing_value() {
        let c = RunConfig::stage1()
            .with_overrides(&[
                "optimizer.lr=3e-4",
                "batch.size=32",
                "checkpointing.keep_best=false",
                "device=cuda:1",
                "steps.max_steps=1000", // unset optional: type from the schema
                "optimizer.decay_rule=lavis_base",
                "optimizer.weight_decay=0", // an integer literal for a float key
            ])
            .unwrap();
        assert_eq!(c.optimizer.lr, 3e-4);
        assert_eq!(c.batch.size, 32);
        assert!(!c.checkpointing.keep_best);
        assert_eq!(c.device, "cuda:1");
        assert_eq!(c.steps.max_steps, Some(1000));
        assert_eq!(c.optimizer.decay_rule, DecayRule::LavisBase);
        assert_eq!(c.optimizer.weight_decay, 0.0);

        let e = |ov: &str| RunConfig::stage1().with_overrides(&[ov]).unwrap_err().to_string();
        assert!(
            e("optimizer.lrr=1").contains("optimizer.lrr: unknown key"),
            "{}",
            e("optimizer.lrr=1")
        );
        assert!(e("optim.lr=1").contains("unknown key `optim`"));
        assert!(e("batch.size=1.5").contains("expected an integer"));
        assert!(e("optimizer.lr=fast").contains("expected a number"));
        assert!(e("optimizer.lr").contains("expected key.path=value"));
        assert!(e("optimizer=1").contains("table"));
        let msg = e("optimizer.decay_rule=sometimes");
        assert!(
            msg.contains("--set optimizer.decay_rule=sometimes") && msg.contains("unknown variant"),
            "{msg}"
        );
    }

    #[test]
    fn validate_names_the_offending_key() {
        let base = || {
            RunConfig::stage1().with_overrides(&["data.root=coco", "model.config=c.json"]).unwrap()
        };
        let v =
            |ov: &str| base().with_overrides(&[ov]).unwrap().validate().unwrap_err().to_string();
        assert!(v("optimizer.lr=-1").contains("optimizer.lr must be positive"));
        assert!(v("optimizer.beta2=1.0").contains("optimizer.beta2"));
        assert!(v("schedule.min_lr=1.0").contains("schedule.min_lr"));
        assert!(v("batch.micro_batches=3").contains("batch.micro_batches"));
        assert!(v("batch.size=0").contains("batch.size"));
        assert!(v("checkpointing.keep_last=0").contains("checkpointing.keep_last"));
        assert!(v("device=gpu").contains("device must be"));
        let bert = base().with_overrides(&["model.bert=bert-base-uncased"]).unwrap();
        assert_eq!(bert.model.bert, Some(PathBuf::from("bert-base-uncased")));
        bert.validate().unwrap();
        let both = bert.with_overrides(&["model.init_from=run.pth"]).unwrap();
        let msg = both.validate().unwrap_err().to_string();
        assert!(msg.contains("model.bert") && msg.contains("model.init_from"), "{msg}");
        let tiny = RunConfig::tiny().with_overrides(&["steps.max_steps=2"]).unwrap();
        assert!(tiny
            .validate()
            .unwrap_err()
            .to_string()
            .contains("schedule.warmup_steps must be below"));
    }

    #[test]
    fn resolved_config_round_trips_through_the_run_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let c = RunConfig::tiny().with_overrides(&["optimizer.lr=5e-4"]).unwrap();
        c.save(&path).unwrap();
        assert_eq!(RunConfig::load(&path).unwrap(), c);
        let p1 = dir.path().join("stage1.toml");
        RunConfig::stage1().save(&p1).unwrap();
        assert_eq!(RunConfig::load(&p1).unwrap(), RunConfig::stage1());
    }

    #[test]
    fn schedule_from_config() {
        let c = RunConfig::tiny();
        let s = c.lr_schedule(100);
        assert_eq!(
            s,
            LrSchedule::LinearWarmupCosine {
                warmup_steps: 2,
                warmup_lr: 1e-5,
                init_lr: 1e-3,
                min_lr: 1e-5,
                total_steps: 8
            }
        );
        let s1 = RunConfig::stage1().lr_schedule(1000);
        assert!(matches!(s1, LrSchedule::LavisEpochCosine { max_epoch: 10, .. }));
        assert_eq!(RunConfig::stage1().total_steps(1000), 10_000);
    }
}
