//! Recall@K from score matrices, as LAVIS `RetrievalTask._report_metrics` (= BLIP `itm_eval`) defines it.
//!
//! Image→text: the rank of an image is the position, in its row sorted by descending score, of the
//! best-placed of its ground-truth captions; text→image: the position of the caption's one image.
//! `R@K = 100 * #(rank < K) / #queries`. An image without captions never counts as retrieved (LAVIS gives it
//! rank 1e20).
//!
//! Ties: LAVIS reverses numpy's default (unstable) argsort, so equal scores land in an unspecified order.
//! Here the order is descending score, then ascending index, i.e. rank(j) = #{k : s_k > s_j} +
//! #{k < j : s_k = s_j}. With continuous scores this is the numpy result; LAVIS's -100 fillers beyond the
//! re-ranked top `k_test` tie among themselves but sit below rank `k_test` >= 10, so R@1/5/10 are unaffected.

use serde::{Deserialize, Serialize};

use super::topk::{by_score_desc, check_no_nan};
use crate::error::{Error, Result};

/// The LAVIS metric dict, in percent, unrounded. `agg_metrics` is `txt_r_mean` (LAVIS selects checkpoints
/// on image→text recall), not `r_mean`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    pub txt_r1: f64,
    pub txt_r5: f64,
    pub txt_r10: f64,
    pub txt_r_mean: f64,
    pub img_r1: f64,
    pub img_r5: f64,
    pub img_r10: f64,
    pub img_r_mean: f64,
    pub r_mean: f64,
    pub agg_metrics: f64,
}

/// 0-based rank of the best-placed target in `row` under the descending-score, lower-index-first order;
/// `None` when there are no targets.
pub fn rank_of_targets<T: PartialOrd>(row: &[T], targets: &[usize]) -> Option<usize> {
    let cmp = by_score_desc(row);
    // The minimum rank over the targets is the rank of the target that sorts first.
    let best = *targets.iter().min_by(|a, b| cmp(a, b))?;
    Some((0..row.len()).filter(|&k| cmp(&k, &best).is_lt()).count())
}

/// `100 * #(rank < k) / len`, in that operation order.
fn recall_at(ranks: &[Option<usize>], k: usize) -> f64 {
    let hits = ranks.iter().filter(|r| r.is_some_and(|r| r < k)).count();
    100.0 * hits as f64 / ranks.len() as f64
}

fn check_matrix<T: PartialOrd>(
    scores: &[Vec<T>],
    rows: usize,
    cols: usize,
    name: &str,
) -> Result<()> {
    if scores.len() != rows {
        return Err(Error::Invalid(format!("{name} has {} rows, expected {rows}", scores.len())));
    }
    for (i, row) in scores.iter().enumerate() {
        if row.len() != cols {
            return Err(Error::Invalid(format!(
                "{name}[{i}] has {} columns, expected {cols}",
                row.len()
            )));
        }
        check_no_nan(row, &format!("{name}[{i}]"))?;
    }
    Ok(())
}

/// All LAVIS retrieval metrics from `scores_i2t [N_img][N_txt]`, `scores_t2i [N_txt][N_img]` and the
/// ground truth `img2txt[i]` (caption indices of image i) and `txt2img[t]` (image of caption t).
pub fn retrieval_metrics<T: PartialOrd>(
    scores_i2t: &[Vec<T>],
    scores_t2i: &[Vec<T>],
    img2txt: &[Vec<usize>],
    txt2img: &[usize],
) -> Result<RetrievalMetrics> {
    let (n_img, n_txt) = (img2txt.len(), txt2img.len());
    if n_img == 0 || n_txt == 0 {
        return Err(Error::Invalid(format!(
            "retrieval needs images and texts, got {n_img} and {n_txt}"
        )));
    }
    check_matrix(scores_i2t, n_img, n_txt, "scores_i2t")?;
    check_matrix(scores_t2i, n_txt, n_img, "scores_t2i")?;
    for (i, texts) in img2txt.iter().enumerate() {
        if let Some(&t) = texts.iter().find(|&&t| t >= n_txt) {
            return Err(Error::Invalid(format!("img2txt[{i}] names text {t} of {n_txt}")));
        }
    }
    if let Some((t, &i)) = txt2img.iter().enumerate().find(|(_, &i)| i >= n_img) {
        return Err(Error::Invalid(format!("txt2img[{t}] names image {i} of {n_img}")));
    }

    let txt_ranks: Vec<Option<usize>> =
        scores_i2t.iter().zip(img2txt).map(|(row, texts)| rank_of_targets(row, texts)).collect();
    let img_ranks: Vec<Option<usize>> = scores_t2i
        .iter()
        .zip(txt2img)
        .map(|(row, &image)| rank_of_targets(row, &[image]))
        .collect();

    let (txt_r1, txt_r5, txt_r10) =
        (recall_at(&txt_ranks, 1), recall_at(&txt_ranks, 5), recall_at(&txt_ranks, 10));
    let (img_r1, img_r5, img_r10) =
        (recall_at(&img_ranks, 1), recall_at(&img_ranks, 5), recall_at(&img_ranks, 10));
    let txt_r_mean = (txt_r1 + txt_r5 + txt_r10) / 3.0;
    let img_r_mean = (img_r1 + img_r5 + img_r10) / 3.0;
    Ok(RetrievalMetrics {
        txt_r1,
        txt_r5,
        txt_r10,
        txt_r_mean,
        img_r1,
        img_r5,
        img_r10,
        img_r_mean,
        r_mean: (txt_r_mean + img_r_mean) / 2.0,
        agg_metrics: (txt_r1 + txt_r5 + txt_r10) / 3.0,
    })
}
