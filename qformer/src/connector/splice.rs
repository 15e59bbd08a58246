//! Building the LLM's `inputs_embeds` from token runs and image slots, with the labels and the
//! padding mask that go with them.

use candle_core::{Result, Tensor};

use crate::llm::llama::LlamaForCausalLm;
use crate::llm::loss::IGNORE_INDEX;

/// One stretch of a sequence as the LLM reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Token ids; `learn` marks the ones that take the loss (labels = the ids).
    Text { ids: Vec<u32>, learn: bool },
    /// The next image's rows (images are taken in order, across rows too).
    Image,
}

impl Piece {
    /// Prompt text: read, not learned.
    pub fn prompt(ids: Vec<u32>) -> Self {
        Piece::Text { ids, learn: false }
    }

    /// Target text: learned.
    pub fn target(ids: Vec<u32>) -> Self {
        Piece::Text { ids, learn: true }
    }
}

/// Where padding goes: right for training (positions `0..len` per row either way), left for
/// generation (the next token follows every row's last one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadSide {
    Left,
    Right,
}

/// A spliced batch.
#[derive(Debug, Clone)]
pub struct Spliced {
    /// `[B, L, H]` in the LLM's dtype; padding rows are zeros.
    pub embeds: Tensor,
    /// `[B, L]` u32, 1 = a real position.
    pub attention_mask: Tensor,
    /// `[B][L]`: the ids of learned positions, [`IGNORE_INDEX`] elsewhere (images, prompt,
    /// padding).
    pub labels: Vec<Vec<i64>>,
    /// Each row's length before padding.
    pub lengths: Vec<usize>,
}

/// `rows` with their text embedded by `llm` and the rows of `image_embeds` (`[images, T, H]`)
/// spliced in, image by image. The number of image slots must equal the number of images.
/// One gather builds the batch, so the gradient reaches `image_embeds` (and a trainable
/// embedding table) through a single scatter.
// image_embeds: [images, T, H] -> Spliced { embeds: [B, L, H], .. }
pub fn splice(
    rows: &[Vec<Piece>],
    image_embeds: &Tensor,
    llm: &LlamaForCausalLm,
    pad: PadSide,
) -> Result<Spliced> {
    let (n_images, per_image, h) = image_embeds.dims3()?;
    let hidden = llm.config().hidden_size;
    if h != hidden {
        candle_core::bail!("image rows have width {h}, the language model {hidden}");
    }
    let slots = rows.iter().flatten().filter(|p| matches!(p, Piece::Image)).count();
    if slots != n_images {
        candle_core::bail!(
            "the sequences have {slots} image slot(s) but {n_images} image(s) were given"
        );
    }
    if rows.is_empty() {
        candle_core::bail!("splice: no sequences");
    }
    // Sources of the gathered rows: text embeddings first, then image rows, then one zero row.
    let text_ids: Vec<u32> = rows
        .iter()
        .flatten()
        .filter_map(|p| match p {
            Piece::Text { ids, .. } => Some(ids.iter().copied()),
            Piece::Image => None,
        })
        .flatten()
        .collect();
    let n_text = text_ids.len();
    let image_base = n_text;
    let zero_row = n_text + n_images * per_image;

    let mut sources: Vec<Vec<u32>> = Vec::with_capacity(rows.len());
    let mut labels: Vec<Vec<i64>> = Vec::with_capacity(rows.len());
    let (mut next_text, mut next_image) = (0usize, 0usize);
    for row in rows {
        let (mut src, mut lab) = (Vec::new(), Vec::new());
        for piece in row {
            match piece {
                Piece::Text { ids, learn } => {
                    src.extend((next_text..next_text + ids.len()).map(|i| i as u32));
                    next_text += ids.len();
                    lab.extend(ids.iter().map(|&t| if *learn { t as i64 } else { IGNORE_INDEX }));
                }
                Piece::Image => {
                    let first = image_base + next_image * per_image;
                    src.extend((first..first + per_image).map(|i| i as u32));
                    next_image += 1;
                    lab.extend(std::iter::repeat_n(IGNORE_INDEX, per_image));
                }
            }
        }
        sources.push(src);
        labels.push(lab);
    }
    let lengths: Vec<usize> = sources.iter().map(Vec::len).collect();
    let l = *lengths.iter().max().expect("rows is not empty");
    if l == 0 {
        candle_core::bail!("splice: every sequence is empty");
    }
    let mut index = Vec::with_capacity(rows.len() * l);
    let mut mask = Vec::with_capacity(rows.len() * l);
    for (src, lab) in sources.iter().zip(labels.iter_mut()) {
        let n_pad = l - src.len();
        let pad_rows = std::iter::repeat_n(zero_row as u32, n_pad);
        let pad_mask = std::iter::repeat_n(0u32, n_pad);
        let pad_labels = std::iter::repeat_n(IGNORE_INDEX, n_pad);
        match pad {
            PadSide::Right => {
                index.extend(src.iter().copied().chain(pad_rows));
                mask.extend(std::iter::repeat_n(1u32, src.len()).chain(pad_mask));
                lab.extend(pad_labels);
            }
            PadSide::Left => {
                index.extend(pad_rows.chain(src.iter().copied()));
                mask.extend(pad_mask.chain(std::iter::repeat_n(1u32, src.len())));
                let mut padded: Vec<i64> = pad_labels.collect();
                padded.append(lab);
                *lab = padded;
            }
        }
    }

    let dev = image_embeds.device();
    let dtype = llm.dtype();
    let mut parts = Vec::with_capacity(3);
    if n_text > 0 {
        let ids = Tensor::from_vec(text_ids, (1, n_text), dev)?;
        parts.push(llm.embed(&ids)?.reshape((n_text, hidden))?);
    }
    if n_images > 0 {
        parts.push(image_embeds.to_dtype(dtype)?.reshape((n_images * per_image, hidden))?);
    }
    parts.push(Tensor::zeros((1, hidden), dtype, dev)?);
    let table = Tensor::cat(&parts, 0)?;
    let index = Tensor::from_vec(index, rows.len() * l, dev)?;
    let embeds = table.index_select(&index, 0)?.reshape((rows.len(), l, hidden))?;
    let attention_mask = Tensor::from_vec(mask, (rows.len(), l), dev)?;
    Ok(Spliced { embeds, attention_mask, labels, lengths })
}
