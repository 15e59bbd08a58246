//! Random-weight BLIP-2-sized models and inputs for the benchmarks: the criterion benches and
//! `blip2 bench` build their workloads here, so both time exactly the same thing.
//!
//! The five workloads are the ones timed in PyTorch for the side-by-side comparison
//! (`tools/side_by_side.sh`, `docs/performance.md`): sizes, batch shapes and the timed span are
//! those of the PyTorch runs (HF transformers 4.57 / LAVIS 1.0.2 modules). Every weight and
//! input is drawn from a seed (`SeededVarMap`); `Scale::Tiny` shrinks every dimension so tests
//! can run a workload end to end in milliseconds.

mod itm;
mod matmul;
mod opt_generate;
mod qformer_forward;
pub mod seeded;
mod sizes;
mod stage1_step;
mod vit_forward;

pub use itm::ItmCase;
pub use matmul::MatmulCase;
pub use opt_generate::OptGenerateCase;
pub use qformer_forward::QformerForwardCase;
pub use seeded::{seeded_tensor, seeded_values, SeededVarMap};
pub use sizes::{stage_one_config, stage_one_model, text_ids, Scale};
pub use stage1_step::{Stage1StepCase, StepPhases};
pub use vit_forward::VitForwardCase;

use qformer::Result;

/// The seed the benches and `blip2 bench` use unless told otherwise.
pub const DEFAULT_SEED: u64 = 20_261_125;

/// One benchmark workload, built and ready to be called repeatedly.
pub trait BenchCase {
    /// One timed call (the span the PyTorch anchor times).
    fn run(&mut self) -> Result<()>;

    /// What one call processes, for a rate: e.g. `("pairs", 64.0)`, `("tokens", 20.0)`.
    fn throughput(&self) -> Option<(&'static str, f64)> {
        None
    }

    /// Matmul-class FLOPs of one call (GEMMs, batched GEMMs, convolutions; element-wise ops,
    /// softmax and norms not counted), to read the time as GFLOP/s against the `matmul` ceiling.
    fn flop(&self) -> Option<f64> {
        None
    }
}

/// Matmul-class GFLOP per call of the real-size workloads, as `torch.utils.flop_counter`
/// counted them on the identical PyTorch workloads (torch 2.9.1 `FlopCounterMode`; the
/// stage-one step is its forward 641.4 + backward 1282.8).
pub fn anchor_gflop(workload: Workload) -> Option<f64> {
    match workload {
        Workload::QformerForward => Some(102.0),
        Workload::Stage1Step => Some(641.4 + 1282.8),
        Workload::Itm => Some(1171.0),
        Workload::VitForward => Some(506.2),
        Workload::OptGenerate => Some(14.6),
        Workload::Matmul => None,
    }
}

/// The benchmark workloads (the five side-by-side ones and the GEMM ceiling), by their CLI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Q-Former forward, queries only, image features `[8, 257, 1408]`, no grad.
    QformerForward,
    /// Stage-one step on cached image features, B=8, L=32: ITC+ITM+ITG forward, backward, AdamW.
    Stage1Step,
    /// ITM scores of 64 image-text pairs (one image per pair), no grad.
    Itm,
    /// ViT-g forward, B=1, 224 px, no grad.
    VitForward,
    /// OPT-125m-shaped greedy generation: 32 query embeddings + 8 prompt tokens, 20 new tokens.
    OptGenerate,
    /// `[1024, 1024] @ [1024, 1024]`: the matmul ceiling the others are read against.
    Matmul,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::QformerForward,
        Workload::Stage1Step,
        Workload::Itm,
        Workload::VitForward,
        Workload::OptGenerate,
        Workload::Matmul,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::QformerForward => "qformer-forward",
            Workload::Stage1Step => "stage1-step",
            Workload::Itm => "itm",
            Workload::VitForward => "vit-forward",
            Workload::OptGenerate => "opt-generate",
            Workload::Matmul => "matmul",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Builds the workload's model and inputs (not timed).
    pub fn build(self, scale: Scale, seed: u64) -> Result<Box<dyn BenchCase>> {
        Ok(match self {
            Workload::QformerForward => Box::new(QformerForwardCase::new(scale, seed)?),
            Workload::Stage1Step => Box::new(Stage1StepCase::new(scale, seed)?),
            Workload::Itm => Box::new(ItmCase::new(scale, seed)?),
            Workload::VitForward => Box::new(VitForwardCase::new(scale, seed)?),
            Workload::OptGenerate => Box::new(OptGenerateCase::new(scale, seed)?),
            Workload::Matmul => Box::new(MatmulCase::new(scale, seed)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tiny_workload_builds_and_runs() {
        for w in Workload::ALL {
            assert_eq!(Workload::from_name(w.name()), Some(w));
            let mut case = w.build(Scale::Tiny, 1).unwrap();
            case.run().unwrap();
            case.run().unwrap();
        }
        assert_eq!(Workload::from_name("nope"), None);
    }
}
