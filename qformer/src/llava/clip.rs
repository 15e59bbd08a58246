//! HF `CLIPVisionModel` (the LLaVA vision tower): embeddings (class token + patch convolution +
//! position table), `pre_layrnorm`, pre-LN encoder layers, and every hidden state so LLaVA can
//! pick `vision_feature_layer`.
//!
//! Reference: transformers 4.57 `models/clip/modeling_clip.py` (`CLIPVisionEmbeddings`,
//! `CLIPAttention`, `CLIPMLP`, `CLIPEncoderLayer`, `CLIPVisionTransformer`). The hidden states
//! are HF's `output_hidden_states=True` tuple: entry 0 is the `pre_layrnorm` output, entry `i`
//! the output of encoder layer `i - 1`; `post_layernorm` only feeds the pooled output, which LLaVA
//! never reads, so it is not loaded. Mirrors `crate::model::vision` (the BLIP-2 ViT) and uses only
//! ops with a backward (the crate's LayerNorm / softmax / GELU).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use serde::Deserialize;

use super::Activation;
use crate::nn::{LayerNorm, Linear};
use crate::Error;

fn d_768() -> usize {
    768
}
fn d_3072() -> usize {
    3072
}
fn d_12() -> usize {
    12
}
fn d_3() -> usize {
    3
}
fn d_224() -> usize {
    224
}
fn d_32() -> usize {
    32
}
fn d_quick_gelu() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}

/// HF `CLIPVisionConfig` (HF defaults for absent fields).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    #[serde(default = "d_3072")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    #[serde(default = "d_3")]
    pub num_channels: usize,
    #[serde(default = "d_224")]
    pub image_size: usize,
    #[serde(default = "d_32")]
    pub patch_size: usize,
    #[serde(default = "d_quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Patches + the class token.
    pub fn num_positions(&self) -> usize {
        self.num_patches() + 1
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(Error::Config(format!("vision_config: {m}")));
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return bad(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        Activation::from_hf(&self.hidden_act)?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct ClipEmbeddings {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
}

impl ClipEmbeddings {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let conv_cfg = Conv2dConfig { stride: cfg.patch_size, ..Default::default() };
        // CLIP's patch convolution has no bias.
        let patch_embedding = candle_nn::conv2d_no_bias(
            cfg.num_channels,
            cfg.hidden_size,
            cfg.patch_size,
            conv_cfg,
            vb.pp("patch_embedding"),
        )?;
        let class_embedding = vb.get(cfg.hidden_size, "class_embedding")?;
        // In the class embedding's dtype: a frozen builder keeps tables in their stored half
        // dtype (`weights::frozen_var_builder`), and this one is added to the activations.
        let position_embedding = vb
            .get((cfg.num_positions(), cfg.hidden_size), "position_embedding.weight")?
            .to_dtype(class_embedding.dtype())?;
        Ok(Self { patch_embedding, class_embedding, position_embedding })
    }

    // pixels: [B, C, H, W] -> [B, 1 + (H/p)*(W/p), D]
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let d = self.class_embedding.dim(0)?;
        let dtype = self.class_embedding.dtype();
        let patches = self.patch_embedding.forward(&pixels.to_dtype(dtype)?)?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?;
        let n = patches.dim(1)? + 1;
        let table = self.position_embedding.dim(0)?;
        if n != table {
            candle_core::bail!(
                "image {:?} gives {n} vision tokens but the position table has {table} \
                 (pixel size does not match vision_config.image_size; interpolation is not implemented)",
                pixels.dims()
            )
        }
        let cls = self.class_embedding.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding.unsqueeze(0)?)
    }
}

#[derive(Debug, Clone)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    scale: f64,
}

