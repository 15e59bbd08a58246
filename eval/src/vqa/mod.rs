//! VQAv2 / OK-VQA accuracy: the official VQA scorer as LAVIS runs it.

pub mod answer;
pub mod contractions;
pub mod files;
pub mod normalize;
pub mod score;
pub mod zero_shot;

pub use crate::pystr::PythonSum;
pub use answer::{postprocess_generated_answer, AnswerDecoder};
pub use files::{GtAnswer, VqaAnnotation, VqaAnnotations, VqaPrediction, VqaQuestions, VqaResults};
pub use normalize::{
    normalize_ground_truth, normalize_prediction, process_digit_article, process_punctuation,
};
pub use score::{
    question_accuracy, vqa_accuracy, vqa_accuracy_with, vqa_accuracy_with_questions, OrderedScores,
    VqaAccuracy,
};
