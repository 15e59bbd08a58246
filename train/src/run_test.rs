//! `run` end to end on a toy task: exact resume across an epoch boundary (weights, losses,
//! optimizer moments, RNG, cursor, with schedule, accumulation, clipping, guard and AdamW's decay
//! groups in use), checkpoints at each epoch end when no step interval is set, the best model by
//! the validation metric, the refusal to overwrite a run, a loss that falls, and trainable
//! tensors that get no gradient.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use datasets::LoaderState;
use rand::{Rng, SeedableRng};

use qformer::nn::Linear;

use crate::checkpoint::Retention;
use crate::config::GuardConfig;
use crate::grad::MicroLoss;
use crate::metrics::read_metrics;
use crate::optim::AdamWConfig;
use crate::params::{DecayRule, ParamStore};
use crate::rng::{self, TrainRng};
use crate::run::{run, Extras};
use crate::schedule::LrSchedule;
use crate::settings::{CheckpointSettings, SaveEvery, Settings, ValidationSettings};
use crate::task::{Batches, Fetched, StepBatch, Task};
use crate::Result;

const STEPS_PER_EPOCH: usize = 3;
const MICRO: usize = 2;
const ROWS: usize = 4;

struct Toy {
    fc1: Linear,
    fc2: Linear,
}

struct ToyBatch {
    x: Tensor,
    y: Tensor,
}

impl Toy {
    fn new(varmap: &VarMap) -> Toy {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        let toy = Toy {
            fc1: qformer::nn::linear(5, 16, true, vb.pp("fc1")).unwrap(),
            fc2: qformer::nn::linear(16, 3, true, vb.pp("fc2")).unwrap(),
        };
        // candle's own init draws from an unseedable RNG; by sorted name, the values depend on
        // the seed alone.
        let mut r = rng::substream(7, "init");
        let mut vars: Vec<(String, candle_core::Var)> =
            varmap.data().lock().unwrap().iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, var) in vars {
            let v: Vec<f32> = (0..var.elem_count()).map(|_| r.random::<f32>() - 0.5).collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
        }
        toy
    }

    fn loss(&self, b: &ToyBatch, keep: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let h = self.fc1.forward(&b.x)?.relu()?;
        let h = match keep {
            Some(k) => (h * k)?,
            None => h,
        };
        candle_nn::loss::cross_entropy(&self.fc2.forward(&h)?, &b.y)
    }
}

impl Task for Toy {
    type Batch = ToyBatch;

    fn loss(&self, b: &ToyBatch, rng: &mut TrainRng) -> Result<MicroLoss> {
        // Dropout drawn from the run RNG, as the models' dropout is: resume must restore it.
        let keep: Vec<f32> = (0..ROWS * 16)
            .map(|_| if rng.random::<f32>() < 0.25 { 0.0 } else { 1.0 / 0.75 })
            .collect();
        let keep = Tensor::from_vec(keep, (ROWS, 16), &Device::Cpu)?;
        let loss = Toy::loss(self, b, Some(&keep))?;
        Ok(MicroLoss { total: loss.clone(), parts: vec![("ce".into(), loss)] })
    }

    fn validate(&self, data: &mut dyn Batches<Batch = ToyBatch>) -> Result<BTreeMap<String, f64>> {
        data.start_epoch(0, None)?;
        let mut sum = 0.0;
        let mut n = 0;
        while let Fetched::Step(step) = data.next()? {
            for b in &step.micro {
                sum += Toy::loss(self, b, None)?.to_scalar::<f32>()? as f64;
                n += 1;
            }
        }
        Ok(BTreeMap::from([("val_ce".to_string(), sum / n as f64)]))
    }
}

/// A resumable source: the samples of (epoch, position) are a pure function of both; a
/// three-class problem a small MLP learns.
struct ToyData {
    epoch: u64,
    position: usize,
    steps_per_epoch: usize,
}

impl ToyData {
    fn new(steps_per_epoch: usize) -> Self {
        Self { epoch: 0, position: 0, steps_per_epoch }
    }

    fn micro(&self, i: usize) -> ToyBatch {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(
            self.epoch * 1000 + (self.position * MICRO + i) as u64,
        );
        let x: Vec<f32> = (0..ROWS * 5).map(|_| r.random::<f32>() * 4.0 - 2.0).collect();
        let y: Vec<u32> = x
            .chunks(5)
            .map(|row| {
                if row[0] > 0.5 {
                    0
                } else if row[1] > 0.0 {
                    1
                } else {
                    2
                }
            })
            .collect();
        ToyBatch {
            x: Tensor::from_vec(x, (ROWS, 5), &Device::Cpu).unwrap(),
            y: Tensor::from_vec(y, ROWS, &Device::Cpu).unwrap(),
        }
    }
}

impl Batches for ToyData {
    type Batch = ToyBatch;

    fn start_epoch(&mut self, epoch: u64, cursor: Option<LoaderState>) -> Result<()> {
        self.epoch = epoch;
        self.position = cursor.map_or(0, |c| c.position);
        Ok(())
    }

