//! `blip2 synth`: write the synthetic shapes world in the real dataset formats.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use datasets::synth::{write_world, SynthConfig};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 1000)]
    pub images: usize,
    /// Seed; the same seed gives byte-identical output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Side of the square images in pixels.
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
}

pub fn run(args: SynthArgs) -> Result<()> {
    anyhow::ensure!(args.images > 0, "--images must be > 0");
    anyhow::ensure!(args.image_size >= 16, "--image-size must be >= 16");
    let start = std::time::Instant::now();
    let config = SynthConfig {
        images: args.images,
        seed: args.seed,
        image_size: args.image_size,
        ..Default::default()
    };
    let summary = write_world(&args.out, &config)
        .with_context(|| format!("writing the synthetic world to {}", args.out.display()))?;
    println!(
        "wrote {} images ({}x{} px) to {} in {:.1}s",
        summary.images,
        args.image_size,
        args.image_size,
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    for f in &summary.files {
        println!("  {}", f.display());
    }
    Ok(())
}
