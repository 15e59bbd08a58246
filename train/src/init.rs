//! Seeded fresh initialization (candle's own init draws from an unseedable RNG): BERT-like
//! N(0, 0.02) for matrices, embeddings, convolutions and the query tokens; LayerNorm 1 / 0;
//! biases 0; `temp` 0.07 (LAVIS). [`FreshModel`] builds a whole stage-one model this way; the
//! BERT start (`weights::bert`) overwrites the copied tensors of such a model afterwards, as
//! `from_pretrained` does in LAVIS.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;

use crate::rng::{self, TrainRng};
use crate::{Error, Result};
use qformer::model::{Blip2Qformer, ModelParts};
use qformer::Blip2Config;

const STD: f64 = 0.02;
const TEMP: f32 = 0.07;

/// Overwrites every variable, visiting them by sorted name so the result only depends on the seed.
pub fn init_fresh(vars: &[(String, Var)], rng: &mut TrainRng) -> Result<()> {
    let mut vars: Vec<&(String, Var)> = vars.iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in vars {
        let n = var.elem_count();
        let values: Vec<f32> = if name == "temp" || name.ends_with(".temp") {
            vec![TEMP; n]
        } else if name.ends_with("bias") {
            vec![0.0; n]
        } else if var.dims().len() == 1 {
            vec![1.0; n] // LayerNorm weight
        } else {
            (0..n).map(|_| (normal(rng) * STD) as f32).collect()
        };
        let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// `torch.nn.Linear`'s default init (kaiming-uniform with `a = sqrt(5)`): every `weight`
/// `[out, in]` and its `bias` uniform in `±1/sqrt(in)`, drawn in sorted-name order (a bias
/// takes the fan-in of the weight beside it).
pub fn init_torch_linear(vars: &[(String, Var)], rng: &mut TrainRng) -> Result<()> {
    let mut vars: Vec<&(String, Var)> = vars.iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let fan_in = |name: &str| -> Result<usize> {
        let weight = match name.strip_suffix("bias") {
            Some(prefix) => format!("{prefix}weight"),
            None => name.to_string(),
        };
        let w = vars.iter().find(|(n, _)| *n == weight).ok_or_else(|| {
            Error::Msg(format!("{name}: a Linear's bias needs its weight {weight}"))
        })?;
        match w.1.dims() {
            [_, i] => Ok(*i),
            d => Err(Error::Msg(format!("{weight}: a Linear weight is 2-D, got {d:?}"))),
        }
    };
    for (name, var) in &vars {
        let bound = 1.0 / (fan_in(name)? as f64).sqrt();
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
            .collect();
        let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// Box-Muller: one standard normal draw from two uniforms.
fn normal(rng: &mut TrainRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A stage-one model (ViT, Q-Former with text side, heads, ITG head) initialized from `seed`.
pub struct FreshModel {
    pub model: Blip2Qformer,
    /// The frozen ViT's variables: initialized too, never handed to the optimizer.
    pub frozen: VarMap,
    /// Everything trainable, under canonical names.
    pub trainable: VarMap,
}

/// Where the fresh values come from.
// Made once per model: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum InitStreams {
    /// One stream, the frozen variables first (`blip2 pretrain`).
    Shared(TrainRng),
    /// A stream per group (the quickstart's `init/vision` and `init/qformer`).
    PerGroup { frozen: TrainRng, trainable: TrainRng },
}

impl FreshModel {
    /// Initialized from the `init` stream of `seed`.
    pub fn new(cfg: &Blip2Config, seed: u64, device: &Device) -> Result<Self> {
        Self::with_streams(cfg, InitStreams::Shared(rng::substream(seed, "init")), device)
    }

    pub fn with_streams(cfg: &Blip2Config, streams: InitStreams, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let parts = ModelParts::from_config(cfg, true);
        let frozen = VarMap::new();
        let trainable = VarMap::new();
        let model = Blip2Qformer::new(
            cfg,
            parts,
            cfg.vision_config.layer_norm_eps,
            VarBuilder::from_varmap(&frozen, DType::F32, device),
            VarBuilder::from_varmap(&trainable, DType::F32, device),
        )?;
        match streams {
            InitStreams::Shared(mut r) => {
                init_fresh(&named_vars(&frozen)?, &mut r)?;
                init_fresh(&named_vars(&trainable)?, &mut r)?;
            }
            InitStreams::PerGroup { frozen: mut f, trainable: mut t } => {
                init_fresh(&named_vars(&frozen)?, &mut f)?;
                init_fresh(&named_vars(&trainable)?, &mut t)?;
            }
        }
        Ok(Self { model, frozen, trainable })
    }
}

/// The variables of a `VarMap` with their names.
pub fn named_vars(vm: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = vm.data().lock().map_err(|_| Error::Msg("VarMap lock poisoned".into()))?;
    Ok(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}
