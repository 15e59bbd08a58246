//! Decoding any supported file into the 8-bit RGB that `PIL.Image.open(..).convert("RGB")` gives.

use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

use ::image::{DynamicImage, ImageDecoder, ImageReader};

use super::jpeg::decode_jpeg;
use super::resample::RgbImage8;
use crate::error::{DataError, Result};

/// Dimension limits checked from the header, before any pixel is decoded, so a decompression
/// bomb costs nothing. Defaults follow Pillow's `MAX_IMAGE_PIXELS` error threshold
/// (2 × 89,478,485 pixels) and refuse sides above 32,768.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_side: u32,
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_side: 32_768, max_pixels: 2 * 89_478_485 }
    }
}

/// Decode an image file (format guessed from content), honouring EXIF orientation.
pub fn decode_file(path: &Path, limits: DecodeLimits) -> Result<RgbImage8> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_with_name(&bytes, &path.display().to_string(), limits)
}

/// Decode in-memory bytes; `what` names the sample in errors (a path or a shard key).
pub fn decode_bytes(bytes: &[u8], what: &str, limits: DecodeLimits) -> Result<RgbImage8> {
    decode_with_name(bytes, what, limits)
}

fn decode_with_name(bytes: &[u8], what: &str, limits: DecodeLimits) -> Result<RgbImage8> {
    let image_err = |message| DataError::Image { what: what.to_string(), message };
    if jpeg_is_truncated(bytes) {
        return Err(image_err(
            "truncated JPEG: no end-of-image marker after the last scan".to_string(),
        ));
    }
    decode_reader(Cursor::new(bytes), bytes, limits).map_err(image_err)
}

/// The JPEG decoder fills a cut-off scan with grey without complaint; PIL refuses such a file
/// ("image file is truncated"). Entropy-coded data never holds `FF D9` (a data `FF` is
/// stuffed with `00`), so a complete file has that marker after its last start-of-scan.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return false;
    }
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xff, marker]);
    match last(0xda) {
        Some(sos) => last(0xd9).is_none_or(|eoi| eoi < sos),
        None => false, // no scan at all: the decoder reports that itself
    }
}

fn decode_reader<R: BufRead + Seek>(
    reader: R,
    bytes: &[u8],
    limits: DecodeLimits,
) -> std::result::Result<RgbImage8, String> {
    let mut reader = ImageReader::new(reader).with_guessed_format().map_err(|e| e.to_string())?;
    let is_jpeg = reader.format() == Some(::image::ImageFormat::Jpeg);
    let mut lim = ::image::Limits::default();
    lim.max_image_width = Some(limits.max_side);
    lim.max_image_height = Some(limits.max_side);
    reader.limits(lim);
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("empty image ({w}x{h})"));
    }
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(format!(
            "{w}x{h} exceeds the {} pixel limit (decompression bomb?)",
            limits.max_pixels
        ));
    }
    // A broken EXIF block must not lose an otherwise good image: fall back to no rotation.
    let orientation = decoder.orientation().unwrap_or(::image::metadata::Orientation::NoTransforms);
    // The header was read by the image crate (limits, orientation); the pixels of a JPEG come
    // from libjpeg-turbo's algorithm, as Pillow's do.
    if let Some(decoded) = is_jpeg.then(|| decode_jpeg(bytes)).flatten() {
        let rgb = decoded?;
        let buf = ::image::RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.data)
            .ok_or("libjpeg gave a buffer of the wrong size")?;
        let mut img = DynamicImage::ImageRgb8(buf);
        img.apply_orientation(orientation);
        return Ok(to_rgb8(img));
    }
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    img.apply_orientation(orientation);
    Ok(to_rgb8(img))
}

/// `convert("RGB")` semantics: grey is replicated, alpha is dropped without compositing
/// (LAVIS/HF do not matte onto white), 16-bit samples keep their high byte as PIL's PNG
/// loader does for RGB. (PIL clips 16-bit *grey* to 255 instead; we do not copy that quirk.)
pub fn to_rgb8(img: DynamicImage) -> RgbImage8 {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageLuma8(b) => b.into_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(b) => {
            b.into_raw().chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect()
        }
        DynamicImage::ImageRgba8(b) => {
            b.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
        }
        DynamicImage::ImageLuma16(b) => {
            b.into_raw().iter().flat_map(|&v| [(v >> 8) as u8; 3]).collect()
        }
        DynamicImage::ImageLumaA16(b) => {
            b.into_raw().chunks_exact(2).flat_map(|p| [(p[0] >> 8) as u8; 3]).collect()
        }
        DynamicImage::ImageRgb16(b) => b.into_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    RgbImage8 { width, height, data }
}
