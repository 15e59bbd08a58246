//! The Q-Former's BERT tokenizer (`tokenizer.json`) with `[DEC]` as the ITG bos token,
//! padded/truncated like HF `tokenizer(texts, padding=..., truncation=True, max_length=N)`.

use std::path::{Path, PathBuf};

use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::error::{DataError, Result};

/// How a batch is padded: LAVIS pads to `max_length` (32 in training, 35 in retrieval);
/// HF examples often pad to the longest text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    MaxLength,
    Longest,
}

/// Token ids and the 1 = keep / 0 = pad mask, row-major `[batch, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub input_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    pub batch: usize,
    pub seq_len: usize,
}

impl TokenBatch {
    pub fn row(&self, i: usize) -> &[u32] {
        &self.input_ids[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// ITG decoder input: the same ids with `[CLS]` (column 0) replaced by `[DEC]`, as LAVIS
    /// `decoder_input_ids[:, 0] = self.tokenizer.bos_token_id`.
    pub fn with_bos(&self, bos_id: u32) -> Vec<u32> {
        let mut ids = self.input_ids.clone();
        for row in ids.chunks_mut(self.seq_len) {
            if let Some(first) = row.first_mut() {
                *first = bos_id;
            }
        }
        ids
    }
}

/// BERT WordPiece tokenizer for the Q-Former text side.
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    pub max_length: usize,
    pub pad_id: u32,
    /// `[DEC]`: LAVIS adds it to bert-base-uncased as id 30522.
    pub bos_id: u32,
}

impl TextTokenizer {
    /// Load `tokenizer.json`; it must contain `[PAD]` and `[DEC]`.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        let tok_err = |message: String| DataError::Tokenizer { path: path.to_path_buf(), message };
        if max_length < 2 {
            return Err(tok_err(format!("max_length {max_length} < 2")));
        }
        let tokenizer = Tokenizer::from_file(path).map_err(|e| tok_err(e.to_string()))?;
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .ok_or_else(|| tok_err("no [PAD] token in the vocabulary".into()))?;
        let bos_id = tokenizer.token_to_id("[DEC]").ok_or_else(|| {
            tok_err("no [DEC] token (the ITG bos token) in the vocabulary".into())
        })?;
        Ok(TextTokenizer { tokenizer, path: path.to_path_buf(), max_length, pad_id, bos_id })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Tokenize with `[CLS] ... [SEP]`, truncating to `max_length` and padding on the right.
    pub fn encode(&self, texts: &[&str], padding: Padding) -> Result<TokenBatch> {
        let mut tok = self.tokenizer.clone();
        tok.with_truncation(Some(TruncationParams {
            max_length: self.max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| DataError::Tokenizer { path: self.path.clone(), message: e.to_string() })?;
        tok.with_padding(Some(PaddingParams {
            strategy: match padding {
                Padding::MaxLength => PaddingStrategy::Fixed(self.max_length),
                Padding::Longest => PaddingStrategy::BatchLongest,
            },
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: self.pad_id,
            pad_type_id: 0,
            pad_token: "[PAD]".to_string(),
        }));
        let encodings = tok.encode_batch(texts.to_vec(), true).map_err(|e| {
            DataError::Tokenizer { path: self.path.clone(), message: e.to_string() }
        })?;
        let seq_len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut input_ids = Vec::with_capacity(texts.len() * seq_len);
        let mut attention_mask = Vec::with_capacity(texts.len() * seq_len);
        for e in &encodings {
            input_ids.extend_from_slice(e.get_ids());
            attention_mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(TokenBatch { input_ids, attention_mask, batch: texts.len(), seq_len })
    }
}
