//! Command-line surface (clap derive). Each subcommand's arguments live beside its implementation in `cmd/`.

use clap::{Parser, Subcommand};

use crate::cmd::eval::EvalArgs;

#[derive(Debug, Parser)]
#[command(
    name = "blip2",
    version,
    about = "Pretrain and evaluate BLIP-2 Q-Formers"
)]
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
}
