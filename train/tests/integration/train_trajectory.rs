//! Ten AdamW steps of the stage-one step function against the ORIGINAL LAVIS 1.0.2 training
//! loop (tests/fixtures/hf-tiny/itm/stage1_trajectory.{json,safetensors}, made by
//! tools/lavis_stage1_reference.py): LAVIS .pth + HF ViT, ln_vision eps 1e-5, hardest negatives,
//! constant lr 1e-3, wd 0.05, LAVIS 1.0.2 decay grouping, no clipping.

use crate::common::{fixture, get, lavis_stage1_model, load_tensors, max_abs_diff};
use qformer::masks::PaddingMask;
use qformer::objectives::{NegativeMode, ObjectiveConfig};
use train::tasks::{ImageBatch, StageOne, StageOneBatch};
use train::{
    optimizer_step, rng, AdamW, AdamWConfig, DecayRule, ParamStore, StepGuard, StepSettings,
    StepVerdict, Task, TrainState,
};

const BOS: u32 = 183; // [DEC] in the fixture tokenizer
const LOSS_TOL: f64 = 1e-3;

#[test]
fn ten_adamw_steps_follow_the_lavis_trajectory() {
    let loaded = lavis_stage1_model(Some(1e-5));
    let varmap = loaded.varmap.as_ref().unwrap();
    let params = ParamStore::from_varmap(varmap, DecayRule::LavisBase);

    let traj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("itm/stage1_trajectory.json")).unwrap())
            .unwrap();
    // The decay groups must be LAVIS's, or the comparison below tests something else.
    let decayed = params.iter().filter(|(_, p)| p.trainable && p.decay).count();
    let not_decayed = params.iter().filter(|(_, p)| p.trainable && !p.decay).count();
    assert_eq!(decayed as u64, traj["num_decayed_tensors"].as_u64().unwrap());
    assert_eq!(not_decayed as u64, traj["num_no_decay_tensors"].as_u64().unwrap());

    let mut opt = AdamW::new(AdamWConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.05,
    });
    let mut state = TrainState::new(rng::seeded(0), StepGuard::new(3, 5.0));
    let objectives = ObjectiveConfig {
        negatives: NegativeMode::Hardest,
        bos_token_id: BOS,
        pad_token_id: 0,
        ..Default::default()
    };
    let e = load_tensors("itm/expected_losses.safetensors");
    let mask = PaddingMask::from_tensor(get(&e, "text_attention_mask")).unwrap();
    let batch = StageOneBatch {
        image: ImageBatch::Pixels(get(&e, "pixel_values").clone()),
        input_ids: get(&e, "text_input_ids").clone(),
        attention_mask: mask,
        image_ids: None,
    };
    // The task and the step function `blip2 pretrain` runs through `train::run`.
    let task = StageOne { model: &loaded.model, objectives };
    let settings = StepSettings { lr: 1e-3, max_grad_norm: None, samples: 4 };

    let steps = traj["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 10);
    for want in steps {
        let out =
            optimizer_step(&params, &mut opt, &mut state, 1, settings, |_, r| task.loss(&batch, r))
                .unwrap();
        assert_eq!(out.verdict, StepVerdict::Apply { spike: false });
        let step = want["step"].as_u64().unwrap();
        for (ours, theirs) in [
            (out.parts["itc"], "itc"),
            (out.parts["itm"], "itm"),
            (out.parts["itg"], "itg"),
            (out.loss, "total"),
        ] {
            let w = want[theirs].as_f64().unwrap();
            assert!((ours - w).abs() < LOSS_TOL, "step {step} {theirs}: ours {ours}, LAVIS {w}");
        }
    }

    // Final parameters, LAVIS names mapped to ours.
    let final_params = load_tensors("itm/stage1_trajectory.safetensors");
    assert!(!final_params.is_empty());
    for (lavis_name, want) in &final_params {
        let canonical = qformer::weights::names::lavis_to_canonical(lavis_name)
            .unwrap_or_else(|| panic!("no canonical name for {lavis_name}"));
        let got = &params.get(&canonical).unwrap_or_else(|| panic!("no parameter {canonical}")).var;
        let d = max_abs_diff(got.as_tensor(), want);
        // 1e-4 is a tenth of one step's movement (lr = 1e-3): a wrong update rule or decay
        // group would be off by far more.
        eprintln!("{lavis_name}: max abs diff {d:e}");
        assert!(d < 1e-4, "{lavis_name} ({canonical}): max abs diff {d:e}");
    }
}
