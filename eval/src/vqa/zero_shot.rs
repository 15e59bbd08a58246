//! Zero-shot VQA loop as LAVIS runs it for BLIP-2 (`VQATask.evaluation` + `predict_answers`):
//! questions cleaned by `pre_question` (50 words), put into the prompt, answered in batches,
//! post-processed per LLM and written as the official result file.

use std::path::{Path, PathBuf};

use datasets::text::pre_question;

use super::answer::{postprocess_generated_answer, AnswerDecoder};
use super::files::VqaPrediction;
use crate::error::{Error, Result};

/// LAVIS `blip_question` processor's `max_words`.
pub const QUESTION_MAX_WORDS: usize = 50;

/// LAVIS zero-shot VQA prompt of the BLIP-2 configs.
pub const DEFAULT_PROMPT: &str = "Question: {} Short answer:";

/// One question ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaItem {
    pub question_id: i64,
    pub image: PathBuf,
    /// The prompt with the cleaned question in place of `{}`.
    pub text_input: String,
}

/// How a question goes into the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuestionText {
    /// LAVIS `pre_question` (lower case, some punctuation dropped, 50 words).
    Lavis,
    /// As the questions file has it (LLaVA's evaluation scripts).
    Raw,
}

/// `prompt.format(pre_question(question))`; a prompt without `{}` is an error (LAVIS would
/// drop the question silently).
pub fn format_prompt(prompt: &str, question: &str) -> Result<String> {
    format_prompt_as(prompt, question, QuestionText::Lavis)
}

/// [`format_prompt`] with the question cleaned as `text` says.
pub fn format_prompt_as(prompt: &str, question: &str, text: QuestionText) -> Result<String> {
    if !prompt.contains("{}") {
        return Err(Error::Invalid(format!("prompt {prompt:?} has no {{}} for the question")));
    }
    let q = match text {
        QuestionText::Lavis => pre_question(question, QUESTION_MAX_WORDS),
        QuestionText::Raw => question.to_string(),
    };
    Ok(prompt.replacen("{}", &q, 1))
}

/// Image file of an image id: `pattern` with `{image_id}` or `{image_id:012}` (COCO's
/// zero-padded names) replaced, joined to `image_dir`.
pub fn image_path(image_dir: &Path, pattern: &str, image_id: u64) -> PathBuf {
    let name = pattern
        .replace("{image_id:012}", &format!("{image_id:012}"))
        .replace("{image_id}", &image_id.to_string());
    image_dir.join(name)
}

/// Items of an official questions file, in file order.
pub fn read_items(
    questions: &Path,
    image_dir: &Path,
    image_pattern: &str,
    prompt: &str,
) -> Result<Vec<VqaItem>> {
    read_items_as(questions, image_dir, image_pattern, prompt, QuestionText::Lavis)
}

/// [`read_items`] with the questions put in as `text` says.
pub fn read_items_as(
    questions: &Path,
    image_dir: &Path,
    image_pattern: &str,
    prompt: &str,
    text: QuestionText,
) -> Result<Vec<VqaItem>> {
    let rows = datasets::formats::vqa::read_vqa_official(questions, None)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    rows.into_iter()
        .map(|q| {
            let question_id = i64::try_from(q.question_id).map_err(|_| {
                Error::field(
                    questions.display().to_string(),
                    "questions[].question_id",
                    format!("{} does not fit in i64", q.question_id),
                )
            })?;
            Ok(VqaItem {
                question_id,
                image: image_path(image_dir, image_pattern, q.image_id),
                text_input: format_prompt_as(prompt, &q.question, text)?,
            })
        })
        .collect()
}

/// Something that answers a batch of (image, prompt) pairs with decoded text (special tokens
/// skipped), one string per pair.
pub trait AnswerGenerator {
    fn answer_batch(
        &mut self,
        images: &[PathBuf],
        prompts: &[String],
    ) -> std::result::Result<Vec<String>, String>;
}

/// Answer every item in batches of `batch_size`; `progress` gets the number of items done.
pub fn answer_all<G: AnswerGenerator>(
    items: &[VqaItem],
    batch_size: usize,
    decoder: AnswerDecoder,
    generator: &mut G,
    mut progress: impl FnMut(usize),
) -> Result<Vec<VqaPrediction>> {
    if batch_size == 0 {
        return Err(Error::Invalid("batch size must be at least 1".into()));
    }
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(batch_size) {
        let images: Vec<PathBuf> = chunk.iter().map(|i| i.image.clone()).collect();
        let prompts: Vec<String> = chunk.iter().map(|i| i.text_input.clone()).collect();
        let first = chunk[0].question_id;
        let answers = generator.answer_batch(&images, &prompts).map_err(|e| {
            Error::Invalid(format!("answering the batch from question_id {first}: {e}"))
        })?;
        if answers.len() != chunk.len() {
            return Err(Error::Invalid(format!(
                "generator gave {} answers for {} questions",
                answers.len(),
                chunk.len()
            )));
        }
        for (item, a) in chunk.iter().zip(answers) {
            out.push(VqaPrediction {
                question_id: item.question_id,
                answer: postprocess_generated_answer(&a, decoder),
            });
        }
        progress(out.len());
    }
    Ok(out)
}

/// The official result file `[{"question_id": int, "answer": str}, ...]`.
pub fn write_results(path: &Path, predictions: &[VqaPrediction]) -> Result<()> {
    let rows: Vec<serde_json::Value> = predictions
        .iter()
        .map(|p| serde_json::json!({"question_id": p.question_id, "answer": p.answer}))
        .collect();
    let text = serde_json::to_string(&rows).map_err(|e| Error::json(path, e))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_gets_the_lavis_cleaned_question() {
        // pre_question lowercases and deletes .!"()*#:;~ only (the "?" stays).
        assert_eq!(
            format_prompt(DEFAULT_PROMPT, "What COLOR is the cat's toy?!").unwrap(),
            "Question: what color is the cat's toy? Short answer:"
        );
        assert!(format_prompt("no slot", "q").is_err());
    }

    #[test]
    fn coco_image_names_are_zero_padded() {
        let p = image_path(Path::new("d"), "COCO_val2014_{image_id:012}.jpg", 42);
        assert_eq!(p, Path::new("d/COCO_val2014_000000000042.jpg"));
        assert_eq!(image_path(Path::new("d"), "img{image_id}.png", 3), Path::new("d/img3.png"));
    }

    struct Echo(Vec<usize>);
    impl AnswerGenerator for Echo {
        fn answer_batch(
            &mut self,
            _: &[PathBuf],
            p: &[String],
        ) -> std::result::Result<Vec<String>, String> {
            self.0.push(p.len());
            Ok(p.iter().map(|s| format!(" {s}\n")).collect())
        }
    }

    #[test]
    fn batches_keep_order_and_postprocess() {
        let items: Vec<VqaItem> = (0..5)
            .map(|i| VqaItem {
                question_id: i,
                image: PathBuf::from("x"),
                text_input: format!("a{i}"),
            })
            .collect();
        let mut g = Echo(Vec::new());
        let got = answer_all(&items, 2, AnswerDecoder::Opt, &mut g, |_| {}).unwrap();
        assert_eq!(g.0, vec![2, 2, 1]);
        let answers: Vec<&str> = got.iter().map(|p| p.answer.as_str()).collect();
        assert_eq!(answers, vec!["a0", "a1", "a2", "a3", "a4"]);
        assert_eq!(got[4].question_id, 4);
    }
}
