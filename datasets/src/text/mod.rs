//! Text cleaning (LAVIS processors) and tokenization.

pub mod clean;
pub mod image_chunks;
pub mod tokenizer;

pub use clean::{pre_caption, pre_question, CaptionCleaner};
pub use image_chunks::tokenize_image_chunks;
pub use tokenizer::{Padding, TextTokenizer, TokenBatch};
