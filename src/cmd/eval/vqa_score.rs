//! `blip2 eval vqa-score`: the official VQA accuracy of an existing result file.

use std::path::PathBuf;

use ::eval::vqa::{
    vqa_accuracy_with_questions, OrderedScores, PythonSum, VqaAccuracy, VqaAnnotations,
    VqaQuestions, VqaResults,
};
use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct VqaScoreArgs {
    /// Result file: `[{"question_id": int, "answer": str}, ...]`, one entry per annotated question.
    #[arg(long)]
    pub results: PathBuf,
    /// Question file (`v2_OpenEnded_mscoco_val2014_questions.json` layout).
    #[arg(long)]
    pub questions: PathBuf,
    /// Annotation file (`v2_mscoco_val2014_annotations.json` layout).
    #[arg(long)]
    pub annotations: PathBuf,
    /// Float summation of the Python that runs the official scorer: its `sum()` changed in 3.12, which can
    /// move a score by 0.01.
    #[arg(long, value_enum, default_value_t = PythonVersion::Py311)]
    pub python: PythonVersion,
    /// Print `{"overall": .., "perAnswerType": {..}}` (percent, 2 decimals) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PythonVersion {
    /// CPython 3.11 and older (plain left-fold `sum`).
    #[value(name = "3.11")]
    Py311,
    /// CPython 3.12 and newer (compensated `sum`).
    #[value(name = "3.12")]
    Py312,
}

#[derive(Serialize)]
struct Summary<'a> {
    overall: f64,
    #[serde(rename = "perAnswerType")]
    per_answer_type: &'a OrderedScores,
}

pub fn run(args: VqaScoreArgs) -> Result<()> {
    let questions = VqaQuestions::read(&args.questions)?;
    let annotations = VqaAnnotations::read(&args.annotations)?;
    let results = VqaResults::read(&args.results)?;
    let summation = match args.python {
        PythonVersion::Py311 => PythonSum::LeftFold,
        PythonVersion::Py312 => PythonSum::Neumaier,
    };
    // Errors from here on already name the files involved.
    let acc = vqa_accuracy_with_questions(&questions, &annotations, &results, summation)?;
    print_scores(&acc, args.json)
}

/// Print scores as JSON (`{"overall", "perAnswerType"}`) or as a table.
pub fn print_scores(acc: &VqaAccuracy, json: bool) -> Result<()> {
    if json {
        let summary = Summary { overall: acc.overall, per_answer_type: &acc.per_answer_type };
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", table(acc));
    }
    Ok(())
}

/// Readable form: overall, then one line per answer type (first-appearance order, like the scorer).
fn table(acc: &VqaAccuracy) -> String {
    let mut rows = vec![("overall".to_string(), acc.overall)];
    rows.extend(acc.per_answer_type.0.iter().map(|(k, v)| (format!("  {k}"), *v)));
    let width = rows.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0).max(11);
    let mut out = format!("{:<width$}  {:>8}\n", "answer type", "accuracy");
    for (name, v) in rows {
        out.push_str(&format!("{name:<width$}  {v:>8.2}\n"));
    }
    out.push_str(&format!("({} questions, VQA accuracy in percent)\n", acc.per_question.len()));
    out
}
