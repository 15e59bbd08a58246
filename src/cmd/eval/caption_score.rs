//! `blip2 eval caption-score`: COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) of an existing result
//! file, equal to pycocoevalcap 1.2 as LAVIS runs it, without Java.

use std::path::PathBuf;

use ::eval::caption::meteor::{MeteorDataFiles, Module};
use ::eval::caption::{
    pair_results, score_captions, CaptionAnnotations, CaptionResults, CaptionScores,
};
use anyhow::Result;
use clap::Args;
use serde_json::{json, Map, Value};

#[derive(Debug, Args)]
pub struct CaptionScoreArgs {
    /// Result file: `[{"image_id": .., "caption": str}, ...]` (a repeated image keeps its first caption).
    #[arg(long)]
    pub results: PathBuf,
    /// COCO caption annotations: `{"images": [{"id"}], "annotations": [{"image_id", "caption"}]}`
    /// (e.g. LAVIS's `coco_karpathy_test_gt.json`).
    #[arg(long)]
    pub annotations: PathBuf,
    /// METEOR's synonym and paraphrase tables: pycocoevalcap's `meteor-1.5.jar` (with `data/paraphrase-en.gz`
    /// beside it), its `meteor/` folder, or the jar's contents. Without it METEOR matches exact words and
    /// stems only, and scores lower than pycocoevalcap.
    #[arg(long)]
    pub meteor_data: Option<PathBuf>,
    /// Print a JSON object (`corpus`, the same keys at the top level, `per_image`, `meteor_modules`, `SPICE`)
    /// instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Metric names as COCOEvalCap writes them, in its order.
const METRICS: [&str; 7] = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"];

const SPICE_REASON: &str =
    "SPICE needs Java and Stanford CoreNLP 3.6.0 (a scene-graph parser); pycocoevalcap \
downloads CoreNLP at first use and no Rust port exists, so it is not computed";

pub fn run(args: CaptionScoreArgs) -> Result<()> {
    let annotations = CaptionAnnotations::read(&args.annotations)?;
    let results = CaptionResults::read(&args.results)?;
    let paired = pair_results(&annotations, &results)?;
    if paired.duplicates_dropped > 0 {
        eprintln!(
            "{}: {} repeated image id(s): kept the first caption of each (as LAVIS does before scoring)",
            results.source, paired.duplicates_dropped
        );
    }
    let meteor_data = args.meteor_data.as_deref().map(MeteorDataFiles::locate).transpose()?;
    let scores = score_captions(&paired.images, meteor_data.as_ref())?;
    if args.json {
        let report = json_report(&scores, paired.duplicates_dropped, paired.images_without_result);
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&scores, paired.images_without_result));
    }
    Ok(())
}

fn metric_values(bleu: &[f64; 4], meteor: f64, rouge_l: f64, cider: f64) -> [f64; 7] {
    [bleu[0], bleu[1], bleu[2], bleu[3], meteor, rouge_l, cider]
}

fn module_names(modules: &[Module]) -> Vec<&'static str> {
    modules.iter().map(|m| m.name()).collect()
}

fn json_report(
    scores: &CaptionScores,
    duplicates_dropped: usize,
    images_without_result: usize,
) -> Value {
    let c = &scores.corpus;
    let mut corpus = Map::new();
    for (name, value) in METRICS.iter().zip(metric_values(&c.bleu, c.meteor, c.rouge_l, c.cider)) {
        corpus.insert(name.to_string(), json!(value));
    }
    let mut per_image = Map::new();
    for image in &scores.per_image {
        let mut entry = Map::new();
        entry.insert("image_id".into(), json!(image.image_id.key()));
        for (name, value) in
            METRICS.iter().zip(metric_values(&image.bleu, image.meteor, image.rouge_l, image.cider))
        {
            entry.insert(name.to_string(), json!(value));
        }
        per_image.insert(image.image_id.key(), Value::Object(entry));
    }
    let mut report = corpus.clone();
    report.insert("corpus".into(), Value::Object(corpus));
    report.insert("per_image".into(), Value::Object(per_image));
    report.insert("meteor_modules".into(), json!(module_names(&scores.meteor_modules)));
    report.insert("paraphrase_entries_used".into(), json!(scores.paraphrase_entries_used));
    report.insert("SPICE".into(), json!({"computed": false, "reason": SPICE_REASON}));
    report.insert("n_images".into(), json!(scores.per_image.len()));
    report.insert("duplicates_dropped".into(), json!(duplicates_dropped));
    report.insert("images_without_result".into(), json!(images_without_result));
    Value::Object(report)
}

fn table(scores: &CaptionScores, images_without_result: usize) -> String {
    let c = &scores.corpus;
    let mut out = format!("{:<8}  {:>8}\n", "metric", "score");
    for (name, value) in METRICS.iter().zip(metric_values(&c.bleu, c.meteor, c.rouge_l, c.cider)) {
        out.push_str(&format!("{name:<8}  {value:>8.4}\n"));
    }
    out.push_str(&format!(
        "({} images, raw fractions; METEOR modules: {}; SPICE not computed)\n",
        scores.per_image.len(),
        module_names(&scores.meteor_modules).join(" ")
    ));
    if images_without_result > 0 {
        out.push_str(&format!(
            "({images_without_result} annotated images have no result and were not scored)\n"
        ));
    }
    out
}
