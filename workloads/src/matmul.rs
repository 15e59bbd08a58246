//! The CPU's matmul ceiling as candle reaches it: `C[1024,1024] = A[1024,1024] @ B[1024,1024]`,
//! the `matmul_1024x1024x1024` item of the PyTorch timer that `tools/side_by_side.sh` runs.
//! The other workloads' GFLOP/s are read against this number.

use candle_core::{Device, Tensor};

use super::seeded::seeded_tensor;
use super::{BenchCase, Scale};
use qformer::Result;

pub struct MatmulCase {
    a: Tensor,
    b: Tensor,
    n: usize,
}

impl MatmulCase {
    pub fn new(scale: Scale, seed: u64) -> Result<Self> {
        let n = scale.pick(1024, 16);
        let dev = Device::Cpu;
        let a = seeded_tensor(seed, "matmul/a", (n, n), 0.0, 1.0, &dev)?;
        let b = seeded_tensor(seed, "matmul/b", (n, n), 0.0, 1.0, &dev)?;
        Ok(Self { a, b, n })
    }
}

impl BenchCase for MatmulCase {
    // a: [N, N], b: [N, N] -> [N, N]
    fn run(&mut self) -> Result<()> {
        self.a.matmul(&self.b)?;
        Ok(())
    }

    fn flop(&self) -> Option<f64> {
        Some(2.0 * (self.n as f64).powi(3))
    }
}
