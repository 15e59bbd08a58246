//! Pixel parity with HF `BlipImageProcessor` (PIL bicubic) on the committed fixtures.

use crate::common::{fixtures, max_abs_diff, read_safetensors};
use datasets::image::{decode_file, eval_transform, DecodeLimits, ImageProcessorConfig};

#[test]
fn hf_tiny_pixel_values_match_within_1e4() {
    let dir = fixtures().join("hf-tiny");
    let cfg = ImageProcessorConfig::from_file(&dir.join("itm/preprocessor_config.json")).unwrap();
    assert_eq!((cfg.size.height, cfg.size.width), (32, 32));
    let expected = read_safetensors(&dir.join("itm/expected.safetensors"));
    let pv = &expected["pixel_values"];
    assert_eq!(pv.shape, vec![4, 3, 32, 32]);
    let want = pv.f32s();
    let per = 3 * 32 * 32;
    for i in 0..4 {
        let img =
            decode_file(&dir.join(format!("images/img{i}.png")), DecodeLimits::default()).unwrap();
        let t = eval_transform(&img, &cfg);
        assert_eq!((t.channels, t.height, t.width), (3, 32, 32));
        let d = max_abs_diff(&t.data, &want[i * per..(i + 1) * per]);
        assert!(d < 1e-4, "img{i}: max abs diff {d}");
    }
}

const JPEG_DECODER_MAX_GAP: i32 = 4;

/// Extra cases from `tools/preprocess_fixtures.py` (HF BlipImageProcessor, Pillow 13):
/// downscale and upscale, non-square inputs, JPEG, grey, RGBA and palette PNGs.
#[test]
fn extra_cases_match_pillow_bytes_and_hf_pixels() {
    let dir = fixtures().join("preprocess");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let want = read_safetensors(&dir.join("expected.safetensors"));
    let mut failures = Vec::new();
    for case in meta["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let size = case["size"].as_u64().unwrap() as usize;
        let img = decode_file(&dir.join(case["file"].as_str().unwrap()), DecodeLimits::default())
            .unwrap();
        let input = case["input"].as_array().unwrap();
        assert_eq!(img.width as u64, input[0].as_u64().unwrap(), "{name} width");
        assert_eq!(img.height as u64, input[1].as_u64().unwrap(), "{name} height");
        // Our JPEG decoder is not libjpeg-turbo: feed the resize Pillow's decoded pixels
        // (`tools/pil_decoded_jpeg.py`) so the byte comparison tests the resize alone.
        let file = case["file"].as_str().unwrap();
        let resize_input = if file.ends_with(".jpg") {
            let pil =
                decode_file(&dir.join(file.replace(".jpg", ".pil.png")), DecodeLimits::default())
                    .unwrap();
            assert_eq!((pil.width, pil.height), (img.width, img.height));
            let gap = img
                .data
                .iter()
                .zip(&pil.data)
                .map(|(&a, &b)| (a as i32 - b as i32).abs())
                .max()
                .unwrap();
            // Measured 2026-11-25: the image crate and libjpeg-turbo differ by up to 4 levels.
            if gap > JPEG_DECODER_MAX_GAP {
                failures.push(format!("{name}: JPEG decode differs from Pillow by {gap}"));
            }
            pil
        } else {
            img.clone()
        };
        let resized = datasets::image::resize_bicubic(&resize_input, size, size);
        let hf_u8 = &want[&format!("{name}.resized_u8")];
        assert_eq!(hf_u8.shape, vec![size, size, 3]);
        let diff = resized.data.iter().zip(&hf_u8.bytes).filter(|(a, b)| a != b).count();
        let max = resized
            .data
            .iter()
            .zip(&hf_u8.bytes)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .max()
            .unwrap();
        if diff != 0 {
            failures.push(format!("{name}: {diff} bytes differ (max {max})"));
        }
        if let Some(pv) = want.get(&format!("{name}.pixel_values")) {
            let t = eval_transform(&img, &ImageProcessorConfig::square(size));
            let d = max_abs_diff(&t.data, &pv.f32s());
            if d >= 1e-4 {
                failures.push(format!("{name}: pixel_values max abs diff {d}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
