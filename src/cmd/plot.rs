//! `blip2 plot RUN_DIR`: redraw `curves.png` from `metrics.jsonl`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use train::checkpoint::RunDir;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A run directory holding metrics.jsonl.
    pub run_dir: PathBuf,
}

pub fn run(args: PlotArgs) -> Result<()> {
    let run = RunDir { root: args.run_dir };
    train::plot::plot_run(&run, "blip2 pretrain")?;
    println!("wrote {}", run.plot_path().display());
    Ok(())
}
