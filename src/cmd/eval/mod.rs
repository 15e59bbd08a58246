//! `blip2 eval <metric>`: evaluation subcommands. Each subcommand's arguments live beside its
//! implementation; add a variant to [`EvalCommand`] and a match arm in [`run`].

use anyhow::Result;
use clap::{Args, Subcommand};

pub mod caption_score;
pub mod loss;
pub mod retrieval;
pub mod vqa;
pub mod vqa_score;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: EvalCommand,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Score a VQA result file with the official VQA metric (as LAVIS runs it).
    VqaScore(vqa_score::VqaScoreArgs),
    /// Score a COCO caption result file: BLEU-1..4, METEOR, ROUGE-L, CIDEr as pycocoevalcap computes them.
    CaptionScore(caption_score::CaptionScoreArgs),
    /// Stage-one losses (ITC, ITM, ITG) of one batch of image-text pairs.
    Loss(loss::LossArgs),
    /// Image-text retrieval recall (ITC + ITM re-ranking, as LAVIS) on a Karpathy-format split.
    Retrieval(retrieval::RetrievalArgs),
    /// Zero-shot VQA with a BLIP-2 OPT/T5 model (LAVIS settings): results file + VQA accuracy.
    Vqa(vqa::VqaArgs),
}

pub fn run(args: EvalArgs) -> Result<()> {
    match args.command {
        EvalCommand::VqaScore(a) => vqa_score::run(a),
        EvalCommand::CaptionScore(a) => caption_score::run(a),
        EvalCommand::Loss(a) => loss::run(a),
        EvalCommand::Retrieval(a) => retrieval::run(a),
        EvalCommand::Vqa(a) => vqa::run(a),
    }
}
