//! LAVIS `blip2_image_train`: torchvision `RandomResizedCrop(S, scale=(0.5, 1.0))` (bicubic)
//! followed by `RandomHorizontalFlip(0.5)`, drawn from a seeded ChaCha8 stream.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::processor::{to_tensor, ImageProcessorConfig, ImageTensor};
use super::resample::{resize_bicubic, RgbImage8};

/// Crop box in input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// Parameters of the training augmentation (LAVIS defaults in `Default`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainAugment {
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
    pub flip_probability: f64,
}

impl Default for TrainAugment {
    fn default() -> Self {
        TrainAugment { scale: (0.5, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0), flip_probability: 0.5 }
    }
}

impl TrainAugment {
    /// torchvision `RandomResizedCrop.get_params`: 10 tries of a random area and log-uniform
    /// aspect ratio, then a centre crop clamped to the ratio range.
    pub fn crop_box(&self, width: usize, height: usize, rng: &mut ChaCha8Rng) -> CropBox {
        let area = (width * height) as f64;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.random_range(self.scale.0..=self.scale.1);
            let aspect = rng.random_range(lr0..=lr1).exp();
            // Python's round() rounds half to even.
            let w = (target * aspect).sqrt().round_ties_even() as usize;
            let h = (target / aspect).sqrt().round_ties_even() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return CropBox { top, left, height: h, width: w };
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.ratio.0 {
            (width, ((width as f64 / self.ratio.0).round_ties_even() as usize).max(1))
        } else if in_ratio > self.ratio.1 {
            (((height as f64 * self.ratio.1).round_ties_even() as usize).max(1), height)
        } else {
            (width, height)
        };
        CropBox {
            top: (height - h.min(height)) / 2,
            left: (width - w.min(width)) / 2,
            height: h.min(height),
            width: w.min(width),
        }
    }

    /// Crop, resize to the configured square and maybe flip; returns uint8 RGB.
    pub fn apply_rgb(
        &self,
        img: &RgbImage8,
        out_width: usize,
        out_height: usize,
        rng: &mut ChaCha8Rng,
    ) -> RgbImage8 {
        let b = self.crop_box(img.width, img.height, rng);
        let cropped = img.crop(b.left, b.top, b.width, b.height);
        let resized = resize_bicubic(&cropped, out_width, out_height);
        if rng.random_bool(self.flip_probability) {
            resized.flip_horizontal()
        } else {
            resized
        }
    }

    /// The full training transform into a normalised tensor.
    pub fn apply(
        &self,
        img: &RgbImage8,
        cfg: &ImageProcessorConfig,
        rng: &mut ChaCha8Rng,
    ) -> ImageTensor {
        let out = self.apply_rgb(img, cfg.size.width, cfg.size.height, rng);
        to_tensor(&out, cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn crops_stay_inside_and_cover_half_to_all_of_the_area() {
        let aug = TrainAugment::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (w, h) in [(640, 480), (100, 60), (64, 64), (30, 200)] {
            for _ in 0..200 {
                let b = aug.crop_box(w, h, &mut rng);
                assert!(b.left + b.width <= w && b.top + b.height <= h);
                assert!(b.width > 0 && b.height > 0);
            }
        }
        // A square image always finds a crop in 10 tries: area fraction within the scale range
        // up to rounding.
        for _ in 0..200 {
            let b = aug.crop_box(200, 200, &mut rng);
            let frac = (b.width * b.height) as f64 / 40_000.0;
            assert!((0.47..=1.0).contains(&frac), "{frac}");
        }
    }

    #[test]
    fn extreme_aspect_falls_back_to_a_centre_crop() {
        let aug = TrainAugment::default();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // 400x10: any crop with ratio <= 4/3 and area >= 2000 is taller than 10 px.
        let b = aug.crop_box(400, 10, &mut rng);
        assert_eq!((b.width, b.height), (13, 10));
        assert_eq!((b.left, b.top), ((400 - 13) / 2, 0));
    }

    #[test]
    fn same_seed_same_output() {
        let img = RgbImage8 {
            width: 40,
            height: 30,
            data: (0..40 * 30 * 3).map(|v| (v % 251) as u8).collect(),
        };
        let aug = TrainAugment::default();
        let a = aug.apply_rgb(&img, 16, 16, &mut ChaCha8Rng::seed_from_u64(9));
        let b = aug.apply_rgb(&img, 16, 16, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a, b);
        let flips = (0..100u64)
            .filter(|&s| {
                let mut r = ChaCha8Rng::seed_from_u64(s);
                aug.crop_box(40, 30, &mut r);
                r.random_bool(0.5)
            })
            .count();
        assert!((30..=70).contains(&flips));
    }
}
