//! `np.mean` of a float array, summed the way NumPy sums (pairwise, blocks of 8 accumulators), so corpus
//! means of per-image scores equal pycocoevalcap's to the last bit rather than to 1e-15.

/// NumPy's `pairwise_sum` for contiguous doubles.
fn pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
    }
}

/// `np.mean(values)`; NaN for an empty slice, as NumPy returns.
pub fn numpy_mean(values: &[f64]) -> f64 {
    pairwise_sum(values) / values.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_differs_from_a_left_fold_like_numpy() {
        // 0.1 repeated: NumPy's np.sum([0.1]*10) is 1.0, a left fold gives 0.9999999999999999.
        let tenth = vec![0.1; 10];
        assert_eq!(pairwise_sum(&tenth), 1.0);
        assert_eq!(tenth.iter().fold(0.0, |a, b| a + b), 0.9999999999999999);
        assert_eq!(numpy_mean(&[1.0, 2.0, 3.0]), 2.0);
    }
}
