//! MiniGPT-4's prompt layout: one BOS, then the prompt's text pieces with an image between
//! each two.

use crate::connector::Piece;

/// `[<s>] + text_pieces[0] + Image + text_pieces[1] + Image + ...`: the prompt split on the
/// image marker, each piece tokenized by the caller WITHOUT special tokens
/// (`add_special_tokens=False`), as MiniGPT-4 does; the BOS is added here, once.
pub fn minigpt4_pieces(bos: u32, text_pieces: Vec<Vec<u32>>) -> Vec<Piece> {
    let mut out = vec![Piece::prompt(vec![bos])];
    let n = text_pieces.len();
    for (i, ids) in text_pieces.into_iter().enumerate() {
        if !ids.is_empty() {
            out.push(Piece::prompt(ids));
        }
        if i + 1 < n {
            out.push(Piece::Image);
        }
    }
    out
}

/// MiniGPT-4's instruction about one image: `<Img>{marker}</Img> {question}`, as its chat and its
/// stage-2 prompts write it.
pub fn image_instruction(marker: &str, question: &str) -> String {
    format!("<Img>{marker}</Img> {question}")
}
