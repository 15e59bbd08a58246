//! Command-line surface (clap derive). Each subcommand's arguments live beside its implementation in `cmd/`.

use clap::{Parser, Subcommand};

use crate::cmd::eval::EvalArgs;

#[derive(Debug, Parser)]
#[command(name = "blip2", version, about = "Pretrain and evaluate BLIP-2 Q-Formers")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the versions and the compute devices this build supports.
    Info,
    /// Evaluate: metrics of result files, evaluation loops.
    Eval(EvalArgs),
    /// Generate text from an image and a prompt (Blip2ForConditionalGeneration, OPT or T5).
    Generate(crate::cmd::generate::GenerateArgs),
    /// Caption images with the LAVIS BLIP-2 caption settings.
    Caption(crate::cmd::caption::CaptionArgs),
    /// Write the synthetic shapes world (PNG, Karpathy JSON, VQAv2 JSON, webdataset shards).
    Synth(crate::cmd::synth::SynthArgs),
    /// ITC similarity and ITM match probability of every image x text pair.
    Score(crate::cmd::score::ScoreArgs),
    /// Convert a LAVIS .pth into an HF model directory, or an HF directory into a LAVIS .pth.
    Export(crate::cmd::export::ExportArgs),
    /// Write normalized ITC embeddings of images and/or texts to a safetensors file.
    Embed(crate::cmd::embed::EmbedArgs),
    /// Stage-one pretraining (ITC + ITM + ITG) with a frozen ViT; checkpoints, metrics, curves.
    Pretrain(crate::cmd::pretrain::PretrainArgs),
    /// Run the frozen ViT once over a dataset and store its features (sharded safetensors + index).
    CacheFeatures(crate::cmd::cache_features::CacheFeaturesArgs),
    /// The whole BLIP-2 recipe on a synthetic world in minutes on CPU, no downloads: stage one,
    /// retrieval, stage two, zero-shot VQA; results in OUT/results.md.
    Quickstart(crate::cmd::quickstart::QuickstartArgs),
    /// Redraw RUN_DIR/curves.png from RUN_DIR/metrics.jsonl.
    Plot(crate::cmd::plot::PlotArgs),
    /// Time a BLIP-2-sized workload with random weights (median ms, peak RSS) for PyTorch comparisons.
    Bench(crate::cmd::bench::BenchArgs),
}
