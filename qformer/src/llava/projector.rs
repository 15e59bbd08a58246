//! HF `LlavaMultiModalProjector`: `linear_1` → act (`projector_hidden_act`) → `linear_2` (original
//! LLaVA's projectors: one layer, or more with the act between), and the activations HF names in
//! `hidden_act` / `projector_hidden_act`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::Linear;
use crate::Error;

/// An HF activation (`ACT2FN`) as LLaVA's configs name them; every variant has a backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (HF "quick_gelu", OpenAI CLIP).
    QuickGelu,
    /// Exact erf GELU (HF "gelu").
    Gelu,
    /// tanh approximation (HF "gelu_new", "gelu_pytorch_tanh").
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    pub fn from_hf(name: &str) -> crate::Result<Self> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Self::GeluTanh),
            "relu" => Ok(Self::Relu),
            "silu" | "swish" => Ok(Self::Silu),
            other => Err(Error::Config(format!("unsupported activation function {other:?}"))),
        }
    }

    // x: [...] -> [...]
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::QuickGelu => {
                // sigmoid from exp/recip so the op has a backward whatever the device.
                let s = ((x * -1.702)?.exp()? + 1.0)?.recip()?;
                x * s
            }
            Self::Gelu => crate::nn::gelu(x),
            Self::GeluTanh => x.gelu(),
            Self::Relu => x.relu(),
            Self::Silu => x.silu(),
        }
    }
}

/// `multi_modal_projector.*`: `linear_1`, then `act` before each further layer
/// (`linear_N(act(… act(linear_1(x))))`). HF's LLaVA has two layers; original LLaVA's
/// `mm_projector_type` `linear` has one and `mlpNx_gelu` has N (their `nn.Sequential` indices
/// 0, 2, 4, … become `linear_1`, `linear_2`, `linear_3`, …).
#[derive(Debug, Clone)]
pub struct MultiModalProjector {
    layers: Vec<Linear>,
    act: Activation,
}

impl MultiModalProjector {
    /// HF's two-layer projector. `vb` points at `multi_modal_projector`. `in_dim` is the vision
    /// width times the number of selected layers, `out_dim` the LLM width.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::with_depth(in_dim, out_dim, 2, bias, act, vb)
    }

    /// `depth` layers (`linear_1` .. `linear_{depth}`, at least one): `in_dim -> out_dim`, then
    /// `out_dim -> out_dim`.
    pub fn with_depth(
        in_dim: usize,
        out_dim: usize,
        depth: usize,
        bias: bool,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        if depth == 0 {
            candle_core::bail!("a projector needs at least one layer");
        }
        let layers = (0..depth)
            .map(|i| {
                let d_in = if i == 0 { in_dim } else { out_dim };
                crate::nn::linear(d_in, out_dim, bias, vb.pp(format!("linear_{}", i + 1)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, act })
    }

    pub fn linear_1(&self) -> &Linear {
        &self.layers[0]
    }

    /// Every layer, `linear_1` first.
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }
}

impl Module for MultiModalProjector {
    // x: [..., in_dim] -> [..., out_dim]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.layers[0].forward(x)?;
        for layer in &self.layers[1..] {
            h = layer.forward(&self.act.apply(&h)?)?;
        }
        Ok(h)
    }
}
