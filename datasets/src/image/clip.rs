//! HF `CLIPImageProcessor` (the slow, PIL one) and its `preprocessor_config.json`: convert to RGB,
//! resize the shortest edge (PIL bicubic, aspect ratio kept as HF's
//! `get_resize_output_image_size(default_to_square=False)` computes it), center crop as HF's
//! `image_transforms.center_crop` (floor offsets, zero padding when the crop is larger), rescale,
//! normalise.

use std::path::Path;

use serde::Deserialize;

use super::processor::{
    to_tensor, ImageProcessorConfig, ImageSize, ImageTensor, CLIP_MEAN, CLIP_STD,
};
use super::resample::{resize_bicubic, RgbImage8};
use crate::error::{DataError, Result};

/// `size` as CLIP configs write it: `{"shortest_edge": n}` or `{"height": h, "width": w}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ClipSize {
    ShortestEdge { shortest_edge: usize },
    Exact { height: usize, width: usize },
}

fn d_size() -> ClipSize {
    ClipSize::ShortestEdge { shortest_edge: 224 }
}
fn d_crop() -> ImageSize {
    ImageSize { height: 224, width: 224 }
}

/// `preprocessor_config.json` of a `CLIPImageProcessor`, with HF's class defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipImageProcessorConfig {
    pub do_resize: bool,
    #[serde(default = "d_size")]
    pub size: ClipSize,
    pub resample: u32,
    pub do_center_crop: bool,
    #[serde(default = "d_crop")]
    pub crop_size: ImageSize,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: Vec<f64>,
    pub image_std: Vec<f64>,
    pub do_convert_rgb: bool,
}

impl Default for ClipImageProcessorConfig {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: d_size(),
            resample: 3,
            do_center_crop: true,
            crop_size: d_crop(),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN.to_vec(),
            image_std: CLIP_STD.to_vec(),
            do_convert_rgb: true,
        }
    }
}

impl ClipImageProcessorConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|source| DataError::Json { path: path.to_path_buf(), source })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        self.norm_config().validate(path)?;
        match self.size {
            ClipSize::ShortestEdge { shortest_edge: 0 } => {
                return Err(DataError::field(path, "size", "shortest_edge must be > 0"))
            }
            ClipSize::Exact { height, width } if height == 0 || width == 0 => {
                return Err(DataError::field(path, "size", "height and width must be > 0"))
            }
            _ => {}
        }
        if self.crop_size.height == 0 || self.crop_size.width == 0 {
            return Err(DataError::field(path, "crop_size", "height and width must be > 0"));
        }
        Ok(())
    }

    /// The rescale/normalise part as the BLIP processor config [`to_tensor`] reads.
    fn norm_config(&self) -> ImageProcessorConfig {
        ImageProcessorConfig {
            do_resize: self.do_resize,
            size: self.crop_size,
            resample: self.resample,
            do_rescale: self.do_rescale,
            rescale_factor: self.rescale_factor,
            do_normalize: self.do_normalize,
            image_mean: self.image_mean.clone(),
            image_std: self.image_std.clone(),
            do_convert_rgb: self.do_convert_rgb,
        }
    }
}

/// HF `get_resize_output_image_size(size=shortest_edge, default_to_square=False)`:
/// the short side becomes `shortest_edge`, the long one `int(shortest_edge * long / short)`.
/// Returns `(width, height)`.
pub fn shortest_edge_size(width: usize, height: usize, shortest_edge: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_short = shortest_edge;
    let new_long = (shortest_edge as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (new_short, new_long)
    } else {
        (new_long, new_short)
    }
}

/// Resize so the shortest edge is `shortest_edge` (PIL bicubic, Pillow-exact).
pub fn resize_shortest_edge(img: &RgbImage8, shortest_edge: usize) -> RgbImage8 {
    let (w, h) = shortest_edge_size(img.width, img.height, shortest_edge);
    if (w, h) == (img.width, img.height) {
        img.clone()
    } else {
        resize_bicubic(img, w, h)
    }
}

/// HF `image_transforms.center_crop`: offsets `(orig - crop) // 2`; a crop larger than the image
/// zero-pads it first, centred the same way.
pub fn center_crop(img: &RgbImage8, width: usize, height: usize) -> RgbImage8 {
    if width <= img.width && height <= img.height {
        let top = (img.height - height) / 2;
        let left = (img.width - width) / 2;
        return img.crop(left, top, width, height);
    }
    let (nw, nh) = (img.width.max(width), img.height.max(height));
    let (pt, pl) = ((nh - img.height) / 2, (nw - img.width) / 2);
    let mut padded = RgbImage8 { width: nw, height: nh, data: vec![0u8; nw * nh * 3] };
    for y in 0..img.height {
        let src = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        let start = ((y + pt) * nw + pl) * 3;
        padded.data[start..start + img.width * 3].copy_from_slice(src);
    }
    let top = (nh - height) / 2;
    let left = (nw - width) / 2;
    padded.crop(left, top, width, height)
}

