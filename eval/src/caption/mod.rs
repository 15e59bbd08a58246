//! COCO caption metrics equal to pycocoevalcap 1.2 (`COCOEvalCap` as LAVIS calls it), without Java:
//! the PTB tokenizer ([`ptb`]), BLEU-1..4 ([`bleu`]), METEOR 1.5 ([`meteor`]), ROUGE-L ([`rouge`]) and
//! CIDEr-D ([`cider`]), each a port of the code that produced the published numbers, and the COCO files
//! they read ([`files`]). SPICE is not computed: it needs Java and Stanford CoreNLP 3.6.0 models.

pub mod bleu;
pub mod cider;
pub mod files;
pub mod meteor;
pub mod ngrams;
pub mod numpy_mean;
pub mod ptb;
pub mod rouge;
pub mod score;

pub use files::{
    pair_results, CaptionAnnotations, CaptionImage, CaptionResults, ImageId, PairedCaptions,
};
pub use ptb::{ptb_tokens, tokenize_caption, tokenized_caption_string};
pub use score::{score_captions, CaptionScores, CorpusScores, ImageScores};

/// One image's captions after the PTB tokenizer: what BLEU, ROUGE-L and CIDEr compare.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedImage {
    pub candidate: Vec<String>,
    pub references: Vec<Vec<String>>,
}
