//! HF `LlavaMultiModalProjector`: `linear_1` → act (`projector_hidden_act`) → `linear_2`, and the
//! activations HF names in `hidden_act` / `projector_hidden_act`.

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

/// `multi_modal_projector.*`: `linear_2(act(linear_1(x)))`.
#[derive(Debug, Clone)]
pub struct MultiModalProjector {
    linear_1: Linear,
    linear_2: Linear,
    act: Activation,
}

impl MultiModalProjector {
    /// `vb` points at `multi_modal_projector`. `in_dim` is the vision width times the number of
    /// selected layers, `out_dim` the LLM width.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            linear_1: crate::nn::linear(in_dim, out_dim, bias, vb.pp("linear_1"))?,
            linear_2: crate::nn::linear(out_dim, out_dim, bias, vb.pp("linear_2"))?,
            act,
        })
    }

    pub fn linear_1(&self) -> &Linear {
        &self.linear_1
    }

    pub fn linear_2(&self) -> &Linear {
        &self.linear_2
    }
}

impl Module for MultiModalProjector {
    // x: [..., in_dim] -> [..., out_dim]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.act.apply(&self.linear_1.forward(x)?)?)
    }
}
