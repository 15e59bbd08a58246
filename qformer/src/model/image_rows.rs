//! Which image each batch row reads when rows share images (ITM over hard negatives, re-ranking),
//! laid out so that cross-attention reads each image's keys/values in place.
//!
//! Handing every row its own copy of its image's K/V (`index_select`) costs `rows x heads x N x
//! head_dim` floats per layer, twice, and as much again for their gradients: at stage-one sizes
//! (24 ITM rows, 257 image tokens, 6 cross-attention layers) 228 MB of the step's peak. Instead
//! the rows are dealt into *rounds*: round j holds, for every image u, the j-th row that reads u.
//! A full round reads each image once, so the rounds' queries stack along the token axis of the
//! image they read and attend `K[u]` directly (one batched matmul, no K/V copy). Only rows left
//! over when images are read unequally often get gathered copies.

use candle_core::{Device, Result, Tensor};

/// Prepared once per batch and shared by every cross-attention layer.
#[derive(Debug, Clone)]
pub struct ImageRows {
    num_images: usize,
    num_rows: usize,
    /// How many full rounds there are: the fewest rows any image is read by.
    rounds: usize,
    /// `[rounds * U]` batch rows in round-major, image-minor order; `None` when that is `0..R`.
    round_rows: Option<Tensor>,
    /// Rows outside the full rounds and the image each reads; `None` when every row is in a round.
    rest: Option<(Tensor, Tensor)>,
    /// `[R]`: where each batch row's result sits in `[round rows; rest rows]`; `None` for `0..R`.
    restore: Option<Tensor>,
}

impl ImageRows {
    /// `rows[b]` is the image (of `num_images`) that batch row `b` reads.
    pub fn new(rows: &[u32], num_images: usize, device: &Device) -> Result<Self> {
        if let Some((b, &u)) = rows.iter().enumerate().find(|&(_, &u)| u as usize >= num_images) {
            candle_core::bail!("image_rows[{b}] = {u}, but there are only {num_images} images")
        }
        let mut readers: Vec<Vec<u32>> = vec![Vec::new(); num_images];
        for (b, &u) in rows.iter().enumerate() {
            readers[u as usize].push(b as u32);
        }
        let rounds = readers.iter().map(Vec::len).min().unwrap_or(0);
        let mut order: Vec<u32> =
            (0..rounds).flat_map(|j| readers.iter().map(move |r| r[j])).collect();
        let in_rounds = order.len();
        let (rest_rows, rest_images): (Vec<u32>, Vec<u32>) = readers
            .iter()
            .enumerate()
            .flat_map(|(u, r)| r[rounds..].iter().map(move |&b| (b, u as u32)))
            .unzip();
        order.extend(&rest_rows);
        let identity = |v: &[u32]| v.iter().enumerate().all(|(i, &x)| i as u32 == x);
        let round_rows = if identity(&order[..in_rounds]) {
            None
        } else {
            Some(Tensor::new(&order[..in_rounds], device)?)
        };
        let rest = if rest_rows.is_empty() {
            None
        } else {
            Some((Tensor::new(rest_rows, device)?, Tensor::new(rest_images, device)?))
        };
        let restore = if identity(&order) {
            None
        } else {
            let mut position = vec![0u32; order.len()];
            for (p, &b) in order.iter().enumerate() {
                position[b as usize] = p as u32;
            }
            Some(Tensor::new(position, device)?)
        };
        Ok(Self { num_images, num_rows: rows.len(), rounds, round_rows, rest, restore })
    }

