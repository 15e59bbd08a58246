//! Post-processing of generated answers before they are written to a VQA result file, as LAVIS's
//! zero-shot VQA does (`predict_answers` of the BLIP-2 OPT and FlanT5 models).

use crate::pystr::py_strip;

/// Which LLM produced the answer: the two LAVIS bridges post-process differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerDecoder {
    /// `Blip2OPT.predict_answers`: decode the new tokens with special tokens skipped, then `str.strip()`
    /// (OPT answers start with a space and may end at the "\n" eos).
    Opt,
    /// `Blip2T5.predict_answers`: decode with special tokens skipped, nothing else.
    FlanT5,
}

/// The answer string LAVIS stores for a decoded generation (special tokens already skipped by the
/// tokenizer's decode). OK-VQA's optional spaCy lemmatizer (`apply_lemmatizer`) is not reproduced.
pub fn postprocess_generated_answer(decoded: &str, decoder: AnswerDecoder) -> String {
    match decoder {
        AnswerDecoder::Opt => py_strip(decoded).to_string(),
        AnswerDecoder::FlanT5 => decoded.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_strips_python_whitespace_t5_keeps_text() {
        assert_eq!(postprocess_generated_answer(" two dogs\n", AnswerDecoder::Opt), "two dogs");
        assert_eq!(postprocess_generated_answer("\u{1f} yes \u{3000}", AnswerDecoder::Opt), "yes");
        assert_eq!(postprocess_generated_answer(" yes ", AnswerDecoder::FlanT5), " yes ");
    }
}