    fn next(&mut self) -> Result<Fetched<ToyBatch>> {
        if self.position == self.steps_per_epoch {
            return Ok(Fetched::EndOfEpoch);
        }
        let micro = (0..MICRO).map(|i| self.micro(i)).collect();
        self.position += 1;
        let cursor = Some(LoaderState { seed: 0, epoch: self.epoch, position: self.position });
        Ok(Fetched::Step(StepBatch { micro, samples: (MICRO * ROWS) as u64, skipped: 0, cursor }))
    }
}

fn settings(dir: &Path, total: u64, every: SaveEvery) -> Settings {
    Settings {
        run_dir: dir.to_path_buf(),
        title: "toy".into(),
        seed: 3,
        rng_stream: "train".into(),
        optimizer: AdamWConfig { lr: 2e-2, ..AdamWConfig::default() },
        max_grad_norm: Some(0.5),
        schedule: LrSchedule::LinearWarmupCosine {
            warmup_steps: 2,
            warmup_lr: 1e-3,
            init_lr: 2e-2,
            min_lr: 1e-3,
            total_steps: total,
        },
        stop_after: total,
        guard: GuardConfig::default(),
        checkpoints: Some(CheckpointSettings {
            every,
            retention: Retention { keep_last: 100, keep_best: true },
        }),
        validation: None,
        log_every_steps: 1,
        plot_every_steps: None,
        resume: false,
    }
}

fn params(varmap: &VarMap) -> ParamStore {
    ParamStore::from_varmap(varmap, DecayRule::Blip2)
}

fn bits(varmap: &VarMap) -> BTreeMap<String, Vec<u32>> {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect(),
            )
        })
        .collect()
}

fn losses(dir: &Path) -> Vec<(u64, u64)> {
    read_metrics(&dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| (r.step, r.losses["ce"].to_bits()))
        .collect()
}

fn checkpoints(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_run_stopped_and_resumed_across_an_epoch_equals_one_run_bit_for_bit() {
    let total = 8; // epochs of 3 steps: the stop at 4 is inside the second epoch
    let a_dir = tempfile::tempdir().unwrap();
    let vm_a = VarMap::new();
    let toy_a = Toy::new(&vm_a);
    run(
        &settings(a_dir.path(), total, SaveEvery::Steps(2)),
        &params(&vm_a),
        &toy_a,
        &mut ToyData::new(STEPS_PER_EPOCH),
        Extras::default(),
    )
    .unwrap();

    let b_dir = tempfile::tempdir().unwrap();
    let mut first = settings(b_dir.path(), total, SaveEvery::Steps(2));
    first.stop_after = 4;
    {
        let vm = VarMap::new();
        let toy = Toy::new(&vm);
        run(&first, &params(&vm), &toy, &mut ToyData::new(STEPS_PER_EPOCH), Extras::default())
            .unwrap();
    }
    // Everything rebuilt from scratch, as a new process would.
    let vm_b = VarMap::new();
    let toy_b = Toy::new(&vm_b);
    let resumed = Settings { resume: true, ..settings(b_dir.path(), total, SaveEvery::Steps(2)) };
    let summary = run(
        &resumed,
        &params(&vm_b),
        &toy_b,
        &mut ToyData::new(STEPS_PER_EPOCH),
        Extras::default(),
    )
    .unwrap();

    assert_eq!(summary.steps, total);
    assert_eq!(losses(b_dir.path()), losses(a_dir.path()));
    assert_eq!(losses(a_dir.path()).len(), total as usize);
    assert_eq!(bits(&vm_b), bits(&vm_a));
    // The last checkpoints agree too: AdamW moments and step counts, and the whole training
    // state (RNG, loader cursor, guard, epoch).
    let last =
        |d: &Path, f: &str| std::fs::read(d.join("checkpoints/step-000008").join(f)).unwrap();
    assert_eq!(last(b_dir.path(), "optim.safetensors"), last(a_dir.path(), "optim.safetensors"));
    assert_eq!(last(b_dir.path(), "state.json"), last(a_dir.path(), "state.json"));
    // Every part of the step was in use: clipping, and the epoch boundary.
    let records = read_metrics(&a_dir.path().join("metrics.jsonl")).unwrap();
    assert!(records.iter().any(|r| r.extra.contains_key("clip_coef")), "clipping never active");
    assert_eq!(records.last().unwrap().epoch, 2);

    // The comparison is sensitive: a resumed run whose data restarts the epoch differs.
    let c_dir = tempfile::tempdir().unwrap();
    let mut first = settings(c_dir.path(), total, SaveEvery::Steps(2));
    first.stop_after = 4;
    let vm = VarMap::new();
    let toy = Toy::new(&vm);
    run(&first, &params(&vm), &toy, &mut ToyData::new(STEPS_PER_EPOCH), Extras::default()).unwrap();
    let vm_c = VarMap::new();
    let toy_c = Toy::new(&vm_c);
    struct Forgetful(ToyData);
    impl Batches for Forgetful {
        type Batch = ToyBatch;
        fn start_epoch(&mut self, epoch: u64, _: Option<LoaderState>) -> Result<()> {
            self.0.start_epoch(epoch, None)
        }
        fn next(&mut self) -> Result<Fetched<ToyBatch>> {
            self.0.next()
        }
    }
    let resumed = Settings { resume: true, ..settings(c_dir.path(), total, SaveEvery::Steps(2)) };
    run(
        &resumed,
        &params(&vm_c),
        &toy_c,
        &mut Forgetful(ToyData::new(STEPS_PER_EPOCH)),
        Extras::default(),
    )
    .unwrap();
    assert_ne!(bits(&vm_c), bits(&vm_a));
}

#[test]
fn without_a_step_interval_a_checkpoint_is_saved_at_each_epoch_end_and_the_loss_falls() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VarMap::new();
    let toy = Toy::new(&vm);
    let steps = 30; // ten epochs of three steps
    let s = run(
        &settings(dir.path(), steps, SaveEvery::Epoch),
        &params(&vm),
        &toy,
        &mut ToyData::new(STEPS_PER_EPOCH),
        Extras::default(),
    )
    .unwrap();
    let every_epoch: Vec<String> = (1..=10).map(|e| format!("step-{:06}", e * 3)).collect();
    assert_eq!(checkpoints(dir.path()), every_epoch);
    // It trains: the mean loss of the last tenth is well below the first tenth's.
    let (first, last) = (s.first["ce"], s.last["ce"]);
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    assert!(dir.path().join("curves.png").is_file());
}

