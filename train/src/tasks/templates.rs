//! How a connector's training sample reads as LLM tokens: the template of each connector stage,
//! tokenized as its reference trainer tokenizes it, with the loss on the same tokens.
//!
//! - LLaVA `plain` (stage 1): `<image>` + caption + `"\n"`; the loss on everything after the
//!   image.
//! - LLaVA `v1` (stage 2): `SYSTEM USER: <image>\n{q1} ASSISTANT: {a1}</s>USER: {q2} ...`; the
//!   loss on each assistant answer and its `</s>`, found with LLaVA's own length arithmetic
//!   (`preprocess_v1`), so that a sample whose rounds do not tokenize to the same lengths alone
//!   as in the whole is left out, as LLaVA leaves it out (it masks every target).
//! - LLaVA splits the text on `<image>` and tokenizes each stretch with the BOS, keeping only
//!   the first one (`tokenizer_image_token`).
//! - MiniGPT-4 stage 1: `[BOS]` image, then caption + `"\n"` learned (tokenized without special
//!   tokens, cut to `max_txt_len` tokens).
//! - MiniGPT-4 stage 2: `[BOS] ###Human: <Img>` image `</Img> {instruction} ###Assistant: `,
//!   then answer + `###` learned; the instruction and answer are a conversation's first
//!   exchange, or a prompt of MiniGPT-4's list and a caption.

use std::path::Path;

use datasets::formats::{Speaker, Turn};
use datasets::text::tokenize_image_chunks;
use qformer::connector::Piece;
use qformer::minigpt4::{image_instruction, minigpt4_pieces};
use tokenizers::Tokenizer;

use crate::{Error, Result};

/// LLaVA's image marker in prompts and conversations.
pub const LLAVA_IMAGE: &str = "<image>";
/// LLaVA `conv_vicuna_v1.system`.
pub const LLAVA_V1_SYSTEM: &str = "A chat between a curious human and an artificial intelligence \
    assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";

/// The template of one connector stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    LlavaPlain,
    /// `legacy`: the tokenizer's `legacy` flag (`tokenizer_config.json`); LLaVA takes one token
    /// less per round after the first when it is false.
    LlavaV1 {
        legacy: bool,
    },
    MiniGpt4Caption,
    MiniGpt4Chat {
        prompt_template: String,
        image_marker: String,
        end_sym: String,
    },
}

/// A sample's text.
#[derive(Debug, Clone, Copy)]
pub enum TrainText<'a> {
    Caption(&'a str),
    Conversation(&'a [Turn]),
    /// A caption as the answer to an instruction that holds the image marker (MiniGPT-4's
    /// stage 2 on `cc_sbu_align`).
    Instructed {
        instruction: &'a str,
        answer: &'a str,
    },
}

/// The tokenizer of a connector run and its limits.
pub struct TemplateTokenizer {
    tokenizer: Tokenizer,
    bos: u32,
    template: Template,
    /// LLaVA: the longest expanded sequence (`model_max_length`).
    max_seq_len: usize,
    /// MiniGPT-4: the most target tokens (`max_txt_len`).
    max_txt_len: usize,
    /// Rows an image takes in the expanded sequence.
    tokens_per_image: usize,
}

/// One token of LLaVA's sequence before expansion: an id or the image placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Id(u32),
    Image,
}

impl TemplateTokenizer {
    pub fn new(
        tokenizer: Tokenizer,
        template: Template,
        max_seq_len: usize,
        max_txt_len: usize,
        tokens_per_image: usize,
    ) -> Result<Self> {
        let bos = ["<s>", "<|begin_of_text|>"]
            .iter()
            .find_map(|t| tokenizer.token_to_id(t))
            .ok_or_else(|| Error::Config("the LLM tokenizer has no BOS token (<s>)".into()))?;
        Ok(Self { tokenizer, bos, template, max_seq_len, max_txt_len, tokens_per_image })
    }

