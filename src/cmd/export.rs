//! `blip2 export`: converts between LAVIS checkpoints and HF Hub model directories.
//!
//! LAVIS -> HF: a LAVIS `.pth` holds only the trained tensors (no frozen ViT, no LLM), so an HF
//! BLIP-2 directory supplies the ViT, config.json, tokenizer and image processor; the result is
//! a directory that opens alone. HF -> LAVIS: the trained tensors under LAVIS names in a `.pth`
//! that `torch.load` reads, as LAVIS's runner saves them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::{ArgGroup, Args};
use datasets::image::ImageProcessorConfig;
use qformer::weights::{
    check, detect_parts, lavis_projection_to_hf, read_lavis_pth, write_lavis_pth, TensorSet,
};

use crate::common::atomic::replace_file;
use crate::common::model_dir::save_model_dir_with_files;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("direction").required(true).args(["lavis_checkpoint", "model"])))]
pub struct ExportArgs {
    /// LAVIS checkpoint (.pth, stage one or two) to turn into an HF model directory (with
    /// --vision and --out). Its `temp` is kept, and its ln_vision eps (1e-5) is recorded in
    /// config.json as `ln_vision_eps`.
    #[arg(long, requires_all = ["vision", "out"], conflicts_with_all = ["model", "to_lavis"])]
    pub lavis_checkpoint: Option<PathBuf>,
    /// HF BLIP-2 directory providing the frozen ViT, config.json, tokenizer and
    /// preprocessor_config.json (and, for a stage-two checkpoint, the LLM).
    #[arg(long, requires = "lavis_checkpoint")]
    pub vision: Option<PathBuf>,
    /// HF model directory to write.
    #[arg(long, requires = "lavis_checkpoint")]
    pub out: Option<PathBuf>,
    /// HF model directory to turn into a LAVIS checkpoint (with --to-lavis).
    #[arg(long, requires = "to_lavis")]
    pub model: Option<PathBuf>,
    /// LAVIS checkpoint to write: `{"model": state_dict}` of the trained tensors (LAVIS names;
    /// LAVIS applies ln_vision with eps 1e-5 whatever the directory's config says).
    #[arg(long, requires = "model")]
    pub to_lavis: Option<PathBuf>,
    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Tokenizer and generation files of an HF directory, copied beside the weights (also those of
/// the Q-Former tokenizer that LLM directories keep in `qformer_tokenizer/`).
const SIDE_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "processor_config.json",
    "generation_config.json",
];
const QFORMER_TOKENIZER_DIR: &str = "qformer_tokenizer";

pub fn run(args: ExportArgs) -> Result<()> {
    match (&args.lavis_checkpoint, &args.vision, &args.out, &args.model, &args.to_lavis) {
        (Some(pth), Some(vision), Some(out), None, None) => {
            lavis_to_hf(pth, vision, out, args.force)
        }
        (None, None, None, Some(model), Some(pth)) => hf_to_lavis(model, pth, args.force),
        // clap's `requires` / `conflicts_with` rules make every other combination unreachable.
        _ => bail!("give either --lavis-checkpoint, --vision and --out, or --model and --to-lavis"),
    }
}

fn refuse_existing(out: &Path, force: bool) -> Result<()> {
    if out.exists() && !force {
        bail!("{} exists (pass --force to replace it)", out.display());
    }
    Ok(())
}

fn require_model_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    if !dir.join("config.json").is_file() {
        bail!("{} is not a model directory: it has no config.json", dir.display());
    }
    Ok(())
}

/// The side files `dir` has, as (path inside the directory, source).
pub(crate) fn side_files(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut files = Vec::new();
    for sub in [None, Some(QFORMER_TOKENIZER_DIR)] {
        for name in SIDE_FILES {
            let rel = match sub {
                Some(sub) => Path::new(sub).join(name),
                None => PathBuf::from(name),
            };
            let src = dir.join(&rel);
            if src.is_file() {
                files.push((rel, src));
            }
        }
    }
    files
}