#[test]
fn validation_keeps_the_best_model_and_names_a_missing_metric() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VarMap::new();
    let toy = Toy::new(&vm);
    let mut s = settings(dir.path(), 6, SaveEvery::Steps(3));
    s.validation = Some(ValidationSettings {
        every_steps: 2,
        metric: "val_ce".into(),
        higher_is_better: false,
    });
    let written: RefCell<Vec<PathBuf>> = RefCell::new(Vec::new());
    let write = |d: &Path| -> Result<()> {
        written.borrow_mut().push(d.to_path_buf());
        Ok(())
    };
    let mut val = ToyData::new(2);
    let summary = run(
        &s,
        &params(&vm),
        &toy,
        &mut ToyData::new(STEPS_PER_EPOCH),
        Extras { validation: Some(&mut val), write_model: Some(&write) },
    )
    .unwrap();
    let best = summary.best.expect("a best metric");
    assert_eq!(best.name, "val_ce");
    let written = written.into_inner();
    assert!(written.iter().any(|d| d.ends_with("best")), "{written:?}");
    assert_eq!(written.last().unwrap(), &dir.path().join("model"));
    let logged: Vec<u64> = read_metrics(&dir.path().join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter(|r| r.extra.contains_key("val_ce"))
        .map(|r| r.step)
        .collect();
    assert_eq!(logged, vec![1, 3, 5]);

    let other = tempfile::tempdir().unwrap();
    let vm = VarMap::new();
    let toy = Toy::new(&vm);
    let mut s = settings(other.path(), 6, SaveEvery::Steps(3));
    s.validation = Some(ValidationSettings {
        every_steps: 2,
        metric: "r_mean".into(),
        higher_is_better: true,
    });
    let mut val = ToyData::new(2);
    let err = run(
        &s,
        &params(&vm),
        &toy,
        &mut ToyData::new(STEPS_PER_EPOCH),
        Extras { validation: Some(&mut val), write_model: None },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("validation.metric `r_mean`")
            && err.to_string().contains("val_ce"),
        "{err}"
    );
}

#[test]
fn trainable_tensors_without_a_gradient_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VarMap::new();
    let toy = Toy::new(&vm);
    let s = run(
        &settings(dir.path(), 2, SaveEvery::Steps(2)),
        &params(&vm),
        &toy,
        &mut ToyData::new(STEPS_PER_EPOCH),
        Extras::default(),
    )
    .unwrap();
    assert!(s.without_grad.is_empty(), "{:?}", s.without_grad);
    // A trainable tensor the loss never reads.
    let other = tempfile::tempdir().unwrap();
    let unused =
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu).get((2, 2), "unused").unwrap();
    drop(unused);
    let s = run(
        &settings(other.path(), 2, SaveEvery::Steps(2)),
        &params(&vm),
        &toy,
        &mut ToyData::new(STEPS_PER_EPOCH),
        Extras::default(),
    )
    .unwrap();
    assert_eq!(s.without_grad, vec!["unused".to_string()]);
}

#[test]
fn a_run_directory_with_checkpoints_is_only_continued_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VarMap::new();
    let toy = Toy::new(&vm);
    let s = settings(dir.path(), 2, SaveEvery::Steps(1));
    run(&s, &params(&vm), &toy, &mut ToyData::new(STEPS_PER_EPOCH), Extras::default()).unwrap();
    let err = run(&s, &params(&vm), &toy, &mut ToyData::new(STEPS_PER_EPOCH), Extras::default())
        .unwrap_err();
    assert!(err.to_string().contains("already has checkpoints"), "{err}");
}
