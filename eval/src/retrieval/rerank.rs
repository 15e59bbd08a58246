//! LAVIS `Blip2Qformer.compute_sim_matrix`: ITC similarities, then ITM re-scoring of each image's top
//! `k_test` texts and each text's top `k_test` images.
//!
//! A re-ranked entry is `ITM class-1 logit (averaged over query positions) + ITC sim`; every entry outside
//! the top `k_test` stays at LAVIS's filler -100. LAVIS scores a pair chosen by both directions twice; the ITM
//! logit of a pair does not depend on the direction, so each distinct pair runs once here. Pairs run in
//! (image, text) order in batches, each trimmed to its longest text (padding is masked, so this only saves
//! work). Candidate ties go to the lower index (see [`super::topk`]), and `k_test` larger than the gallery
//! re-ranks everything.

use std::collections::BTreeMap;

use candle_core::{IndexOp, Tensor};
use qformer::masks::PaddingMask;
use qformer::model::{itc_similarity, Blip2Qformer, ImageRows};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::gallery::{ImageGallery, TextGallery};
use super::metrics::{retrieval_metrics, RetrievalMetrics};
use super::report::RetrievalReport;
use super::topk::top_k_rows;
use crate::error::{Error, Result};

/// LAVIS's score for entries that were not re-ranked.
pub const NOT_RERANKED: f32 = -100.0;

/// ITC similarity matrix `[N_img][N_txt]`, computed in image batches of `batch_size`.
pub fn similarity_matrix(
    images: &ImageGallery,
    texts: &TextGallery,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let n = images.len();
    let mut rows = Vec::with_capacity(n);
    for start in (0..n).step_by(batch_size.max(1)) {
        let len = batch_size.max(1).min(n - start);
        let feats = images.image_feats.narrow(0, start, len)?;
        rows.extend(itc_similarity(&feats, &texts.text_feat)?.to_vec2::<f32>()?);
    }
    Ok(rows)
}

/// The matrices LAVIS hands to `_report_metrics`, plus the ITC-only ones.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalScores {
    /// `[N_img][N_txt]` ITC cosine (max over queries).
    pub sims_i2t: Vec<Vec<f32>>,
    /// `[N_img][N_txt]` re-ranked scores, -100 outside each image's top `k_test` texts.
    pub score_i2t: Vec<Vec<f32>>,
    /// `[N_txt][N_img]` re-ranked scores, -100 outside each text's top `k_test` images.
    pub score_t2i: Vec<Vec<f32>>,
    /// Distinct (image, text) pairs scored by ITM.
    pub itm_pairs: usize,
}

/// Distinct pairs (image, text) among both directions' top `k_test` candidates, in (image, text) order.
pub fn rerank_pairs(sims_i2t: &[Vec<f32>], k_test: usize) -> Result<Vec<(usize, usize)>> {
    let n_txt = sims_i2t.first().map_or(0, |r| r.len());
    let sims_t2i: Vec<Vec<f32>> =
        (0..n_txt).map(|t| sims_i2t.iter().map(|row| row[t]).collect()).collect();
    let mut pairs = std::collections::BTreeSet::new();
    for (i, top) in top_k_rows(sims_i2t, k_test)?.into_iter().enumerate() {
        pairs.extend(top.into_iter().map(|t| (i, t)));
    }
    for (t, top) in top_k_rows(&sims_t2i, k_test)?.into_iter().enumerate() {
        pairs.extend(top.into_iter().map(|i| (i, t)));
    }
    Ok(pairs.into_iter().collect())
}

/// ITM class-1 logits of `pairs`, in batches of `batch_size`; `progress` gets the number of pairs done.
pub fn itm_logits_of_pairs(
    model: &Blip2Qformer,
    images: &ImageGallery,
    texts: &TextGallery,
    pairs: &[(usize, usize)],
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<f32>> {
    let device = images.image_embeds.device().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(0); // unused: no dropout at evaluation
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size.max(1)) {
        // Pairs come sorted by image, so a chunk holds few distinct images: each one's
        // cross-attention K/V is projected once and shared by its texts.
        let mut distinct: Vec<u32> = Vec::new();
        let rows: Vec<u32> = chunk
            .iter()
            .map(|&(i, _)| {
                let i = i as u32;
                let r = distinct.iter().position(|&d| d == i).unwrap_or_else(|| {
                    distinct.push(i);
                    distinct.len() - 1
                });
                r as u32
            })
            .collect();
        let txt_idx: Vec<usize> = chunk.iter().map(|&(_, t)| t).collect();
        let len = txt_idx.iter().map(|&t| texts.lengths[t]).max().unwrap_or(1).max(1);
        let image_rows = ImageRows::new(&rows, distinct.len(), &device)?;
        let image_embeds = images.image_embeds.index_select(&Tensor::new(distinct, &device)?, 0)?;
        let txt_u32: Vec<u32> = txt_idx.iter().map(|&t| t as u32).collect();
        let input_ids =
            texts.input_ids.index_select(&Tensor::new(txt_u32, &device)?, 0)?.narrow(1, 0, len)?;
        let padding = trimmed_padding(&texts.padding, &txt_idx, len)?;
        let logits = model.itm_logits_shared(
            &image_embeds,
            Some(&image_rows),
            &input_ids,
            &padding,
            false,
            &mut rng,
        )?;
        out.extend(logits.i((.., 1))?.to_vec1::<f32>()?);
        progress(chunk.len());
    }
    Ok(out)
}