    /// `tokenizer.json` at `path`.
    pub fn from_file(
        path: &Path,
        template: Template,
        max_seq_len: usize,
        max_txt_len: usize,
        tokens_per_image: usize,
    ) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| {
            Error::Msg(format!("{}: cannot read the tokenizer: {e}", path.display()))
        })?;
        Self::new(tokenizer, template, max_seq_len, max_txt_len, tokens_per_image)
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    /// The pieces of one sample, or why it is left out (a text its template cannot read, a
    /// tokenization mismatch, too long).
    pub fn pieces(&self, text: TrainText) -> std::result::Result<Vec<Piece>, String> {
        match (&self.template, text) {
            (Template::LlavaPlain, text) => {
                let caption = caption_of(text)?;
                let toks = self.image_tokens(&format!("{LLAVA_IMAGE}{caption}\n"))?;
                let prompt_len = self.image_tokens(LLAVA_IMAGE)?.len();
                let learn: Vec<bool> = (0..toks.len()).map(|i| i >= prompt_len).collect();
                self.llava_pieces(&toks, &learn)
            }
            (Template::LlavaV1 { legacy }, TrainText::Conversation(turns)) => {
                let (toks, learn) = self.llava_v1(turns, *legacy)?;
                self.llava_pieces(&toks, &learn)
            }
            (Template::LlavaV1 { .. }, _) => {
                Err("LLaVA's v1 template needs a conversation, not a caption".into())
            }
            (Template::MiniGpt4Caption, text) => {
                let caption = caption_of(text)?;
                let mut target = self.encode(&format!("{caption}\n"), false)?;
                target.truncate(self.max_txt_len);
                Ok(vec![Piece::prompt(vec![self.bos]), Piece::Image, Piece::target(target)])
            }
            (Template::MiniGpt4Chat { prompt_template, image_marker, end_sym }, text) => {
                let (instruction, answer) = match text {
                    TrainText::Conversation(turns) => {
                        let (question, answer) = first_exchange(turns)?;
                        (minigpt4_instruction(question, image_marker), answer)
                    }
                    TrainText::Instructed { instruction, answer } => {
                        (instruction.to_string(), answer)
                    }
                    TrainText::Caption(_) => {
                        return Err("MiniGPT-4's stage-2 template needs an instruction (data.instructions) or a conversation".into())
                    }
                };
                let prompt = prompt_template.replacen("{}", &instruction, 1);
                let parts: Vec<&str> = prompt.split(image_marker.as_str()).collect();
                if parts.len() != 2 {
                    return Err(format!(
                        "the prompt has {} image markers ({image_marker}), MiniGPT-4 reads one",
                        parts.len() - 1
                    ));
                }
                let pieces = parts
                    .iter()
                    .map(|p| self.encode(p, false))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let mut out = minigpt4_pieces(self.bos, pieces);
                let mut target = self.encode(&format!("{answer}{end_sym}"), false)?;
                target.truncate(self.max_txt_len);
                out.push(Piece::target(target));
                Ok(out)
            }
        }
    }

    fn encode(&self, text: &str, special: bool) -> std::result::Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("cannot tokenize {text:?}: {e}"))
    }

    /// LLaVA `tokenizer_image_token`: each stretch between `<image>` markers tokenized with the
    /// special tokens, the BOS kept only at the front.
    fn image_tokens(&self, prompt: &str) -> std::result::Result<Vec<Tok>, String> {
        let (lead, runs) =
            tokenize_image_chunks(&self.tokenizer, prompt, LLAVA_IMAGE, Some(self.bos))
                .map_err(|e| e.to_string())?;
        let mut out: Vec<Tok> = lead.into_iter().map(Tok::Id).collect();
        for (i, run) in runs.iter().enumerate() {
            if i > 0 {
                out.push(Tok::Image);
            }
            out.extend(run.iter().map(|&id| Tok::Id(id)));
        }
        Ok(out)
    }

    /// LLaVA `preprocess_multimodal` + `conv_vicuna_v1.get_prompt` + `preprocess_v1`.
    fn llava_v1(
        &self,
        turns: &[Turn],
        legacy: bool,
    ) -> std::result::Result<(Vec<Tok>, Vec<bool>), String> {
        // A conversation that starts with the assistant drops that turn.
        let turns = match turns.first() {
            Some(t) if t.from == Speaker::Assistant => &turns[1..],
            _ => turns,
        };
        if turns.is_empty() {
            return Err("the conversation has no turns".into());
        }
        let mut prompt = format!("{LLAVA_V1_SYSTEM} ");
        for (j, turn) in turns.iter().enumerate() {
            let expected = if j % 2 == 0 { Speaker::Human } else { Speaker::Assistant };
            if turn.from != expected {
                return Err(format!(
                    "turn {j} is not from the {expected:?} (turns must alternate)"
                ));
            }
            // The image moves to the front of its turn, on a line of its own.
            let value = if turn.value.contains(LLAVA_IMAGE) {
                let rest = turn.value.replace(LLAVA_IMAGE, "");
                format!("{LLAVA_IMAGE}\n{}", rest.trim()).trim().to_string()
            } else {
                turn.value.clone()
            };
            let (role, sep) = if j % 2 == 0 { ("USER", " ") } else { ("ASSISTANT", "</s>") };
            prompt.push_str(&format!("{role}: {value}{sep}"));
        }
        let toks = self.image_tokens(&prompt)?;
        let mut learn = vec![true; toks.len()];
        let sep = " ASSISTANT: ";
        let mut cur = 1usize;
        learn[0] = false;
        for (i, round) in prompt.split("</s>").enumerate() {
            if round.is_empty() {
                break;
            }
            let parts: Vec<&str> = round.split(sep).collect();
            if parts.len() != 2 {
                break;
            }
            let mut round_len = self.image_tokens(round)?.len();
            let mut instruction_len =
                self.image_tokens(&format!("{}{sep}", parts[0]))?.len().saturating_sub(2);
            if i != 0 && !legacy {
                round_len -= 1;
                instruction_len = instruction_len.saturating_sub(1);
            }
            for l in learn.iter_mut().skip(cur).take(instruction_len) {
                *l = false;
            }
            cur += round_len;
        }
        for l in learn.iter_mut().skip(cur) {
            *l = false;
        }
        if cur != toks.len() {
            return Err(format!(
                "tokenization mismatch: the rounds give {cur} tokens, the whole {}",
                toks.len()
            ));
        }
        Ok((toks, learn))
    }

    /// Runs of LLaVA tokens as pieces (the image never learned), cut at `max_seq_len`
    /// positions after expansion.
    fn llava_pieces(
        &self,
        toks: &[Tok],
        learn: &[bool],
    ) -> std::result::Result<Vec<Piece>, String> {
        if !toks.contains(&Tok::Image) {
            return Err(format!("the text has no {LLAVA_IMAGE} marker"));
        }
        let mut out: Vec<Piece> = Vec::new();
        let mut len = 0usize;
        for (&tok, &l) in toks.iter().zip(learn) {
            match tok {
                Tok::Image => {
                    len += self.tokens_per_image;
                    if len > self.max_seq_len {
                        return Err(format!(
                            "the image ends past data.max_seq_len {} (at {len})",
                            self.max_seq_len
                        ));
                    }
                    out.push(Piece::Image);
                }
                Tok::Id(id) => {
                    if len == self.max_seq_len {
                        break;
                    }
                    len += 1;
                    match out.last_mut() {
                        Some(Piece::Text { ids, learn }) if *learn == l => ids.push(id),
                        _ => out.push(Piece::Text { ids: vec![id], learn: l }),
                    }
                }
            }
        }
        Ok(out)
    }
}