/// LLaVA's `expand2square` background: `tuple(int(x * 255) for x in image_mean)` (truncated,
/// kept inside 0..=255).
pub fn mean_background(image_mean: &[f64]) -> [u8; 3] {
    let mut out = [0u8; 3];
    for (o, m) in out.iter_mut().zip(image_mean) {
        *o = (m * 255.0).clamp(0.0, 255.0) as u8;
    }
    out
}

/// LLaVA's `expand2square` (`image_aspect_ratio = "pad"`): a non-square image pasted onto a
/// square of its longer side filled with `background`, at offset `(long - short) // 2` on the
/// short axis (top for wide images, left for tall ones). A square image is returned as it is.
pub fn expand_to_square(img: &RgbImage8, background: [u8; 3]) -> RgbImage8 {
    let (w, h) = (img.width, img.height);
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let (left, top) = if w > h { (0, (w - h) / 2) } else { ((h - w) / 2, 0) };
    let mut data = Vec::with_capacity(side * side * 3);
    for _ in 0..side * side {
        data.extend_from_slice(&background);
    }
    for y in 0..h {
        let src = &img.data[y * w * 3..(y + 1) * w * 3];
        let start = ((y + top) * side + left) * 3;
        data[start..start + w * 3].copy_from_slice(src);
    }
    RgbImage8 { width: side, height: side, data }
}