fn trimmed_padding(padding: &PaddingMask, rows: &[usize], len: usize) -> Result<PaddingMask> {
    let rows: Vec<Vec<u8>> =
        rows.iter().map(|&t| (0..len).map(|j| u8::from(padding.keep(t, j))).collect()).collect();
    Ok(PaddingMask::from_rows(&rows)?)
}

/// The whole `compute_sim_matrix`: ITC matrix, then ITM re-scoring of the top `k_test` both ways.
pub fn compute_scores(
    model: &Blip2Qformer,
    images: &ImageGallery,
    texts: &TextGallery,
    k_test: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RetrievalScores> {
    if k_test == 0 {
        return Err(Error::Invalid("k_test must be at least 1".into()));
    }
    let (n_img, n_txt) = (images.len(), texts.len());
    let sims_i2t = similarity_matrix(images, texts, batch_size)?;
    let pairs = rerank_pairs(&sims_i2t, k_test)?;
    let total = pairs.len();
    let mut done = 0;
    let logits = itm_logits_of_pairs(model, images, texts, &pairs, batch_size, &mut |n| {
        done += n;
        progress(done, total)
    })?;
    let itm: BTreeMap<(usize, usize), f32> = pairs.iter().copied().zip(logits).collect();

    let mut score_i2t = vec![vec![NOT_RERANKED; n_txt]; n_img];
    for (i, top) in top_k_rows(&sims_i2t, k_test)?.into_iter().enumerate() {
        for t in top {
            score_i2t[i][t] = itm[&(i, t)] + sims_i2t[i][t];
        }
    }
    let sims_t2i: Vec<Vec<f32>> =
        (0..n_txt).map(|t| sims_i2t.iter().map(|row| row[t]).collect()).collect();
    let mut score_t2i = vec![vec![NOT_RERANKED; n_img]; n_txt];
    for (t, top) in top_k_rows(&sims_t2i, k_test)?.into_iter().enumerate() {
        for i in top {
            score_t2i[t][i] = itm[&(i, t)] + sims_t2i[t][i];
        }
    }
    Ok(RetrievalScores { sims_i2t, score_i2t, score_t2i, itm_pairs: total })
}

impl RetrievalScores {
    /// ITC-only and re-ranked metrics for the ground truth `img2txt` / `txt2img`.
    pub fn report(&self, img2txt: &[Vec<usize>], txt2img: &[usize]) -> Result<RetrievalReport> {
        let n_txt = self.sims_i2t.first().map_or(0, |r| r.len());
        if self.sims_i2t.iter().any(|r| r.len() != n_txt) {
            return Err(Error::Invalid("similarity matrix rows differ in length".into()));
        }
        let sims_t2i: Vec<Vec<f32>> =
            (0..n_txt).map(|t| self.sims_i2t.iter().map(|row| row[t]).collect()).collect();
        let itc: RetrievalMetrics = retrieval_metrics(&self.sims_i2t, &sims_t2i, img2txt, txt2img)?;
        let rerank = retrieval_metrics(&self.score_i2t, &self.score_t2i, img2txt, txt2img)?;
        Ok(RetrievalReport {
            itc,
            rerank: Some(rerank),
            images: img2txt.len(),
            texts: txt2img.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_the_union_of_both_directions_without_duplicates() {
        // image 0 prefers text 1, image 1 prefers text 1; text 0 prefers image 1, text 1 prefers image 0.
        let sims = vec![vec![0.1f32, 0.9], vec![0.5, 0.6]];
        assert_eq!(rerank_pairs(&sims, 1).unwrap(), [(0, 1), (1, 0), (1, 1)]);
        assert_eq!(rerank_pairs(&sims, 5).unwrap(), [(0, 0), (0, 1), (1, 0), (1, 1)]);
    }
}
