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
        // JPEGs decode to Pillow's pixels exactly (libjpeg-turbo's algorithm): the resize reads
        // our own decode, and the Pillow-decoded copy of the file must equal it.
        let file = case["file"].as_str().unwrap();
        if file.ends_with(".jpg") {
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
            if gap > 0 {
                failures.push(format!("{name}: JPEG decode differs from Pillow by {gap}"));
            }
        }
        let resize_input = img.clone();
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

/// Real-photo JPEGs in every layout Pillow writes (`tools/jpeg_parity_fixtures.py`): 4:2:0,
/// 4:2:2 and 4:4:4, progressive, optimized tables, restart markers, odd sizes, grey) decode to
/// Pillow's RGB bytes exactly.
#[test]
fn jpeg_pixels_equal_pillows_in_every_layout() {
    use sha2::{Digest, Sha256};
    let dir = fixtures().join("jpeg");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = meta["cases"].as_object().unwrap();
    assert!(cases.len() >= 8);
    for (name, want) in cases {
        let img = decode_file(&dir.join(format!("{name}.jpg")), DecodeLimits::default()).unwrap();
        assert_eq!(
            (img.width as u64, img.height as u64),
            (want["width"].as_u64().unwrap(), want["height"].as_u64().unwrap()),
            "{name}"
        );
        let every = want["sample_every"].as_u64().unwrap() as usize;
        for (k, v) in want["sample"].as_array().unwrap().iter().enumerate() {
            let (got, exp) = (img.data[k * every] as u64, v.as_u64().unwrap());
            assert_eq!(got, exp, "{name}: value {} is {got}, Pillow's {exp}", k * every);
        }
        let digest: String = Sha256::digest(&img.data).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            digest,
            want["sha256"].as_str().unwrap(),
            "{name}: RGB bytes differ from Pillow's"
        );
    }
}
