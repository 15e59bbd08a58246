//! `nn.Linear` (PyTorch's weight layout `[out, in]`): candle's, with the input made contiguous
//! off the CPU.
//!
//! candle's CPU matmul takes operands of any strides, so the CPU path stays copy-free; its CUDA
//! matmul refuses a row-strided operand, such as the `[CLS]` rows sliced out of `[B, L, H]` that
//! the projection heads read ("matmul is only supported for contiguous tensors").

use candle_core::{Module, Result, Tensor};

#[derive(Clone, Debug)]
pub struct Linear(candle_nn::Linear);

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self(candle_nn::Linear::new(weight, bias))
    }

    pub fn weight(&self) -> &Tensor {
        self.0.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.0.bias()
    }
}

impl From<candle_nn::Linear> for Linear {
    fn from(inner: candle_nn::Linear) -> Self {
        Self(inner)
    }
}

impl Module for Linear {
    // x: [..., in] -> [..., out]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            self.0.forward(x)
        } else {
            self.0.forward(&x.contiguous()?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    #[test]
    fn strided_rows_give_the_rows_own_projection() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec((0..12).map(|v| v as f32 / 6.0).collect(), (3, 4), &dev).unwrap();
        let lin = Linear::new(w, Some(Tensor::new(&[1f32, 2., 3.], &dev).unwrap()));
        let x = Tensor::from_vec((0..40).map(|v| v as f32).collect(), (2, 5, 4), &dev).unwrap();
        let cls = x.i((.., 0)).unwrap(); // [2, 4], row stride 20
        assert!(!cls.is_contiguous());
        let a = lin.forward(&cls).unwrap().to_vec2::<f32>().unwrap();
        let b = lin.forward(&cls.contiguous().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
    }
}
