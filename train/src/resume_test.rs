//! Exact resume: 6 straight steps must equal 3 steps + checkpoint + load into fresh objects +
//! 3 steps, bit for bit (parameters, losses, optimizer moments, RNG), with every part of the
//! training step in use: schedule, accumulation, clipping, guard, AdamW with decay groups.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;

use qformer::nn::Linear;

use crate::checkpoint::{Checkpointer, Retention, RunDir, TrainState};
use crate::grad::{accumulate_grads, clip_grad_norm, MicroLoss, StepGuard, StepVerdict};
use crate::optim::{AdamW, AdamWConfig};
use crate::params::{DecayRule, ParamStore};
use crate::rng::{self, TrainRng};
use crate::schedule::LrSchedule;

const SEED: u64 = 1234;
const MICRO: usize = 2;
const MICRO_BATCH: usize = 4;

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(varmap: &VarMap) -> Mlp {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        Mlp {
            fc1: qformer::nn::linear(5, 16, true, vb.pp("fc1")).unwrap(),
            fc2: qformer::nn::linear(16, 3, true, vb.pp("fc2")).unwrap(),
        }
    }

    // x: [B, 5], keep: [B, 16] dropout mask -> logits [B, 3]
    fn forward(&self, x: &Tensor, keep: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.fc1.forward(x)?.relu()?;
        self.fc2.forward(&(h * keep)?)
    }
}

/// Deterministic init (candle's own init draws from an unseedable RNG).
fn init(params: &ParamStore) {
    let mut r = rng::substream(SEED, "init");
    for (_, p) in params.iter() {
        let v: Vec<f32> = (0..p.var.elem_count()).map(|_| r.random::<f32>() - 0.5).collect();
        p.var.set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap()).unwrap();
    }
}

fn micro_batch(r: &mut TrainRng) -> (Tensor, Tensor, Tensor) {
    let dev = Device::Cpu;
    let x: Vec<f32> = (0..MICRO_BATCH * 5).map(|_| r.random::<f32>() * 4.0 - 2.0).collect();
    let y: Vec<u32> = (0..MICRO_BATCH).map(|_| r.random_range(0..3)).collect();
    // Inverted dropout with p = 0.25, drawn from the run RNG like the model's dropout will be.
    let keep: Vec<f32> = (0..MICRO_BATCH * 16)
        .map(|_| if r.random::<f32>() < 0.25 { 0.0 } else { 1.0 / 0.75 })
        .collect();
    (
        Tensor::from_vec(x, (MICRO_BATCH, 5), &dev).unwrap(),
        Tensor::from_vec(y, MICRO_BATCH, &dev).unwrap(),
        Tensor::from_vec(keep, (MICRO_BATCH, 16), &dev).unwrap(),
    )
}

struct Run {
    _varmap: VarMap,
    model: Mlp,
    params: ParamStore,
    opt: AdamW,
    state: TrainState,
}

fn fresh_run() -> Run {
    let varmap = VarMap::new();
    let model = Mlp::new(&varmap);
    let params = ParamStore::from_varmap(&varmap, DecayRule::Blip2);
    let opt = AdamW::new(AdamWConfig { lr: 5e-2, ..AdamWConfig::default() });
    let state = TrainState::new(rng::substream(SEED, "train"), StepGuard::new(3, 5.0));
    Run { _varmap: varmap, model, params, opt, state }
}

const SCHEDULE: LrSchedule = LrSchedule::LinearWarmupCosine {
    warmup_steps: 2,
    warmup_lr: 1e-3,
    init_lr: 5e-2,
    min_lr: 1e-3,
    total_steps: 6,
};

