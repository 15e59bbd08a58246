//! Learning-rate schedules as pure functions of the position in training.

use std::f64::consts::PI;

/// Where training is: the global optimizer step, the epoch, and the step inside that epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedulePos {
    pub step: u64,
    pub epoch: u64,
    pub step_in_epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// Linear warmup from `warmup_lr` to `init_lr` over `warmup_steps`, then a per-step cosine
    /// from `init_lr` down to `min_lr` at `total_steps` (held there afterwards). What the paper
    /// describes (§3.4) and what a step-budgeted run needs.
    LinearWarmupCosine {
        warmup_steps: u64,
        warmup_lr: f64,
        init_lr: f64,
        min_lr: f64,
        total_steps: u64,
    },
    /// LAVIS `LinearWarmupCosineLRScheduler` exactly (lavis/common/optims.py): in epoch 0,
    /// `min(init_lr, warmup_lr + (init_lr - warmup_lr)·i/max(warmup_steps, 1))` with `i` the step
    /// inside the epoch (flat at `init_lr` once warmed up); in epoch `e ≥ 1`, the cosine
    /// `(init_lr - min_lr)·½·(1 + cos(π·e/max_epoch)) + min_lr`, constant for the whole epoch.
    LavisEpochCosine {
        warmup_steps: u64,
        warmup_lr: f64,
        init_lr: f64,
        min_lr: f64,
        max_epoch: u64,
    },
    Constant {
        lr: f64,
    },
}

impl LrSchedule {
    pub fn lr(&self, pos: SchedulePos) -> f64 {
        match *self {
            LrSchedule::LinearWarmupCosine {
                warmup_steps,
                warmup_lr,
                init_lr,
                min_lr,
                total_steps,
            } => {
                if pos.step < warmup_steps {
                    return warmup_lr
                        + (init_lr - warmup_lr) * pos.step as f64 / warmup_steps as f64;
                }
                let span = total_steps.saturating_sub(warmup_steps).max(1);
                let progress = ((pos.step - warmup_steps) as f64 / span as f64).min(1.0);
                min_lr + (init_lr - min_lr) * 0.5 * (1.0 + (PI * progress).cos())
            }
            LrSchedule::LavisEpochCosine {
                warmup_steps,
                warmup_lr,
                init_lr,
                min_lr,
                max_epoch,
            } => {
                if pos.epoch == 0 {
                    let i = pos.step_in_epoch as f64;
                    init_lr.min(warmup_lr + (init_lr - warmup_lr) * i / warmup_steps.max(1) as f64)
                } else {
                    (init_lr - min_lr)
                        * 0.5
                        * (1.0 + (PI * pos.epoch as f64 / max_epoch as f64).cos())
                        + min_lr
                }
            }
            LrSchedule::Constant { lr } => lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: u64) -> SchedulePos {
        SchedulePos { step, epoch: 0, step_in_epoch: step }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-15 + 1e-12 * b.abs(), "{a} vs {b}");
    }

    #[test]
    fn lavis_epoch_cosine_matches_lavis_formula() {
        // Reference (python, lavis/common/optims.py with the pretrain_stage1 values):
        //   warmup_lr_schedule: min(1e-4, 1e-6 + (1e-4 - 1e-6) * i / max(5000, 1))
        //   cosine_lr_schedule: (1e-4 - 1e-5) * 0.5 * (1.0 + math.cos(math.pi * e / 10)) + 1e-5
        // values printed with repr() by tools/train_references.py.
        let s = LrSchedule::LavisEpochCosine {
            warmup_steps: 5000,
            warmup_lr: 1e-6,
            init_lr: 1e-4,
            min_lr: 1e-5,
            max_epoch: 10,
        };
        let e0 = |i| SchedulePos { step: i, epoch: 0, step_in_epoch: i };
        close(s.lr(e0(0)), 1e-06);
        close(s.lr(e0(1)), 1.0198e-06);
        close(s.lr(e0(2500)), 5.05e-05);
        close(s.lr(e0(4999)), 9.99802e-05);
        close(s.lr(e0(5000)), 0.0001);
        close(s.lr(e0(9000)), 0.0001);
        let e = |epoch| SchedulePos { step: 123_456, epoch, step_in_epoch: 17 };
        close(s.lr(e(1)), 9.779754323328192e-05);
        close(s.lr(e(5)), 5.5e-05);
        close(s.lr(e(9)), 1.2202456766718093e-05);
        // Constant inside an epoch, whatever the step.
        assert_eq!(s.lr(e(3)), s.lr(SchedulePos { step: 7, epoch: 3, step_in_epoch: 0 }));
    }

    #[test]
    fn per_step_cosine_warmup_then_decay() {
        let s = LrSchedule::LinearWarmupCosine {
            warmup_steps: 10,
            warmup_lr: 1e-6,
            init_lr: 1e-4,
            min_lr: 1e-5,
            total_steps: 110,
        };
        // warmup_lr + (init_lr - warmup_lr) * step / warmup_steps
        close(s.lr(at(0)), 1e-6);
        close(s.lr(at(5)), 5.05e-05);
        // At the end of warmup the cosine starts at its peak ...
        close(s.lr(at(10)), 1e-4);
        // ... half way through the decay it is the midpoint: 1e-5 + 9e-5 * 0.5 * (1 + cos(pi/2))
        close(s.lr(at(60)), 5.5e-05);
        // 1e-5 + 9e-5 * 0.5 * (1 + cos(pi * 0.25))
        close(s.lr(at(35)), 1e-5 + 9e-5 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2));
        close(s.lr(at(110)), 1e-5);
        close(s.lr(at(500)), 1e-5);
        for w in (0..120).collect::<Vec<_>>().windows(2).skip(10) {
            assert!(s.lr(at(w[1])) <= s.lr(at(w[0])), "not monotone after warmup at {}", w[1]);
        }
    }

    #[test]
    fn schedule_toml_round_trip() {
        let s = LrSchedule::Constant { lr: 3e-4 };
        let txt = toml::to_string(&s).unwrap();
        assert!(txt.contains("kind = \"constant\""), "{txt}");
        assert_eq!(toml::from_str::<LrSchedule>(&txt).unwrap(), s);
    }
}