    pub fn num_images(&self) -> usize {
        self.num_images
    }

    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// Full rounds: rows that attend their image's K/V in place, `rounds * num_images` of them.
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// Cross-attention of every row's queries against the keys/values of the image it reads.
    /// `attend(q, k, v)` is the plain attention for equal leading dims, `[n, h, t, d]` ->
    /// `[n, h, t, d]` with rows independent of each other (no mask across rows).
    // q: [R, h, T, d], k/v: [U, h, S, d] -> [R, h, T, d]
    pub(crate) fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mut attend: impl FnMut(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (r, h, t, d) = q.dims4()?;
        if r != self.num_rows || k.dim(0)? != self.num_images {
            candle_core::bail!(
                "image_rows is for {} rows over {} images, cross-attention has {r} rows over {} images",
                self.num_rows,
                self.num_images,
                k.dim(0)?
            )
        }
        let mut parts = Vec::with_capacity(2);
        if self.rounds > 0 {
            let (m, u) = (self.rounds, self.num_images);
            let qr = match &self.round_rows {
                Some(rows) => q.index_select(rows, 0)?,
                None => q.narrow(0, 0, m * u)?,
            };
            // [m, U, h, T, d] -> [U, h, m*T, d]: round j's rows of image u follow each other.
            let qr =
                qr.reshape((m, u, h, t, d))?.permute((1, 2, 0, 3, 4))?.reshape((u, h, m * t, d))?;
            let ctx = attend(&qr, k, v)?;
            parts.push(ctx.reshape((u, h, m, t, d))?.permute((2, 0, 1, 3, 4))?.reshape((
                m * u,
                h,
                t,
                d,
            ))?);
        }
        if let Some((rows, images)) = &self.rest {
            let qr = q.index_select(rows, 0)?;
            parts.push(attend(&qr, &k.index_select(images, 0)?, &v.index_select(images, 0)?)?);
        }
        let ctx = match parts.len() {
            0 => q.zeros_like()?, // an empty batch
            1 => parts.swap_remove(0),
            _ => Tensor::cat(&parts, 0)?,
        };
        match &self.restore {
            Some(position) => ctx.index_select(position, 0),
            None => Ok(ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn filled(shape: (usize, usize, usize, usize), seed: f32) -> Var {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let data: Vec<f32> = (0..n).map(|i| ((i as f32 + seed) * 0.731).sin()).collect();
        Var::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn plain(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        crate::nn::softmax(&q.matmul(&k.t()?)?)?.matmul(v)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Rounds give what per-row copies give, forward and all three gradients.
    fn check(rows: &[u32], num_images: usize, rounds: usize) {
        let (h, t, s, d) = (2, 3, 5, 4);
        let q = filled((rows.len(), h, t, d), 0.0);
        let k = filled((num_images, h, s, d), 100.0);
        let v = filled((num_images, h, s, d), 200.0);
        let plan = ImageRows::new(rows, num_images, &Device::Cpu).unwrap();
        assert_eq!(plan.rounds(), rounds, "rows {rows:?}");
        let got = plan.attend(&q, &k, &v, plain).unwrap();
        let idx = Tensor::new(rows, &Device::Cpu).unwrap();
        let want = plain(&q, &k.index_select(&idx, 0).unwrap(), &v.index_select(&idx, 0).unwrap())
            .unwrap();
        assert_eq!(got.dims(), want.dims());
        assert!(max_diff(&got, &want) < 1e-6, "forward, rows {rows:?}");
        // A loss that weighs every output differently, so a misplaced row changes the gradient.
        let w = filled(want.dims4().unwrap(), 300.0);
        let g_got = (got * w.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let g_want = (want * w.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, b) = (g_got.get(var).unwrap(), g_want.get(var).unwrap());
            assert!(max_diff(a, b) < 1e-5, "d{name}, rows {rows:?}");
        }
    }

    #[test]
    fn rounds_attend_in_place_and_equal_per_row_copies() {
        // Stage-one ITM: [positives; negative images; negative texts] over 3 images, two full
        // rounds (rows 0..3 and 6..9) and three leftover rows reading gathered copies.
        check(&[0, 1, 2, 2, 2, 0, 0, 1, 2], 3, 2);
        // Every row in a round, and the rounds not in batch order.
        check(&[1, 0, 0, 1, 1, 0], 2, 3);
        // Re-ranking: one image, many texts.
        check(&[0, 0, 0, 0], 1, 4);
        // An image nobody reads: no round, every row gathered.
        check(&[0, 0, 2], 3, 0);
        // The identity layout needs no gather at all.
        check(&[0, 1, 2], 3, 1);
        // An empty batch gives an empty result, not a panic.
        let plan = ImageRows::new(&[], 2, &Device::Cpu).unwrap();
        let q = Tensor::zeros((0, 2, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let k = Tensor::zeros((2, 2, 5, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(plan.attend(&q, &k, &k, plain).unwrap().dims(), &[0, 2, 3, 4]);
    }

    #[test]
    fn an_image_index_out_of_range_is_named() {
        let err = ImageRows::new(&[0, 3], 2, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("image_rows[1] = 3") && err.contains("2 images"), "{err}");
    }
}