fn caption_of(text: TrainText<'_>) -> std::result::Result<&str, String> {
    match text {
        TrainText::Caption(c) | TrainText::Instructed { answer: c, .. } => Ok(c),
        // LLaVA's stage-1 data (LCS-558K) is a conversation whose answer is the caption.
        TrainText::Conversation(turns) => first_exchange(turns).map(|(_, a)| a),
    }
}

/// The first human turn and the assistant's answer to it.
fn first_exchange(turns: &[Turn]) -> std::result::Result<(&str, &str), String> {
    let q = turns.iter().position(|t| t.from == Speaker::Human);
    match q.and_then(|i| turns.get(i + 1).map(|a| (&turns[i], a))) {
        Some((q, a)) if a.from == Speaker::Assistant => Ok((&q.value, &a.value)),
        _ => Err("the conversation has no human turn answered by the assistant".into()),
    }
}

/// A question as MiniGPT-4's instruction: kept when it holds the marker already (MiniGPT-4's
/// own prompts), else (LLaVA's `<image>` or none) with `<Img>{marker}</Img>` at the front.
fn minigpt4_instruction(question: &str, marker: &str) -> String {
    if question.contains(marker) {
        return question.to_string();
    }
    image_instruction(marker, question.replace(LLAVA_IMAGE, "").trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(template: Template, max_seq_len: usize) -> TemplateTokenizer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/llava-tiny/tokenizer.json");
        TemplateTokenizer::from_file(&path, template, max_seq_len, 32, 16).unwrap()
    }

    fn turn(from: Speaker, value: &str) -> Turn {
        Turn { from, value: value.into() }
    }

    /// The learned text of `pieces`, decoded with special tokens.
    fn learned(tok: &TemplateTokenizer, pieces: &[Piece]) -> Vec<String> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text { ids, learn: true } => Some(tok.tokenizer.decode(ids, false).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn llava_v1_learns_each_answer_with_its_end_of_sequence_and_nothing_else() {
        let tok = tokenizer(Template::LlavaV1 { legacy: true }, 2048);
        let turns = [
            turn(Speaker::Assistant, "dropped"),
            turn(Speaker::Human, "Where is it?\n<image>"),
            turn(Speaker::Assistant, "On the right."),
            turn(Speaker::Human, "And its color?"),
            turn(Speaker::Assistant, "Blue."),
        ];
        let pieces = tok.pieces(TrainText::Conversation(&turns)).unwrap();
        assert_eq!(pieces.iter().filter(|p| matches!(p, Piece::Image)).count(), 1);
        let text: Vec<String> =
            learned(&tok, &pieces).iter().map(|s| s.trim().to_string()).collect();
        assert_eq!(text, ["On the right.</s>", "Blue.</s>"]);
        // The image moved to the front of its turn, right after the system prompt and role.
        let Piece::Text { ids, learn: false } = &pieces[0] else { panic!("{pieces:?}") };
        assert!(tok.tokenizer.decode(ids, false).unwrap().trim_end().ends_with("USER:"));
    }

    #[test]
    fn llava_plain_learns_the_caption_after_the_image() {
        let tok = tokenizer(Template::LlavaPlain, 2048);
        let pieces = tok.pieces(TrainText::Caption("a red circle")).unwrap();
        assert_eq!(pieces[..2], [Piece::prompt(vec![tok.bos]), Piece::Image]);
        assert_eq!(learned(&tok, &pieces), ["a red circle\n"]);
    }

    #[test]
    fn unreadable_samples_say_why() {
        let tok = tokenizer(Template::LlavaV1 { legacy: true }, 2048);
        let no_image = [turn(Speaker::Human, "hi"), turn(Speaker::Assistant, "hello")];
        let e = tok.pieces(TrainText::Conversation(&no_image)).unwrap_err();
        assert!(e.contains("no <image>"), "{e}");
        let two_humans = [turn(Speaker::Human, "<image>\nhi"), turn(Speaker::Human, "there")];
        let e = tok.pieces(TrainText::Conversation(&two_humans)).unwrap_err();
        assert!(e.contains("turn 1"), "{e}");
        // 16 image rows do not fit in 10 positions; the text after a fitting image is cut.
        let short = tokenizer(Template::LlavaPlain, 10);
        let e = short.pieces(TrainText::Caption("a red circle")).unwrap_err();
        assert!(e.contains("max_seq_len 10"), "{e}");
        let fits = tokenizer(Template::LlavaPlain, 19);
        let pieces = fits.pieces(TrainText::Caption("a red circle on the left")).unwrap();
        let len: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::Text { ids, .. } => ids.len(),
                Piece::Image => 16,
            })
            .sum();
        assert_eq!(len, 19);
    }

    #[test]
    fn minigpt4_stage_two_wraps_the_instruction_and_learns_the_answer_with_the_end_symbol() {
        let tok = tokenizer(
            Template::MiniGpt4Chat {
                prompt_template: "###Human: {} ###Assistant: ".into(),
                image_marker: "<ImageHere>".into(),
                end_sym: "###".into(),
            },
            2048,
        );
        let turns = [turn(Speaker::Human, "<image>\nWhat is it?"), turn(Speaker::Assistant, "red")];
        let pieces = tok.pieces(TrainText::Conversation(&turns)).unwrap();
        let Piece::Text { ids, .. } = &pieces[1] else { panic!("{pieces:?}") };
        assert_eq!(tok.tokenizer.decode(ids, false).unwrap().trim(), "###Human: <Img>");
        assert_eq!(pieces[2], Piece::Image);
        let Piece::Text { ids, learn: false } = &pieces[3] else { panic!("{pieces:?}") };
        assert_eq!(
            tok.tokenizer.decode(ids, false).unwrap().trim(),
            "</Img> What is it? ###Assistant:"
        );
        assert_eq!(learned(&tok, &pieces), ["red###"]);
    }
}
