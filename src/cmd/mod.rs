//! Subcommand implementations.

use anyhow::Result;

pub mod bench;
mod bench_llava;
mod bench_loader;
pub mod cache_features;
pub mod caption;
pub mod embed;
pub mod eval;
pub mod export;
pub mod generate;
pub mod generate_llava;
pub mod generate_minigpt4;
pub mod plot;
pub mod pretrain;
pub mod quickstart;
pub mod score;
pub mod synth;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info => {
            println!("blip2 {}", env!("CARGO_PKG_VERSION"));
            println!("cuda: {}", candle_core::utils::cuda_is_available());
            Ok(())
        }
        Command::Eval(args) => eval::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Score(args) => score::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Export(args) => export::run(args),
        Command::Pretrain(args) => pretrain::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Quickstart(args) => quickstart::run(args),
        Command::Bench(args) => bench::run(args),
        Command::CacheFeatures(args) => cache_features::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Caption(args) => caption::run(args),
    }
}
