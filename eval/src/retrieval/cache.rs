//! On-disk cache of per-image encodings (ViT features before `ln_vision` + ITC image features), so a
//! re-evaluation with another `k_test` or another text set skips the images.
//!
//! One safetensors file per image, named by a hash of the model fingerprint and the image file's bytes.
//! The fingerprint is the caller's job and must cover everything the stored tensors depend on: ViT and
//! Q-Former weights, `ln_vision` eps, the image preprocessing config. Files are written to a temporary name
//! and renamed, so an interrupted run never leaves a truncated entry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::gallery::EncodedImages;
use crate::error::{Error, Result};

/// Bumped whenever what an entry holds changes.
const FORMAT: &str = "blip2-retrieval-image-cache-v1";

/// 64-bit FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Length-prefixed, so consecutive fields cannot run into each other.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.update(&(bytes.len() as u64).to_le_bytes()).update(bytes)
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Clone)]
pub struct ImageCache {
    dir: PathBuf,
}

impl ImageCache {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// Entry key for an image under a model fingerprint.
    pub fn key(model_fingerprint: &str, image_bytes: &[u8]) -> String {
        let mut h = Fnv64::default();
        h.field(FORMAT.as_bytes()).field(model_fingerprint.as_bytes()).field(image_bytes);
        // A second, differently seeded pass makes accidental collisions (2^-64 per pair) negligible.
        let mut h2 = Fnv64(0x9e37_79b9_7f4a_7c15);
        h2.field(FORMAT.as_bytes()).field(model_fingerprint.as_bytes()).field(image_bytes);
        format!("{:016x}{:016x}", h.finish(), h2.finish())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.safetensors"))
    }

    /// The entry for `key` (tensors `[1, N, Dv]` and `[1, Q, E]`), if stored.
    pub fn load(&self, key: &str, device: &Device) -> Result<Option<EncodedImages>> {
        let path = self.path(key);
        if !path.exists() {
            return Ok(None);
        }
        let mut t: HashMap<String, Tensor> = candle_core::safetensors::load(&path, device)
            .map_err(|e| {
                Error::Invalid(format!("{}: unreadable cache entry: {e}", path.display()))
            })?;
        let mut take = |name: &str| {
            t.remove(name).ok_or_else(|| {
                Error::field(path.display().to_string(), name, "missing from cache entry")
            })
        };
        Ok(Some(EncodedImages {
            vision_features: take("vision_features")?,
            image_feats: take("image_feats")?,
        }))
    }

    pub fn store(&self, key: &str, enc: &EncodedImages) -> Result<()> {
        let path = self.path(key);
        let tmp = self.dir.join(format!("{key}.tmp{}", std::process::id()));
        let tensors: HashMap<String, Tensor> = [
            ("vision_features".to_string(), enc.vision_features.clone()),
            ("image_feats".to_string(), enc.image_feats.clone()),
        ]
        .into();
        candle_core::safetensors::save(&tensors, &tmp).map_err(|e| {
            Error::Invalid(format!("{}: cannot write cache entry: {e}", tmp.display()))
        })?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // http://www.isthe.com/chongo/src/fnv/test_fnv.c
        assert_eq!(Fnv64::default().finish(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv64::default().update(b"a").finish(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fnv64::default().update(b"foobar").finish(), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn key_depends_on_model_and_image_and_fields_do_not_run_together() {
        let k = ImageCache::key("model-a", b"pixels");
        assert_eq!(k, ImageCache::key("model-a", b"pixels"));
        assert_ne!(k, ImageCache::key("model-b", b"pixels"));
        assert_ne!(k, ImageCache::key("model-a", b"pixelz"));
        assert_ne!(ImageCache::key("model-a", b"pixels"), ImageCache::key("model-ap", b"ixels"));
    }

    #[test]
    fn store_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::open(&dir.path().join("c")).unwrap();
        let dev = Device::Cpu;
        let enc = EncodedImages {
            vision_features: Tensor::arange(0f32, 24.0, &dev).unwrap().reshape((1, 4, 6)).unwrap(),
            image_feats: Tensor::arange(0f32, 6.0, &dev).unwrap().reshape((1, 2, 3)).unwrap(),
        };
        assert!(cache.load("k", &dev).unwrap().is_none());
        cache.store("k", &enc).unwrap();
        let back = cache.load("k", &dev).unwrap().unwrap();
        assert_eq!(
            back.vision_features.to_vec3::<f32>().unwrap(),
            enc.vision_features.to_vec3::<f32>().unwrap()
        );
        assert_eq!(
            back.image_feats.to_vec3::<f32>().unwrap(),
            enc.image_feats.to_vec3::<f32>().unwrap()
        );
        std::fs::write(dir.path().join("c/bad.safetensors"), b"not a file").unwrap();
        let err = cache.load("bad", &dev).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
    }
}
