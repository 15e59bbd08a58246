//! Fuzzing the image decoder: mutated PNG, JPEG and WebP files must decode or give a
//! `DataError::Image` naming the input, never panic, and never allocate past the limits.

use crate::fuzz;

use std::io::Cursor;

use datasets::image::{decode_bytes, DecodeLimits};
use datasets::DataError;

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/preprocess")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn encoded(format: image::ImageFormat, color: bool) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([(x * 10) as u8, (y * 15) as u8, 90]));
    let dynimg = if color {
        image::DynamicImage::ImageRgb8(img)
    } else {
        image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(img).to_luma8())
    };
    let mut out = Cursor::new(Vec::new());
    dynimg.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn check(bytes: &[u8]) -> Result<(), String> {
    // Small limits: a mutated header must not make the test allocate gigabytes.
    let limits = DecodeLimits { max_side: 4096, max_pixels: 1 << 22 };
    match decode_bytes(bytes, "fuzz-input", limits) {
        Ok(img) => {
            assert_eq!(img.data.len(), img.width * img.height * 3);
            Ok(())
        }
        Err(e @ DataError::Image { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz-input: cannot decode image"), "{msg}");
            Err(msg)
        }
        Err(other) => panic!("untyped error kind: {other}"),
    }
}

#[test]
fn mutated_pngs() {
    let seeds = vec![
        fixture("palette50x50.png"),
        fixture("gray37x29.png"),
        fixture("rgba45x30.png"),
        encoded(image::ImageFormat::Png, true),
    ];
    fuzz::fuzz("png", 31, &seeds, 2500, check);
}

#[test]
fn mutated_jpegs() {
    let seeds =
        vec![encoded(image::ImageFormat::Jpeg, true), encoded(image::ImageFormat::Jpeg, false)];
    fuzz::fuzz("jpeg", 32, &seeds, 2500, check);
}

#[test]
fn mutated_webps() {
    let seeds = vec![encoded(image::ImageFormat::WebP, true)];
    fuzz::fuzz("webp", 33, &seeds, 1500, check);
}

/// A CMYK JPEG (Adobe, as Photoshop writes them) decodes to the RGB `PIL convert("RGB")`
/// gives (tools/make_cmyk_fixture.py), within JPEG rounding.
#[test]
fn cmyk_jpeg_decodes_like_pil() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/robust");
    let img =
        datasets::image::decode_file(&dir.join("cmyk16x16.jpg"), DecodeLimits::default()).unwrap();
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cmyk16x16.pil.json")).unwrap()).unwrap();
    assert_eq!((img.width, img.height), (16, 16));
    let want: Vec<i32> =
        want["rgb"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect();
    let worst = img.data.iter().zip(&want).map(|(&a, &b)| (a as i32 - b).abs()).max().unwrap();
    assert!(worst <= 3, "max |ours - PIL| = {worst}");
}
