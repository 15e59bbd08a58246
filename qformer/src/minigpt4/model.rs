//! The MiniGPT-4 model: `llama_proj(qformer(query_tokens, ln_vision(vit(pixels))))` as LLaMA
//! input rows.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::parts::Parts;
use crate::connector::Connector;
use crate::error::{Error, Result};
use crate::llm::llama::{LlamaConfig, LlamaForCausalLm};
use crate::model::{Blip2Qformer, ImageInput, ModelParts};
use crate::nn::Linear;
use crate::weights::{canonical_tensors, load, read_lavis_pth, LoadOptions, TensorSet};

const PROJ_WEIGHT: &str = "llama_proj.weight";
const PROJ_BIAS: &str = "llama_proj.bias";

/// MiniGPT-4. Everything but `llama_proj` is constant tensors (no gradients).
#[derive(Clone)]
pub struct MiniGpt4 {
    blip2: Blip2Qformer,
    llama_proj: Linear,
    llm: LlamaForCausalLm,
    parts: Parts,
    /// `llama_proj.weight/bias` as `Var`s when built trainable.
    varmap: Option<VarMap>,
}

impl MiniGpt4 {
    /// Loads the parts named by the TOML at `path`, all constant.
    pub fn from_parts_file(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load(Parts::from_file(path)?, false, device)
    }

    /// As [`Self::from_parts_file`] with `llama_proj` as trainable `Var`s (see [`Self::varmap`]).
    /// Without a projection file the projection starts as `nn.Linear`'s default init:
    /// weight and bias uniform in `±1/sqrt(in_features)`.
    pub fn from_parts_file_trainable(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load(Parts::from_file(path)?, true, device)
    }

    /// Builds the model from resolved parts.
    ///
    /// `qformer` may be an HF BLIP-2 directory (any BLIP-2 class; tensors for the LLM side are
    /// ignored) or a LAVIS `.pth` (with `vision`).
    pub fn load(parts: Parts, trainable: bool, device: &Device) -> Result<Self> {
        let blip2 = load_blip2(&parts.qformer, parts.vision.as_deref(), device)?;
        let llm = load_llama(&parts.llm, device)?;
        let in_dim = blip2.config().qformer_config.hidden_size;
        let out_dim = llm.config().hidden_size;
        let (weight, bias) = match &parts.projection {
            Some(p) => read_projection(p, device)?,
            None => {
                let bound = 1.0 / (in_dim as f64).sqrt();
                (
                    Tensor::rand(-bound as f32, bound as f32, (out_dim, in_dim), device)?,
                    Tensor::rand(-bound as f32, bound as f32, out_dim, device)?,
                )
            }
        };
        let source = parts.projection.as_ref().map(|p| p.display().to_string());
        let source = source.as_deref().unwrap_or("the fresh projection");
        if weight.dims() != [out_dim, in_dim] {
            return Err(Error::Msg(format!(
                "{source}: {PROJ_WEIGHT} has shape {:?}, the model needs [{out_dim}, {in_dim}] \
                 (LLM hidden size {out_dim}, Q-Former hidden size {in_dim})",
                weight.dims()
            )));
        }
        if bias.dims() != [out_dim] {
            return Err(Error::Msg(format!(
                "{source}: {PROJ_BIAS} has shape {:?}, the model needs [{out_dim}] (LLM hidden size)",
                bias.dims()
            )));
        }
        let weight = weight.to_dtype(DType::F32)?;
        let bias = bias.to_dtype(DType::F32)?;
        let (llama_proj, varmap) = if trainable {
            let varmap = VarMap::new();
            let w = Var::from_tensor(&weight)?;
            let b = Var::from_tensor(&bias)?;
            let proj = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
            {
                let mut data =
                    varmap.data().lock().map_err(|_| Error::Msg("VarMap lock poisoned".into()))?;
                data.insert(PROJ_WEIGHT.into(), w);
                data.insert(PROJ_BIAS.into(), b);
            }
            (proj, Some(varmap))
        } else {
            (Linear::new(weight, Some(bias)), None)
        };
        Ok(Self { blip2, llama_proj, llm, parts, varmap })
    }

    /// The trainable `llama_proj.weight/bias` (None when built constant).
    pub fn varmap(&self) -> Option<&VarMap> {
        self.varmap.as_ref()
    }

    /// The resolved parts (prompt template, end symbol, image marker, max_txt_len).
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The BLIP-2 directory's `preprocessor_config.json` (a `BlipImageProcessor`), for the caller
    /// to build its image processor from.
    pub fn preprocessor_config_path(&self) -> PathBuf {
        self.parts.qformer.join("preprocessor_config.json")
    }

    pub fn llama_proj(&self) -> &Linear {
        &self.llama_proj
    }

