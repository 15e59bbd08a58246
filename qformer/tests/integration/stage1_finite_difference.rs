//! Every trainable tensor of the stage-one model gets the gradient that finite differences of
//! the total loss (ITC + ITM + ITG) predict. This is what proves that no op on the training path
//! silently drops its backward (candle's fused LayerNorm / softmax_last_dim would show up here
//! as an analytic derivative of zero against a non-zero numeric one).
//!
//! f32 model (the Q-Former is built in f32, as in HF/LAVIS), so the check is a directional
//! derivative along a fixed pseudo-random direction per tensor with a step that keeps f32
//! rounding well below the tolerance; hardest negatives keep the loss a smooth function of the
//! weights around the fixture point. ITC runs with `ItcGradient::Both` here: LAVIS's own
//! gradient (gathered side detached) is pinned against PyTorch in `parity_objectives.rs`.

use crate::common::{self, get, lavis_stage1_model, load_tensors};
use candle_core::{DType, Tensor};
use qformer::masks::PaddingMask;
use qformer::model::ImageInput;
use qformer::objectives::{
    stage_one_losses, ItcGradient, NegativeMode, ObjectiveConfig, PretrainBatch,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BOS: u32 = 183; // [DEC] in the fixture tokenizer

#[test]
fn every_trainable_tensor_matches_finite_differences() {
    let dev = common::test_device();
    let loaded = lavis_stage1_model(None);
    let varmap = loaded.varmap.as_ref().unwrap();
    let e = load_tensors("itm/expected_losses.safetensors");
    let mask = PaddingMask::from_tensor(get(&e, "text_attention_mask")).unwrap();
    let batch = PretrainBatch {
        image: ImageInput::Pixels(get(&e, "pixel_values")),
        input_ids: get(&e, "text_input_ids"),
        attention_mask: &mask,
        image_ids: None,
    };
    let ocfg = ObjectiveConfig {
        negatives: NegativeMode::Hardest,
        bos_token_id: BOS,
        pad_token_id: 0,
        // LAVIS's default detaches the gathered side of ITC (a deliberate non-gradient); the
        // true derivative of the loss is what finite differences measure.
        itc_gradient: ItcGradient::Both,
        ..Default::default()
    };
    // (total loss, chosen ITM negatives): the negatives are a discrete choice, so a step that
    // changes them is not measuring a derivative.
    let total = || {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let out = stage_one_losses(&loaded.model, &batch, &ocfg, false, &mut rng).unwrap();
        let negs = (out.negatives.image_for_text.clone(), out.negatives.text_for_image.clone());
        (out.total, negs)
    };
    let scalar = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();

    let (loss0, negs0) = total();
    let grads = loss0.backward().unwrap();
    let mut vars: Vec<(String, candle_core::Var)> =
        varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(vars.len() > 40, "expected the whole stage-one model, got {} tensors", vars.len());

    let mut dir_rng = ChaCha8Rng::seed_from_u64(7);
    let mut failures = Vec::new();
    for (name, var) in &vars {
        let g = grads.get(var.as_tensor());
        let original = var.as_tensor().copy().unwrap();
        let n = original.elem_count();
        let dir: Vec<f32> = (0..n).map(|_| dir_rng.random_range(-1.0f32..1.0)).collect();
        let dir = Tensor::from_vec(dir, original.shape(), &dev).unwrap();
        let analytic = match g {
            Some(g) => scalar(&(g * &dir).unwrap().sum_all().unwrap()),
            None => 0.0,
        };
        // Step relative to the tensor's scale so f32 rounding of the weights stays negligible.
        let scale = scalar(&original.abs().unwrap().mean_all().unwrap()).max(0.25);
        let mut h = 2e-3 * scale;
        let eval_at = |step: f64| {
            var.set(&(&original + (&dir * step).unwrap()).unwrap()).unwrap();
            let (loss, negs) = total();
            (scalar(&loss), negs == negs0)
        };
        let mut numeric = f64::NAN;
        for _ in 0..6 {
            let ((plus, same_p), (minus, same_m)) = (eval_at(h), eval_at(-h));
            if same_p && same_m {
                numeric = (plus - minus) / (2.0 * h);
                break;
            }
            h /= 4.0;
        }
        var.set(&original).unwrap();
        assert!(numeric.is_finite(), "{name}: every step changed the ITM negatives");
        let err = (numeric - analytic).abs();
        let ok = err <= 2e-2 * numeric.abs().max(analytic.abs()) + 5e-3;
        if !ok || (numeric.abs() > 1e-2 && g.is_none()) {
            failures
                .push(format!("{name}: autograd {analytic:.6} vs finite difference {numeric:.6}"));
        }
    }
    assert!(failures.is_empty(), "gradient mismatches:\n{}", failures.join("\n"));
}
