//! Pillow's bicubic `Image.resize`, reproduced bit for bit on 8-bit RGB.
//!
//! HF `BlipImageProcessor` and LAVIS both resize through PIL, so matching their pixel values to
//! 1e-4 after normalisation means matching Pillow's uint8 output exactly: a separable
//! convolution (support 2·scale, a = -0.5), coefficients in f64 normalised per output pixel,
//! then quantised to 22-bit fixed point; two passes, each rounded and clamped to uint8, in the
//! order `ImagingResampleInner` picks (see [`vertical_pass_first`], `src/libImaging/Resample.c`).

/// An 8-bit RGB image, rows of interleaved `r, g, b` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage8 {
    /// Sub-rectangle copy (`PIL.Image.crop` inside the image bounds).
    pub fn crop(&self, left: usize, top: usize, width: usize, height: usize) -> RgbImage8 {
        let mut data = Vec::with_capacity(width * height * 3);
        for y in top..top + height {
            let start = (y * self.width + left) * 3;
            data.extend_from_slice(&self.data[start..start + width * 3]);
        }
        RgbImage8 { width, height, data }
    }

    /// Mirror left-right.
    pub fn flip_horizontal(&self) -> RgbImage8 {
        let mut data = Vec::with_capacity(self.data.len());
        for y in 0..self.height {
            for x in (0..self.width).rev() {
                let i = (y * self.width + x) * 3;
                data.extend_from_slice(&self.data[i..i + 3]);
            }
        }
        RgbImage8 { width: self.width, height: self.height, data }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;
const BICUBIC_SUPPORT: f64 = 2.0;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first input index and its fixed-point weights (`precompute_coeffs` +
/// `normalize_coeffs_8bpc`).
struct Coeffs {
    starts: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

fn precompute(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filterscale;
    let mut starts = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C `(int)` truncates toward zero; both bounds are then clamped to the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> =
            (0..n).map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            for w in &mut k {
                *w /= ww;
            }
        }
        let one = (1i64 << PRECISION_BITS) as f64;
        let fixed = k
            .iter()
            .map(|&w| if w < 0.0 { (-0.5 + w * one) as i32 } else { (0.5 + w * one) as i32 })
            .collect();
        starts.push(xmin);
        weights.push(fixed);
    }
    Coeffs { starts, weights }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

fn horizontal(src: &RgbImage8, out_w: usize) -> RgbImage8 {
    let c = precompute(src.width, out_w);
    let mut data = vec![0u8; out_w * src.height * 3];
    for y in 0..src.height {
        let row = &src.data[y * src.width * 3..(y + 1) * src.width * 3];
        let out = &mut data[y * out_w * 3..(y + 1) * out_w * 3];
        for xx in 0..out_w {
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            let start = c.starts[xx];
            for (i, &w) in c.weights[xx].iter().enumerate() {
                let p = (start + i) * 3;
                acc[0] += row[p] as i32 * w;
                acc[1] += row[p + 1] as i32 * w;
                acc[2] += row[p + 2] as i32 * w;
            }
            out[xx * 3] = clip8(acc[0]);
            out[xx * 3 + 1] = clip8(acc[1]);
            out[xx * 3 + 2] = clip8(acc[2]);
        }
    }
    RgbImage8 { width: out_w, height: src.height, data }
}

fn vertical(src: &RgbImage8, out_h: usize) -> RgbImage8 {
    let c = precompute(src.height, out_h);
    let stride = src.width * 3;
    let mut data = vec![0u8; stride * out_h];
    let mut acc = vec![0i32; stride];
    for yy in 0..out_h {
        acc.iter_mut().for_each(|a| *a = 1 << (PRECISION_BITS - 1));
        let start = c.starts[yy];
        for (i, &w) in c.weights[yy].iter().enumerate() {
            let row = &src.data[(start + i) * stride..(start + i + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * w;
            }
        }
        for (o, &a) in data[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    RgbImage8 { width: src.width, height: out_h, data }
}

/// Pillow 13's pass order (`ImagingResampleInner`): the vertical pass runs first when the
/// height shrinks by more than twice as many pixels as the width does (so the horizontal pass
/// has fewer rows to filter); otherwise horizontal first. Each pass rounds to uint8, so the
/// order changes the output bytes. Differences are signed: a growing width never forces
/// vertical-first on its own.
pub fn vertical_pass_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let dh = in_h as i64 - out_h as i64;
    let dw = in_w as i64 - out_w as i64;
    dh > 0 && dh > dw * 2
}

/// `PIL.Image.resize((width, height), BICUBIC)` for an RGB image (Pillow 13.0.0).
pub fn resize_bicubic(src: &RgbImage8, width: usize, height: usize) -> RgbImage8 {
    // Pillow skips a pass whose size does not change (and copies when neither does).
    let need_h = width != src.width;
    let need_v = height != src.height;
    if vertical_pass_first(src.width, src.height, width, height) {
        let v = if need_v { vertical(src, height) } else { src.clone() };
        if need_h {
            horizontal(&v, width)
        } else {
            v
        }
    } else {
        // Pillow filters only the rows the vertical pass reads; rows outside that band never
        // reach the output, so filtering them all gives the same bytes.
        let h = if need_h { horizontal(src, width) } else { src.clone() };
        if need_v {
            vertical(&h, height)
        } else {
            h
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let img = RgbImage8 { width: 3, height: 2, data: (0..18).map(|v| v as u8 * 13).collect() };
        assert_eq!(resize_bicubic(&img, 3, 2), img);
    }

    #[test]
    fn constant_image_stays_constant_up_and_down() {
        let img = RgbImage8 { width: 7, height: 5, data: vec![77; 7 * 5 * 3] };
        for (w, h) in [(3, 2), (20, 13), (7, 11)] {
            let out = resize_bicubic(&img, w, h);
            assert!(out.data.iter().all(|&v| v == 77), "{w}x{h}");
        }
    }

    #[test]
    fn pass_order_follows_pillow_13() {
        // img2 of the HF fixture: 33x71 -> 32x32 shrinks height by 39 > 2 * 1.
        assert!(vertical_pass_first(33, 71, 32, 32));
        assert!(!vertical_pass_first(640, 480, 224, 224));
        assert!(!vertical_pass_first(100, 60, 364, 364));
        // Equal to twice the width change is not "more than twice".
        assert!(!vertical_pass_first(40, 50, 35, 40));
        assert!(vertical_pass_first(40, 51, 35, 40));
        // A growing width makes dw negative: any height shrink wins.
        assert!(vertical_pass_first(10, 20, 30, 19));
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(50, 32), (33, 32), (64, 224), (640, 224)] {
            let c = precompute(i, o);
            for w in &c.weights {
                let s: i64 = w.iter().map(|&v| v as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= w.len() as i64, "{i}->{o}");
            }
        }
    }
}