    /// `ln_vision(ViT(pixels))` (HF `vision_model(pv).last_hidden_state`).
    // pixel_values: [B, 3, H, W] -> [B, N, Dv]
    pub fn vision_features(&self, pixel_values: &Tensor) -> candle_core::Result<Tensor> {
        self.blip2.image_embeds(ImageInput::Pixels(pixel_values))
    }

    /// The Q-Former's query output over the images.
    // pixel_values: [B, 3, H, W] -> [B, Q, H_q]
    pub fn qformer_output(&self, pixel_values: &Tensor) -> candle_core::Result<Tensor> {
        let feats = self.vision_features(pixel_values)?;
        // Eval mode: the RNG feeds dropout only, which is off.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        self.blip2.query_pass(&feats, false, &mut rng)?.query_output()
    }
}

impl Connector for MiniGpt4 {
    fn tokens_per_image(&self) -> usize {
        self.blip2.num_queries()
    }

    // pixel_values: [images, 3, H, W] -> [images, Q, H_llm]
    fn image_embeds(&self, pixel_values: &Tensor) -> candle_core::Result<Tensor> {
        let q = self.qformer_output(pixel_values)?;
        candle_core::Module::forward(&self.llama_proj, &q)?.to_dtype(self.llm.dtype())
    }

    fn language_model(&self) -> &LlamaForCausalLm {
        &self.llm
    }
}

/// An HF BLIP-2 directory, or a LAVIS `.pth` read with the config (and, when it has none, the
/// ViT) of the HF directory `vision`. Only the query path is built: the text embeddings, text
/// FFNs, heads and LLM-side tensors a source may carry are dropped, not required.
fn load_blip2(path: &Path, vision: Option<&Path>, device: &Device) -> Result<Blip2Qformer> {
    let opts = LoadOptions { device: device.clone(), ..Default::default() };
    let (mut cfg, set) = if path.is_file() && path.extension().is_some_and(|e| e == "pth") {
        let vision = vision.ok_or_else(|| {
            Error::Config(format!(
                "{}: a LAVIS .pth qformer needs `vision = \"DIR\"` (an HF BLIP-2 directory for config.json and the ViT)",
                path.display()
            ))
        })?;
        let (cfg, hf) = TensorSet::from_hf_dir(vision, device)?;
        let mut set = read_lavis_pth(path, device)?;
        if !set.contains("vision_model.embeddings.patch_embedding.weight") {
            set = set.merge(hf.vision_encoder_only())?;
        }
        (cfg, set)
    } else if path.is_dir() {
        TensorSet::from_hf_dir(path, device)?
    } else {
        return Err(Error::Msg(format!(
            "{}: qformer must be an HF BLIP-2 directory (config.json + model.safetensors) or a LAVIS .pth",
            path.display()
        )));
    };
    // MiniGPT-4 deletes the Q-Former's text side; the query path does not read it.
    cfg.qformer_config.use_qformer_text_input = false;
    let parts = ModelParts { vision: true, text: false, stage_one_heads: false, lm_head: false };
    let wanted: HashSet<String> =
        canonical_tensors(&cfg, parts).into_iter().map(|s| s.name).collect();
    let set = set.filter(|n| wanted.contains(n));
    Ok(load(&cfg, &set, parts, &opts)?.model)
}

fn load_llama(dir: &Path, device: &Device) -> Result<LlamaForCausalLm> {
    let cfg = LlamaConfig::from_file(dir.join("config.json"))?;
    let tensors = TensorSet::from_hf_weights(dir, device)?.into_map();
    // Frozen: the matrices stay in the checkpoint's dtype, activations are f32.
    let vb = crate::weights::frozen_var_builder(tensors, DType::F32, device);
    LlamaForCausalLm::load(vb, &cfg).map_err(|e| Error::Msg(format!("{}: {e}", dir.display())))
}

/// `llama_proj.weight/bias` from `torch.save({"model": ...})` or a `.safetensors`.
fn read_projection(path: &Path, device: &Device) -> Result<(Tensor, Tensor)> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let is_st = path.extension().is_some_and(|e| e == "safetensors");
    let tensors: HashMap<String, Tensor> = if is_st {
        candle_core::safetensors::load(path, device)
            .map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?
    } else {
        candle_core::pickle::read_all_with_key(path, Some("model"))
            .map_err(|e| Error::Msg(format!("{}: cannot read checkpoint: {e}", path.display())))?
            .into_iter()
            .map(|(k, t)| t.to_device(device).map(|t| (k, t)))
            .collect::<candle_core::Result<_>>()?
    };
    let get = |name: &str| {
        tensors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Msg(format!("{}: no tensor {name}", path.display())))
    };
    Ok((get(PROJ_WEIGHT)?, get(PROJ_BIAS)?))
}