impl ClipAttention {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let lin = |name: &str| crate::nn::linear_gemm_layout(h, h, true, vb.pp(name));
        Ok(Self {
            q_proj: lin("q_proj")?,
            k_proj: lin("k_proj")?,
            v_proj: lin("v_proj")?,
            out_proj: lin("out_proj")?,
            num_heads: cfg.num_attention_heads,
            scale: (cfg.head_dim() as f64).powf(-0.5),
        })
    }

    // x: [B, T, D] -> [B, T, D]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let hd = h / self.num_heads;
        let heads = |p: &Linear| -> Result<Tensor> {
            p.forward(x)?.reshape((b, t, self.num_heads, hd))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = (heads(&self.q_proj)?, heads(&self.k_proj)?, heads(&self.v_proj)?);
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let in_dtype = scores.dtype();
        // HF: softmax in f32, then back to the query dtype.
        let probs = crate::nn::softmax(&scores.to_dtype(DType::F32)?)?.to_dtype(in_dtype)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        self.out_proj.forward(&ctx)
    }
}

#[derive(Debug, Clone)]
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl ClipEncoderLayer {
    fn new(cfg: &ClipVisionConfig, act: Activation, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            layer_norm1: LayerNorm::new(h, cfg.layer_norm_eps, vb.pp("layer_norm1"))?,
            self_attn: ClipAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm2: LayerNorm::new(h, cfg.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: crate::nn::linear_gemm_layout(h, i, true, vb.pp("mlp.fc1"))?,
            fc2: crate::nn::linear_gemm_layout(i, h, true, vb.pp("mlp.fc2"))?,
            act,
        })
    }

    // x: [B, T, D] -> [B, T, D]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?)?)?;
        let mlp = self
            .fc2
            .forward(&self.act.apply(&self.fc1.forward(&self.layer_norm2.forward(&x)?)?)?)?;
        x + mlp
    }
}

/// HF `CLIPVisionModel` without `post_layernorm` (LLaVA reads hidden states only).
#[derive(Debug, Clone)]
pub struct ClipVisionModel {
    embeddings: ClipEmbeddings,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipEncoderLayer>,
    cfg: ClipVisionConfig,
}

impl ClipVisionModel {
    /// `vb` points at `vision_model` (`embeddings.*`, `pre_layrnorm.*`, `encoder.layers.*`).
    pub fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> crate::Result<Self> {
        cfg.validate()?;
        let act = Activation::from_hf(&cfg.hidden_act)?;
        let embeddings = ClipEmbeddings::new(cfg, vb.pp("embeddings"))?;
        let pre_layrnorm =
            LayerNorm::new(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("pre_layrnorm"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(cfg, act, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { embeddings, pre_layrnorm, layers, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    /// Number of HF hidden states: the `pre_layrnorm` output plus one per layer.
    pub fn num_hidden_states(&self) -> usize {
        self.layers.len() + 1
    }

    /// HF `hidden_states[0..=last]` (`last` < [`Self::num_hidden_states`]); layers after `last`
    /// are not run.
    // pixels: [B, C, H, W] -> last + 1 tensors [B, 1 + N, D]
    pub fn hidden_states(&self, pixels: &Tensor, last: usize) -> Result<Vec<Tensor>> {
        if last >= self.num_hidden_states() {
            candle_core::bail!(
                "hidden state {last} requested, the CLIP tower has {} (pre_layrnorm + {} layers)",
                self.num_hidden_states(),
                self.layers.len()
            )
        }
        let mut x = self.pre_layrnorm.forward(&self.embeddings.forward(pixels)?)?;
        let mut out = Vec::with_capacity(last + 1);
        for layer in &self.layers[..last] {
            let next = layer.forward(&x)?;
            out.push(x);
            x = next;
        }
        out.push(x);
        Ok(out)
    }

    /// HF `last_hidden_state` (the last layer's output, before `post_layernorm`).
    // pixels: [B, C, H, W] -> [B, 1 + N, D]
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut hs = self.hidden_states(pixels, self.layers.len())?;
        Ok(hs.pop().expect("at least one hidden state"))
    }
}