/// The whole `CLIPImageProcessor` on an RGB image -> CHW floats.
pub fn clip_transform(img: &RgbImage8, cfg: &ClipImageProcessorConfig) -> ImageTensor {
    let mut cur = img.clone();
    if cfg.do_resize {
        cur = match cfg.size {
            ClipSize::ShortestEdge { shortest_edge } => resize_shortest_edge(&cur, shortest_edge),
            ClipSize::Exact { height, width } if (width, height) != (cur.width, cur.height) => {
                resize_bicubic(&cur, width, height)
            }
            ClipSize::Exact { .. } => cur,
        };
    }
    if cfg.do_center_crop {
        cur = center_crop(&cur, cfg.crop_size.width, cfg.crop_size.height);
    }
    to_tensor(&cur, &cfg.norm_config())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> RgbImage8 {
        let data = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        RgbImage8 { width: w, height: h, data }
    }

    #[test]
    fn shortest_edge_keeps_aspect_with_int_truncation() {
        assert_eq!(shortest_edge_size(50, 37, 32), (43, 32)); // int(32 * 50 / 37) = 43
        assert_eq!(shortest_edge_size(33, 71, 32), (32, 68)); // int(68.84)
        assert_eq!(shortest_edge_size(64, 64, 32), (32, 32));
        assert_eq!(shortest_edge_size(640, 480, 224), (298, 224));
    }

    #[test]
    fn expand_to_square_pads_the_short_axis_with_floor_offsets() {
        // 3 wide x 1 high: one row at y = (3 - 1) // 2 = 1 of a 3x3 square.
        let wide = RgbImage8 { width: 3, height: 1, data: (1..=9).collect() };
        let bg = [7, 8, 9];
        let sq = expand_to_square(&wide, bg);
        assert_eq!((sq.width, sq.height), (3, 3));
        let mut want: Vec<u8> = bg.repeat(9);
        want[9..18].copy_from_slice(&(1..=9).collect::<Vec<u8>>());
        assert_eq!(sq.data, want);
        // 2 wide x 4 high: columns at x = (4 - 2) // 2 = 1..3 of a 4x4 square.
        let tall = ramp(2, 4);
        let sq = expand_to_square(&tall, bg);
        assert_eq!((sq.width, sq.height), (4, 4));
        for y in 0..4 {
            for x in 0..4 {
                let px = &sq.data[(y * 4 + x) * 3..(y * 4 + x + 1) * 3];
                if (1..3).contains(&x) {
                    assert_eq!(px, &tall.data[(y * 2 + x - 1) * 3..(y * 2 + x) * 3]);
                } else {
                    assert_eq!(px, &bg);
                }
            }
        }
        // 2x5: offset (5 - 2) // 2 = 1, so one background column left and two right.
        let sq = expand_to_square(&ramp(2, 5), bg);
        assert_eq!(&sq.data[0..3], &bg);
        assert_eq!(&sq.data[3..6], &ramp(2, 5).data[0..3]);
        assert_eq!(&sq.data[9..15], &bg.repeat(2)[..]);
        assert_eq!(expand_to_square(&ramp(4, 4), bg), ramp(4, 4));
    }

    #[test]
    fn mean_background_truncates_as_llava_does() {
        // OpenAI CLIP mean: int(0.48145466 * 255) = 122, int(116.745…) = 116, int(104.09…) = 104.
        assert_eq!(mean_background(&CLIP_MEAN), [122, 116, 104]);
        assert_eq!(mean_background(&[0.5, 0.5, 0.5]), [127, 127, 127]);
    }

    #[test]
    fn center_crop_uses_floor_offsets() {
        let img = ramp(5, 4);
        let c = center_crop(&img, 2, 3);
        // left = (5-2)//2 = 1, top = (4-3)//2 = 0
        assert_eq!(c, img.crop(1, 0, 2, 3));
        assert_eq!(center_crop(&img, 5, 4), img);
    }

    #[test]
    fn center_crop_pads_when_larger() {
        let img = RgbImage8 { width: 1, height: 1, data: vec![9, 8, 7] };
        let c = center_crop(&img, 3, 2);
        assert_eq!((c.width, c.height), (3, 2));
        // pad: top (2-1)//2 = 0, left (3-1)//2 = 1
        let mut want = vec![0u8; 18];
        want[3..6].copy_from_slice(&[9, 8, 7]);
        assert_eq!(c.data, want);
    }

    #[test]
    fn config_reads_shortest_edge_and_crop() {
        let cfg: ClipImageProcessorConfig = serde_json::from_str(
            r#"{"size": {"shortest_edge": 32}, "crop_size": {"height": 30, "width": 31},
                "image_processor_type": "CLIPImageProcessor"}"#,
        )
        .unwrap();
        assert_eq!(cfg.size, ClipSize::ShortestEdge { shortest_edge: 32 });
        assert_eq!(cfg.crop_size, ImageSize { height: 30, width: 31 });
        let t = clip_transform(&ramp(50, 37), &cfg);
        assert_eq!((t.channels, t.height, t.width), (3, 30, 31));
    }

    /// An F32 tensor of a safetensors file: its shape and values.
    fn read_f32(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
        let bytes = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let pv = &header[name];
        assert_eq!(pv["dtype"], "F32", "{name}");
        let shape: Vec<usize> =
            pv["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let off = pv["data_offsets"].as_array().unwrap();
        let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
        let values = bytes[8 + n + a..8 + n + b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (shape, values)
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
    }

    /// LLaVA's `expand2square` (PIL `Image.new` + `paste`) with the mean-colour background, then
    /// `CLIPImageProcessor`, on llava-tiny's images (three of them not square), from
    /// tools/llava_original_fixtures.py.
    #[test]
    fn llava_pad_pixel_values_match_llava() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let dir = root.join("llava-tiny-original-mlp3");
        let cfg = ClipImageProcessorConfig::from_file(
            &root.join("llava-tiny-clip/preprocessor_config.json"),
        )
        .unwrap();
        let exp: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let bg = mean_background(&cfg.image_mean);
        let want_bg: Vec<u8> = exp["background"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bg.to_vec(), want_bg);
        let mut non_square = 0;
        for (i, rel) in exp["images"].as_array().unwrap().iter().enumerate() {
            let img = crate::image::decode_file(
                &dir.join(rel.as_str().unwrap()),
                crate::image::DecodeLimits::default(),
            )
            .unwrap();
            non_square += (img.width != img.height) as usize;
            let (shape, want) =
                read_f32(&dir.join("expected.safetensors"), &format!("pixel_values_{i}"));
            let t = clip_transform(&expand_to_square(&img, bg), &cfg);
            assert_eq!(vec![t.channels, t.height, t.width], shape);
            let d = max_abs_diff(&t.data, &want);
            assert!(d <= 1e-6, "image {i} ({rel}): max abs diff {d:e}");
            if img.width != img.height {
                // Without the padding the pixels differ: the reference does pad.
                let plain = clip_transform(&img, &cfg);
                assert!(max_abs_diff(&plain.data, &want) > 0.1, "image {i}");
            }
        }
        assert!(non_square >= 2);
    }

    /// The tiny LLaVA fixture's `pixel_values` (transformers 4.57.6 `CLIPImageProcessor`).
    #[test]
    fn llava_fixture_pixel_values_match_hf() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llava-tiny");
        let cfg =
            ClipImageProcessorConfig::from_file(&dir.join("preprocessor_config.json")).unwrap();
        let (shape, want) = read_f32(&dir.join("expected.safetensors"), "pixel_values");
        let exp: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let images = exp["images"].as_array().unwrap();
        assert_eq!(images.len(), shape[0]);
        let per = shape[1] * shape[2] * shape[3];
        let mut worst = 0f32;
        for (i, rel) in images.iter().enumerate() {
            let img = crate::image::decode_file(
                &dir.join(rel.as_str().unwrap()),
                crate::image::DecodeLimits::default(),
            )
            .unwrap();
            let t = clip_transform(&img, &cfg);
            assert_eq!((t.channels, t.height, t.width), (shape[1], shape[2], shape[3]));
            let d = t
                .data
                .iter()
                .zip(&want[i * per..(i + 1) * per])
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            worst = worst.max(d);
            assert!(d <= 1e-6, "image {i} ({rel}): max abs diff {d:e}");
        }
        eprintln!("llava-tiny pixel_values: max abs diff {worst:e}");
    }
}
