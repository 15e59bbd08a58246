//! Test helpers: fixture paths and a minimal safetensors reader (the data crate has no candle).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub struct Tensor {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Tensor {
    pub fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.dtype, "F32");
        self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }
    pub fn i64s(&self) -> Vec<i64> {
        assert_eq!(self.dtype, "I64");
        self.bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }
    pub fn rows_i64(&self) -> Vec<Vec<i64>> {
        let cols = *self.shape.last().unwrap();
        self.i64s().chunks(cols).map(|c| c.to_vec()).collect()
    }
}

pub fn read_safetensors(path: &std::path::Path) -> HashMap<String, Tensor> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let data = &b[8 + n..];
    let mut out = HashMap::new();
    for (k, v) in header.as_object().unwrap() {
        if k == "__metadata__" {
            continue;
        }
        let off = v["data_offsets"].as_array().unwrap();
        let (s, e) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
        out.insert(
            k.clone(),
            Tensor {
                dtype: v["dtype"].as_str().unwrap().to_string(),
                shape: v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
                bytes: data[s..e].to_vec(),
            },
        );
    }
    out
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `img` encoded as a PNG.
pub fn png(img: &datasets::image::RgbImage8) -> Vec<u8> {
    let buf =
        image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone()).unwrap();
    let mut c = std::io::Cursor::new(Vec::new());
    buf.write_to(&mut c, image::ImageFormat::Png).unwrap();
    c.into_inner()
}
