//! Frozen EVA ViT (HF `Blip2VisionModel` without its `post_layernorm`).
//!
//! Reference: transformers 4.57 `models/blip_2/modeling_blip_2.py` (`Blip2VisionEmbeddings`,
//! `Blip2Attention`, `Blip2MLP`, `Blip2EncoderLayer`); LAVIS `eva_vit.py`.
//! The ViT is frozen in BLIP-2: its LayerNorm and softmax take the fused (backward-less) kernels
//! whenever nothing tracks a gradient, and [`VisionTransformer::forward`] detaches its output.
//! [`VisionTransformer::forward_trainable`] keeps the graph, for pretraining a small image encoder
//! (the quickstart's contrastive ViT phase): then the same layers use their composite ops.
//! `post_layernorm` (= LAVIS `ln_vision`) IS trained and therefore lives in [`super::blip2`]
//! as a differentiable [`crate::nn::LayerNorm`].

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use crate::nn::{LayerNorm, Linear};

use crate::config::VisionConfig;

#[derive(Debug, Clone)]
struct VisionEmbeddings {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
}

impl VisionEmbeddings {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let conv_cfg = Conv2dConfig { stride: cfg.patch_size, ..Default::default() };
        let patch_embedding = candle_nn::conv2d(
            cfg.num_channels,
            cfg.hidden_size,
            cfg.patch_size,
            conv_cfg,
            vb.pp("patch_embedding"),
        )?;
        let class_embedding = vb.get((1, 1, cfg.hidden_size), "class_embedding")?;
        let position_embedding =
            vb.get((1, cfg.num_positions(), cfg.hidden_size), "position_embedding")?;
        Ok(Self { patch_embedding, class_embedding, position_embedding })
    }

    // pixels: [B, C, H, W] -> [B, 1 + (H/p)*(W/p), Dv]
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let dtype = self.class_embedding.dtype();
        let patches = self.patch_embedding.forward(&pixels.to_dtype(dtype)?)?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?;
        let n = patches.dim(1)? + 1;
        let table = self.position_embedding.dim(1)?;
        if n != table {
            candle_core::bail!(
                "image gives {n} vision tokens but the position table has {table} \
                 (pixel size does not match vision_config.image_size; interpolation is not implemented)"
            )
        }
        let cls = self.class_embedding.broadcast_as((b, 1, self.class_embedding.dim(2)?))?;
        Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding)
    }
}

#[derive(Debug, Clone)]
struct VisionAttention {
    qkv: Linear,
    projection: Linear,
    num_heads: usize,
    scale: f64,
}

impl VisionAttention {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        // HF stores the fused bias cat(q_bias, 0, v_bias); a LAVIS source is converted to that form.
        let qkv = crate::nn::linear_gemm_layout(h, 3 * h, cfg.qkv_bias, vb.pp("qkv"))?;
        let projection = crate::nn::linear_gemm_layout(h, h, true, vb.pp("projection"))?;
        let scale = (cfg.head_dim() as f64).powf(-0.5);
        Ok(Self { qkv, projection, num_heads: cfg.num_attention_heads, scale })
    }

    // x: [B, T, Dv] -> [B, T, Dv]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let hd = h / self.num_heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, t, 3, self.num_heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let probs = crate::nn::softmax(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        self.projection.forward(&ctx)
    }
}

#[derive(Debug, Clone)]
struct VisionLayer {
    layer_norm1: LayerNorm,
    self_attn: VisionAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl VisionLayer {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            layer_norm1: LayerNorm::new(h, cfg.layer_norm_eps, vb.pp("layer_norm1"))?,
            self_attn: VisionAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm2: LayerNorm::new(h, cfg.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: crate::nn::linear_gemm_layout(h, cfg.intermediate_size, true, vb.pp("mlp.fc1"))?,
            fc2: crate::nn::linear_gemm_layout(cfg.intermediate_size, h, true, vb.pp("mlp.fc2"))?,
        })
    }

    // x: [B, T, Dv] -> [B, T, Dv]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?)?)?;
        let mlp = self
            .fc2
            .forward(&crate::nn::gelu(&self.fc1.forward(&self.layer_norm2.forward(&x)?)?)?)?;
        x + mlp
    }
}

/// ViT embeddings + pre-LN blocks; output is the last block's hidden state, BEFORE `ln_vision`.
#[derive(Debug, Clone)]
pub struct VisionTransformer {
    embeddings: VisionEmbeddings,
    layers: Vec<VisionLayer>,
    cfg: VisionConfig,
}

impl VisionTransformer {
    /// `vb` points at `vision_model` (HF naming).
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let embeddings = VisionEmbeddings::new(cfg, vb.pp("embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| VisionLayer::new(cfg, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { embeddings, layers, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    // pixels: [B, C, H, W] -> [B, N, Dv]
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self.forward_trainable(pixels)?;
        // Frozen (detached, so nothing backpropagates into it); handed on in f32 because the
        // Q-Former side runs in f32 (HF `_keep_in_fp32_modules`, LAVIS fp32 ln_vision).
        x.detach().to_dtype(DType::F32)?.contiguous()
    }

    /// The last block's hidden state with its graph kept (gradients reach every ViT weight).
    // pixels: [B, C, H, W] -> [B, N, Dv]
    pub fn forward_trainable(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut x = self.embeddings.forward(pixels)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module, Tensor, Var};
    use candle_nn::{Conv2d, Conv2dConfig};

    /// Contrastive ViT pretraining differentiates through the patch embedding (a convolution
    /// with stride = kernel): candle's convolution backward must equal the gradient of the same
    /// map written as patches x weight^T.
    #[test]
    fn patch_embedding_weight_gradient_matches_the_unfolded_matmul() {
        let dev = Device::Cpu;
        let (b, c, s, p, d) = (2, 3, 16, 8, 5);
        let vals = |n: usize, k: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * k % 97) as f32 / 48.0) - 1.0).collect()
        };
        let x = Tensor::from_vec(vals(b * c * s * s, 31), (b, c, s, s), &dev).unwrap();
        let w = Var::from_vec(vals(d * c * p * p, 17), (d, c, p, p), &dev).unwrap();
        let g = s / p;
        let coef = Tensor::from_vec(vals(b * d * g * g, 13), (b, d, g, g), &dev).unwrap();
        let conv = Conv2d::new(
            w.as_tensor().clone(),
            None,
            Conv2dConfig { stride: p, ..Default::default() },
        );
        let y = conv.forward(&x).unwrap();
        let grad = (y * &coef).unwrap().sum_all().unwrap().backward().unwrap();
        let got = grad.get(w.as_tensor()).unwrap().flatten_all().unwrap();

        // patches[(b, gy, gx), (c, py, px)]; y[b, d, gy, gx] = patches . w[d]
        let patches = x
            .reshape((b, c, g, p, g, p))
            .unwrap()
            .permute((0, 2, 4, 1, 3, 5))
            .unwrap()
            .reshape((b * g * g, c * p * p))
            .unwrap();
        let coef_rows = coef.permute((0, 2, 3, 1)).unwrap().reshape((b * g * g, d)).unwrap();
        let want = coef_rows.t().unwrap().matmul(&patches).unwrap().flatten_all().unwrap();
        let diff =
            (got - &want).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        let scale = want.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-4 * scale.max(1.0), "max |diff| {diff} (scale {scale})");
    }
}
