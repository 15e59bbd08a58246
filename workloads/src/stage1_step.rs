//! Workload 2: one stage-one training step on cached image features (ITC + ITM + ITG forward,
//! backward, AdamW), through the task and step function that `blip2 pretrain` runs (`train::tasks::StageOne`,
//! `train::optimizer_step`).

use std::time::Instant;

use candle_core::{Device, Tensor};

use super::seeded::{seeded_tensor, SeededVarMap};
use super::sizes::{stage_one_config, stage_one_model, text_ids};
use super::{BenchCase, Scale};
use qformer::masks::PaddingMask;
use qformer::model::{Blip2Qformer, ImageInput};
use qformer::objectives::{stage_one_losses, NegativeMode, ObjectiveConfig, PretrainBatch};
use qformer::Result;
use train::tasks::{ImageBatch, StageOne, StageOneBatch};
use train::{
    clip_grad_norm, optimizer_step, rng, AdamW, AdamWConfig, DecayRule, ParamStore, StepGuard,
    StepSettings, StepVerdict, Task, TrainState,
};

/// LAVIS `Blip2Qformer.forward` + `loss.backward()` + `AdamW.step()` at B=8, L=32 on random
/// `[8, 257, 1408]` features (through the trainable `ln_vision`), hardest negatives (the anchor
/// patches `torch.multinomial` to argmax), LAVIS decay groups, lr 1e-4, wd 0.05, no clipping.
pub struct Stage1StepCase {
    pub model: Blip2Qformer,
    pub params: ParamStore,
    pub opt: AdamW,
    pub state: TrainState,
    pub objectives: ObjectiveConfig,
    /// `[B, N, Dv]` vision features before `ln_vision`
    pub features: Tensor,
    /// `[B, L]`
    pub input_ids: Tensor,
    pub padding: PaddingMask,
    batch: usize,
    _vars: SeededVarMap,
}

/// Wall time of the parts of one step, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepPhases {
    /// The three losses (image pass, text pass, ITC, ITM pass, ITG pass).
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Global gradient norm (measured every step, even without clipping).
    pub grad_norm_ms: f64,
    pub optimizer_ms: f64,
}

impl Stage1StepCase {
    pub fn new(scale: Scale, seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let cfg = stage_one_config(scale);
        let (b, len) = (scale.pick(8, 3), scale.pick(32, 6));
        let (vars, model) = stage_one_model(scale, seed, true, true, &dev)?;
        let params = ParamStore::from_varmap(vars.varmap(), DecayRule::LavisBase);
        let opt = AdamW::new(AdamWConfig::default());
        let state = TrainState::new(rng::seeded(seed), StepGuard::new(3, 5.0));
        let objectives = ObjectiveConfig {
            negatives: NegativeMode::Hardest,
            bos_token_id: (cfg.qformer_config.vocab_size - 1) as u32,
            pad_token_id: 0,
            ..Default::default()
        };
        let dv = cfg.vision_config.hidden_size;
        let features =
            seeded_tensor(seed, "image_features", (b, scale.vision_tokens(), dv), 0.0, 1.0, &dev)?;
        let input_ids = text_ids(scale, seed, b, len, &dev)?;
        let padding = PaddingMask::all_keep(b, len);
        Ok(Self {
            model,
            params,
            opt,
            state,
            objectives,
            features,
            input_ids,
            padding,
            batch: b,
            _vars: vars,
        })
    }

    /// One step as `train::run` takes it; returns the total loss before the update.
    pub fn step(&mut self) -> Result<f64> {
        let batch = StageOneBatch {
            image: ImageBatch::Features(self.features.clone()),
            input_ids: self.input_ids.clone(),
            attention_mask: self.padding.clone(),
            image_ids: None,
        };
        let task = StageOne { model: &self.model, objectives: self.objectives.clone() };
        let settings = StepSettings {
            lr: self.opt.config().lr,
            max_grad_norm: None,
            samples: self.batch as u64,
        };
        let out =
            optimizer_step(&self.params, &mut self.opt, &mut self.state, 1, settings, |_, r| {
                task.loss(&batch, r)
            })?;
        if !matches!(out.verdict, StepVerdict::Apply { .. }) {
            return Err(qformer::Error::Msg(format!(
                "stage1-step: step skipped ({:?})",
                out.verdict
            )));
        }
        Ok(out.loss)
    }

    /// One step taken apart into the phases `optimizer_step` runs, each timed (profiling; the
    /// update is the same as `step`'s). `probe` is called at the end of each phase with its name
    /// ("forward", "backward" (graph and gradients both alive), "graph_dropped", "optimizer"):
    /// the CLI reads the allocator's live bytes there.
    pub fn step_phases(&mut self, probe: &mut dyn FnMut(&'static str)) -> Result<StepPhases> {
        let t0 = Instant::now();
        let batch = batch(&self.features, &self.input_ids, &self.padding);
        let losses =
            stage_one_losses(&self.model, &batch, &self.objectives, true, &mut self.state.rng)?;
        let loss = losses.total.to_scalar::<f32>()?;
        probe("forward");
        let t1 = Instant::now();
        // As `accumulate_grads` keeps them: the trainable parameters' only.
        let mut grads = train::grad::trainable_only(&self.params, losses.total.backward()?)?;
        probe("backward");
        drop(losses);
        probe("graph_dropped");
        let t2 = Instant::now();
        clip_grad_norm(&self.params, &mut grads, None)?;
        let t3 = Instant::now();
        self.opt.step(&self.params, &grads)?;
        drop(grads);
        probe("optimizer");
        let t4 = Instant::now();
        self.state.advance(self.batch as u64);
        if !loss.is_finite() {
            return Err(qformer::Error::Msg(format!("stage1-step: loss {loss}")));
        }
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        Ok(StepPhases {
            forward_ms: ms(t0, t1),
            backward_ms: ms(t1, t2),
            grad_norm_ms: ms(t2, t3),
            optimizer_ms: ms(t3, t4),
        })
    }
}

fn batch<'a>(
    features: &'a Tensor,
    input_ids: &'a Tensor,
    padding: &'a PaddingMask,
) -> PretrainBatch<'a> {
    PretrainBatch {
        image: ImageInput::VisionFeatures(features),
        input_ids,
        attention_mask: padding,
        image_ids: None,
    }
}

impl BenchCase for Stage1StepCase {
    fn run(&mut self) -> Result<()> {
        self.step().map(|_| ())
    }
}
