//! JPEG pixels as Pillow decodes them: libjpeg-turbo's algorithm (the islow IDCT, fancy
//! upsampling), through mozjpeg's decoder, which is libjpeg-turbo's. The image crate's JPEG
//! decoder differs from it by up to 4 levels on a photograph, which moves a model's outputs.

use super::resample::RgbImage8;

/// The RGB pixels of a baseline or progressive JPEG in YCbCr, RGB or grey (replicated, as
/// `convert("RGB")` does); `None` for the colour spaces left to the other decoder (CMYK, YCCK).
/// A fatal libjpeg error is an `Err`; its warnings (extraneous bytes, ...) are ignored, as
/// Pillow ignores them.
pub fn decode_jpeg(bytes: &[u8]) -> Option<Result<RgbImage8, String>> {
    let run = || -> std::io::Result<Option<RgbImage8>> {
        let dec = mozjpeg::Decompress::new_mem(bytes)?;
        let (width, height) = (dec.width(), dec.height());
        use mozjpeg::ColorSpace::*;
        let data: Vec<u8> = match dec.color_space() {
            JCS_YCbCr | JCS_RGB => {
                let mut rgb = dec.rgb()?;
                let px: Vec<[u8; 3]> = rgb.read_scanlines()?;
                rgb.finish()?;
                px.into_iter().flatten().collect()
            }
            JCS_GRAYSCALE => {
                let mut grey = dec.grayscale()?;
                let px: Vec<u8> = grey.read_scanlines()?;
                grey.finish()?;
                px.into_iter().flat_map(|v| [v, v, v]).collect()
            }
            _ => return Ok(None),
        };
        if data.len() != width * height * 3 {
            return Err(std::io::Error::other(format!(
                "{} pixel values decoded for {width}x{height}",
                data.len()
            )));
        }
        Ok(Some(RgbImage8 { width, height, data }))
    };
    // libjpeg reports a fatal error by unwinding out of the C code.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(Some(img))) => Some(Ok(img)),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => Some(Err(e.to_string())),
        Err(panic) => Some(Err(panic
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "libjpeg failed".into()))),
    }
}