fn train(run: &mut Run, steps: u64, losses: &mut Vec<f64>, clip_coefs: &mut Vec<f64>) {
    for _ in 0..steps {
        let s = &mut run.state;
        run.opt.set_lr(SCHEDULE.lr(s.schedule_pos()));
        let model = &run.model;
        let r = &mut s.rng;
        let acc = accumulate_grads(&run.params, MICRO, |_| {
            let (x, y, keep) = micro_batch(r);
            let loss = candle_nn::loss::cross_entropy(&model.forward(&x, &keep)?, &y)?;
            Ok(MicroLoss { total: loss.clone(), parts: vec![("ce".into(), loss)] })
        })
        .unwrap();
        let mut grads = acc.grads;
        let (norm, coef) = clip_grad_norm(&run.params, &mut grads, Some(0.5)).unwrap();
        if let StepVerdict::Apply { .. } = s.guard.check(s.step, acc.loss, norm).unwrap() {
            let report = run.opt.step(&run.params, &grads).unwrap();
            assert!(report.without_grad.is_empty(), "{:?}", report.without_grad);
        }
        s.advance((MICRO * MICRO_BATCH) as u64);
        s.loader =
            Some(datasets::LoaderState { seed: 0, epoch: 0, position: s.samples_seen as usize });
        losses.push(acc.loss);
        clip_coefs.push(coef);
    }
}

fn bits(params: &ParamStore) -> Vec<(String, Vec<u32>)> {
    params
        .iter()
        .map(|(n, p)| {
            let v = p.var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (n.to_string(), v.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

#[test]
fn six_straight_steps_equal_three_plus_resume_plus_three() {
    // A: six steps in one go.
    let mut a = fresh_run();
    init(&a.params);
    let (mut losses_a, mut coefs_a) = (vec![], vec![]);
    train(&mut a, 6, &mut losses_a, &mut coefs_a);
    assert!(coefs_a.iter().any(|&c| c < 1.0), "clipping must be active in this test: {coefs_a:?}");
    assert!(losses_a[5] < losses_a[0], "the toy model must learn: {losses_a:?}");

    // B: three steps, checkpoint, then everything rebuilt from scratch and loaded.
    let dir = tempfile::tempdir().unwrap();
    let run_dir = RunDir::create(dir.path()).unwrap();
    let retention = Retention { keep_last: 2, keep_best: false };
    let (mut losses_b, mut coefs_b) = (vec![], vec![]);
    {
        let mut b = fresh_run();
        init(&b.params);
        train(&mut b, 3, &mut losses_b, &mut coefs_b);
        let (ck, _) = Checkpointer::open(&run_dir, retention).unwrap();
        ck.save(&b.state, &b.params, &b.opt).unwrap();
    }
    let mut b = fresh_run(); // candle's random init: differs from `init` until loaded
    assert_ne!(bits(&b.params), bits(&a.params));
    let (ck, _) = Checkpointer::open(&run_dir, retention).unwrap();
    let (_, state) = ck.resume(&b.params, &mut b.opt).unwrap().expect("a checkpoint");
    assert_eq!(state.step, 3);
    assert_eq!(state.loader.map(|l| l.position), Some(24));
    b.state = state;
    train(&mut b, 3, &mut losses_b, &mut coefs_b);

    assert_eq!(
        losses_b.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        losses_a.iter().map(|l| l.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(coefs_b, coefs_a);
    assert_eq!(bits(&b.params), bits(&a.params));
    assert_eq!(b.state, a.state);
    let (sa, sb) = (a.opt.state_tensors().unwrap(), b.opt.state_tensors().unwrap());
    assert_eq!(sa.len(), sb.len());
    for (k, t) in &sa {
        let u = &sb[k];
        if t.dtype() == DType::F32 {
            assert_eq!(t.to_vec1::<f32>().unwrap(), u.to_vec1::<f32>().unwrap(), "{k}");
        } else {
            assert_eq!(t.to_vec1::<i64>().unwrap(), u.to_vec1::<i64>().unwrap(), "{k}");
        }
    }

    // C: resuming the weights but not the optimizer state must NOT reproduce A; this shows the
    // comparison above is sensitive to what a checkpoint carries.
    let mut c = fresh_run();
    let latest = ck.latest().unwrap().unwrap();
    c.params.load_trainable_strict(&latest.join("model.safetensors")).unwrap();
    c.state = serde_json::from_slice(&std::fs::read(latest.join("state.json")).unwrap()).unwrap();
    let (mut losses_c, mut coefs_c) = (losses_b[..3].to_vec(), vec![]);
    train(&mut c, 3, &mut losses_c, &mut coefs_c);
    assert_ne!(bits(&c.params), bits(&a.params));
}
