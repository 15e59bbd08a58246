//! Top-k selection per score row, for choosing the `k_test` candidates that ITM re-ranks.
//!
//! Order: score descending, ties broken by the lower index (so results never depend on the sort
//! algorithm). LAVIS calls `torch.topk`, whose tie order is unspecified and which fails when k exceeds the
//! gallery; here k is clamped to the row length instead.

use std::cmp::Ordering;

use crate::error::{Error, Result};

/// Descending by score, then ascending by index. Callers have rejected NaN, so `partial_cmp` is total here.
pub(crate) fn by_score_desc<T: PartialOrd>(row: &[T]) -> impl Fn(&usize, &usize) -> Ordering + '_ {
    move |&a, &b| row[b].partial_cmp(&row[a]).unwrap_or(Ordering::Equal).then(a.cmp(&b))
}

pub(crate) fn check_no_nan<T: PartialOrd>(row: &[T], what: &str) -> Result<()> {
    // NaN is the only value not equal to itself.
    match row.iter().position(|x| x.partial_cmp(x).is_none()) {
        Some(j) => Err(Error::Invalid(format!("{what}[{j}] is NaN"))),
        None => Ok(()),
    }
}

/// Indices of the `k` highest scores of `row`, best first (all of them when `k >= row.len()`).
pub fn top_k_indices<T: PartialOrd>(row: &[T], k: usize) -> Result<Vec<usize>> {
    check_no_nan(row, "scores")?;
    let k = k.min(row.len());
    let mut idx: Vec<usize> = (0..row.len()).collect();
    if k == 0 {
        return Ok(Vec::new());
    }
    let cmp = by_score_desc(row);
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, &cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(&cmp);
    Ok(idx)
}

/// [`top_k_indices`] for every row of a score matrix `[rows][cols]`.
pub fn top_k_rows<T: PartialOrd>(scores: &[Vec<T>], k: usize) -> Result<Vec<Vec<usize>>> {
    scores
        .iter()
        .enumerate()
        .map(|(i, row)| {
            check_no_nan(row, &format!("scores[{i}]"))?;
            top_k_indices(row, k)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lower_index_and_k_is_clamped() {
        let row = [0.5f32, 0.9, 0.5, 0.9, -1.0];
        assert_eq!(top_k_indices(&row, 3).unwrap(), [1, 3, 0]);
        assert_eq!(top_k_indices(&row, 10).unwrap(), [1, 3, 0, 2, 4]);
        assert_eq!(top_k_indices(&row, 0).unwrap(), Vec::<usize>::new());
        assert_eq!(top_k_indices::<f32>(&[], 3).unwrap(), Vec::<usize>::new());
        assert!(top_k_indices(&[1.0f32, f32::NAN], 1).is_err());
    }

    #[test]
    fn rows() {
        let m = vec![vec![1.0f64, 3.0, 2.0], vec![0.0, 0.0, 0.0]];
        assert_eq!(top_k_rows(&m, 2).unwrap(), [vec![1, 2], vec![0, 1]]);
    }
}
