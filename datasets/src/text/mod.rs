//! Text cleaning (LAVIS processors) and tokenization.

pub mod clean;
pub mod tokenizer;

pub use clean::{pre_caption, pre_question, CaptionCleaner};
pub use tokenizer::{Padding, TextTokenizer, TokenBatch};
