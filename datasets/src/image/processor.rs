//! The evaluation transform of HF `BlipImageProcessor` / LAVIS `blip_image_eval`, and its
//! `preprocessor_config.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::resample::{resize_bicubic, RgbImage8};
use crate::error::{DataError, Result};

/// OpenAI CLIP normalisation used by every BLIP-2 checkpoint.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Target size as HF writes it (`{"height": 224, "width": 224}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSize {
    pub height: usize,
    pub width: usize,
}

/// `preprocessor_config.json` of a `BlipImageProcessor`, with HF's class defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageProcessorConfig {
    pub do_resize: bool,
    pub size: ImageSize,
    /// PIL resample code; only 3 (BICUBIC) is implemented.
    pub resample: u32,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: Vec<f64>,
    pub image_std: Vec<f64>,
    pub do_convert_rgb: bool,
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        ImageProcessorConfig {
            do_resize: true,
            size: ImageSize { height: 384, width: 384 },
            resample: 3,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN.to_vec(),
            image_std: CLIP_STD.to_vec(),
            do_convert_rgb: true,
        }
    }
}

impl ImageProcessorConfig {
    /// The LAVIS/HF setting for a square model input of `size` pixels.
    pub fn square(size: usize) -> Self {
        ImageProcessorConfig { size: ImageSize { height: size, width: size }, ..Default::default() }
    }

    /// Read and validate a `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let cfg: ImageProcessorConfig = serde_json::from_str(&text)
            .map_err(|source| DataError::Json { path: path.to_path_buf(), source })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Refuses values this processor cannot apply, naming `path` (where they come from or go).
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.image_mean.len() != 3 {
            return Err(DataError::field(path, "image_mean", "expected 3 values"));
        }
        if self.image_std.len() != 3 || self.image_std.contains(&0.0) {
            return Err(DataError::field(path, "image_std", "expected 3 non-zero values"));
        }
        if self.resample != 3 {
            return Err(DataError::field(
                path,
                "resample",
                format!("only 3 (bicubic) is supported, got {}", self.resample),
            ));
        }
        if self.size.height == 0 || self.size.width == 0 {
            return Err(DataError::field(path, "size", "height and width must be > 0"));
        }
        Ok(())
    }
}

/// A channels-first float image `[channels, height, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTensor {
    pub data: Vec<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// Rescale and normalise an already-resized image into CHW floats with HF's arithmetic:
/// `(u8 as f64 * factor) as f32`, then `(x - mean) / std` in f32.
pub fn to_tensor(img: &RgbImage8, cfg: &ImageProcessorConfig) -> ImageTensor {
    let (h, w) = (img.height, img.width);
    let plane = h * w;
    let mut data = vec![0f32; 3 * plane];
    let mean: [f32; 3] = std::array::from_fn(|c| cfg.image_mean[c] as f32);
    let std: [f32; 3] = std::array::from_fn(|c| cfg.image_std[c] as f32);
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            let x = if cfg.do_rescale { (v as f64 * cfg.rescale_factor) as f32 } else { v as f32 };
            *out = if cfg.do_normalize { (x - mean[c]) / std[c] } else { x };
        }
    }
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        data[i] = lut[0][px[0] as usize];
        data[plane + i] = lut[1][px[1] as usize];
        data[2 * plane + i] = lut[2][px[2] as usize];
    }
    ImageTensor { data, channels: 3, height: h, width: w }
}

/// Evaluation transform: exact-square bicubic resize (no aspect ratio kept), rescale, normalise.
pub fn eval_transform(img: &RgbImage8, cfg: &ImageProcessorConfig) -> ImageTensor {
    if cfg.do_resize && (img.width != cfg.size.width || img.height != cfg.size.height) {
        let resized = resize_bicubic(img, cfg.size.width, cfg.size.height);
        to_tensor(&resized, cfg)
    } else {
        to_tensor(img, cfg)
    }
}
