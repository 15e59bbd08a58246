//! Images and texts from the command line into model-ready tensors.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Tensor};
use datasets::image::{decode_file, eval_transform, DecodeLimits, ImageProcessorConfig};
use datasets::text::{Padding, TextTokenizer, TokenBatch};
use qformer::masks::PaddingMask;

/// Decode, resize and normalise every image with the evaluation transform (plain resize to the
/// processor size, CLIP normalisation) and stack them.
// paths: N files -> [N, 3, H, W]
pub fn load_images(
    paths: &[PathBuf],
    processor: &ImageProcessorConfig,
    device: &Device,
) -> Result<Tensor> {
    if paths.is_empty() {
        bail!("no image given");
    }
    let mut data = Vec::new();
    let mut shape = (0, 0, 0);
    for path in paths {
        // The datasets error already names the file; its source chain would repeat the OS error.
        let img = decode_file(path, DecodeLimits::default()).map_err(|e| anyhow!("image {e}"))?;
        let t = eval_transform(&img, processor);
        shape = (t.channels, t.height, t.width);
        data.extend_from_slice(&t.data);
    }
    let (c, h, w) = shape;
    Ok(Tensor::from_vec(data, (paths.len(), c, h, w), device)?)
}

/// Tokenized texts as ids `[N, L]` (u32) plus their padding mask.
pub struct TextBatch {
    pub input_ids: Tensor,
    pub mask: PaddingMask,
}

/// Tokenize, padded to the tokenizer's `max_length` as LAVIS does.
pub fn tokenize(tokenizer: &TextTokenizer, texts: &[String], device: &Device) -> Result<TextBatch> {
    if texts.is_empty() {
        bail!("no text given");
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tokenizer.encode(&refs, Padding::MaxLength)?;
    to_text_batch(&batch, device)
}

fn to_text_batch(batch: &TokenBatch, device: &Device) -> Result<TextBatch> {
    let input_ids =
        Tensor::from_vec(batch.input_ids.clone(), (batch.batch, batch.seq_len), device)?;
    let rows: Vec<Vec<u32>> =
        batch.attention_mask.chunks(batch.seq_len.max(1)).map(<[u32]>::to_vec).collect();
    Ok(TextBatch { input_ids, mask: PaddingMask::from_rows(&rows)? })
}

/// The values of a `[N, M]` tensor as nested vectors (for JSON).
pub fn to_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
}
