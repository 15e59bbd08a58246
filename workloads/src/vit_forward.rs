//! Workload 4: EVA ViT-g/14 forward, B=1, 224 px (no grad).

use candle_core::{DType, Device, Tensor};

use super::seeded::{seeded_tensor, SeededVarMap};
use super::{BenchCase, Scale};
use qformer::model::VisionTransformer;
use qformer::Result;

/// HF `Blip2VisionModel` (1408 wide, 39 layers, 16 heads, MLP 6144): patch conv, class and
/// position embeddings, 39 pre-LN blocks, `post_layernorm` -> `[1, 257, 1408]`.
pub struct VitForwardCase {
    pub vit: VisionTransformer,
    /// `[1, 3, S, S]`
    pub pixels: Tensor,
    out_dims: [usize; 3],
    _vars: SeededVarMap,
}

impl VitForwardCase {
    pub fn new(scale: Scale, seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let cfg = scale.vision();
        let vars = SeededVarMap::frozen(seed);
        let vit = VisionTransformer::new(&cfg, vars.var_builder(DType::F32, &dev))?;
        let s = cfg.image_size;
        let pixels = seeded_tensor(seed, "pixel_values", (1, 3, s, s), 0.0, 1.0, &dev)?;
        let out_dims = [1, cfg.num_positions(), cfg.hidden_size];
        Ok(Self { vit, pixels, out_dims, _vars: vars })
    }
}

impl BenchCase for VitForwardCase {
    fn run(&mut self) -> Result<()> {
        let out = self.vit.forward(&self.pixels)?;
        if out.dims() != self.out_dims {
            return Err(qformer::Error::Msg(format!("vit-forward output {:?}", out.dims())));
        }
        Ok(())
    }
}