fn lavis_to_hf(pth: &Path, vision: &Path, out: &Path, force: bool) -> Result<()> {
    if out.is_file() {
        bail!("{} is a file; --out names the model directory to write", out.display());
    }
    refuse_existing(out, force)?;
    require_model_dir(vision)?;
    if !pth.is_file() {
        bail!("LAVIS checkpoint {} does not exist", pth.display());
    }
    let device = Device::Cpu;
    let config_path = vision.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let mut config: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid JSON", config_path.display()))?;
    let processor_path = vision.join("preprocessor_config.json");
    let processor = ImageProcessorConfig::from_file(&processor_path)
        .with_context(|| format!("cannot read {}", processor_path.display()))?;
    let files = side_files(vision);
    if !files.iter().any(|(rel, _)| rel.ends_with("tokenizer.json")) {
        bail!(
            "{} has no tokenizer.json (nor qformer_tokenizer/tokenizer.json) to go with the model",
            vision.display()
        );
    }

    let (cfg, hf) = TensorSet::from_hf_dir(vision, &device)?;
    let lavis = lavis_projection_to_hf(read_lavis_pth(pth, &device)?);
    let n_lavis = lavis.len();
    // A stage-two checkpoint trained a projection into an LLM it does not hold: the LLM comes
    // from the HF directory too, so the result opens as a Blip2ForConditionalGeneration.
    let stage_two = lavis.names().any(|n| n.starts_with("language_projection."));
    let llm = if stage_two {
        let llm = hf.clone().filter(|n| n.starts_with("language_model."));
        if llm.is_empty() {
            bail!(
                "{} is a stage-two checkpoint (it has an LLM projection) but {} holds no \
                 language_model.* tensors to go with it",
                pth.display(),
                vision.display()
            );
        }
        llm
    } else {
        TensorSet::empty()
    };
    let vit = hf.vision_encoder_only();
    if vit.is_empty() {
        bail!("{} holds no vision_model.* tensors (the frozen ViT)", vision.display());
    }
    let n_vit = vit.len();
    let set = lavis.merge(vit)?.merge(llm)?;
    // The writer checks this too; here the message can name both inputs.
    let report = check(&cfg, &set, detect_parts(&cfg, &set), true);
    if !report.is_strict_ok() {
        bail!(
            "{} does not fit the model {} describes: {}",
            pth.display(),
            config_path.display(),
            report.problems()
        );
    }
    if let (Some(eps), Some(obj)) = (set.ln_vision_eps(), config.as_object_mut()) {
        obj.insert("ln_vision_eps".into(), eps.into());
    }
    let tensors: HashMap<String, Tensor> =
        set.names().filter_map(|n| set.get(n).map(|t| (n.to_string(), t.clone()))).collect();
    save_model_dir_with_files(out, &config, &tensors, &processor, &files)?;
    println!(
        "wrote {}: {} tensors ({n_lavis} from {}, {n_vit} of the frozen ViT{} from {})",
        out.display(),
        tensors.len(),
        pth.display(),
        if stage_two { " and the LLM" } else { "" },
        vision.display()
    );
    Ok(())
}

fn hf_to_lavis(model: &Path, pth: &Path, force: bool) -> Result<()> {
    if pth.is_dir() {
        bail!("{} is a directory; --to-lavis names the .pth file to write", pth.display());
    }
    refuse_existing(pth, force)?;
    require_model_dir(model)?;
    let (cfg, set) = TensorSet::from_hf_dir(model, &Device::Cpu)?;
    // Only a model we could load is exported, so a LAVIS run resumes from what we would run.
    let report = check(&cfg, &set, detect_parts(&cfg, &set), true);
    if !report.is_strict_ok() {
        bail!("{} does not hold a complete BLIP-2 model: {}", model.display(), report.problems());
    }
    let mut written = 0;
    replace_file(pth, |tmp| {
        written = write_lavis_pth(tmp, &cfg, &set)?;
        Ok(())
    })?;
    println!(
        "wrote {}: {written} tensors under LAVIS names (the frozen ViT and LLM stay in {})",
        pth.display(),
        model.display()
    );
    Ok(())
}
