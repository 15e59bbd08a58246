//! Every COCO caption metric of a set of images at once, as `COCOEvalCap.evaluate()` reports them.

use super::bleu::bleu;
use super::cider::cider_d;
use super::files::{CaptionImage, ImageId};
use super::meteor::{meteor_vocabulary, Meteor, MeteorDataFiles, Module};
use super::ptb::tokenize_caption;
use super::rouge::rouge_l;
use super::TokenizedImage;
use crate::error::Result;

/// Corpus scores, raw fractions (not x100), named as COCOEvalCap names them.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusScores {
    pub bleu: [f64; 4],
    pub meteor: f64,
    pub rouge_l: f64,
    pub cider: f64,
}

/// One image's scores (COCOEvalCap's `imgToEval`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageScores {
    pub image_id: ImageId,
    pub bleu: [f64; 4],
    pub meteor: f64,
    pub rouge_l: f64,
    pub cider: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaptionScores {
    pub corpus: CorpusScores,
    pub per_image: Vec<ImageScores>,
    /// The METEOR modules that ran (exact and stem always; synonym and paraphrase with METEOR's data).
    pub meteor_modules: Vec<Module>,
    /// Entries of the paraphrase table that could match these captions (0 without the table).
    pub paraphrase_entries_used: usize,
}

/// Tokenize every caption as pycocoevalcap does and compute every metric. `meteor_data` supplies METEOR's
/// synonym and paraphrase tables; without it METEOR runs exact and stem matching only.
pub fn score_captions(
    images: &[CaptionImage],
    meteor_data: Option<&MeteorDataFiles>,
) -> Result<CaptionScores> {
    let tokenized: Vec<TokenizedImage> = images
        .iter()
        .map(|image| TokenizedImage {
            candidate: tokenize_caption(&image.candidate),
            references: image.references.iter().map(|r| tokenize_caption(r)).collect(),
        })
        .collect();
    // METEOR reads the tokenized captions as text lines.
    let lines: Vec<(String, Vec<String>)> = tokenized
        .iter()
        .map(|t| (t.candidate.join(" "), t.references.iter().map(|r| r.join(" ")).collect()))
        .collect();
    let (synonyms, paraphrases) = match meteor_data {
        None => (None, None),
        Some(files) => {
            let synonyms = files.read_synonyms()?;
            let vocabulary = meteor_vocabulary(lines.iter().flat_map(|(c, refs)| {
                std::iter::once(c.as_str()).chain(refs.iter().map(String::as_str))
            }));
            (synonyms, files.read_paraphrases(&vocabulary)?)
        }
    };
    let paraphrase_entries_used = paraphrases.as_ref().map_or(0, |p| p.entries());
    let meteor = Meteor::new(synonyms, paraphrases);
    let meteor_scores = meteor.score(&lines);
    let bleu_scores = bleu(&tokenized);
    let rouge_scores = rouge_l(&tokenized);
    let cider_scores = cider_d(&tokenized);
    let per_image = images
        .iter()
        .enumerate()
        .map(|(i, image)| ImageScores {
            image_id: image.image_id.clone(),
            bleu: bleu_scores.per_image[i],
            meteor: meteor_scores.per_image[i],
            rouge_l: rouge_scores.per_image[i],
            cider: cider_scores.per_image[i],
        })
        .collect();
    Ok(CaptionScores {
        corpus: CorpusScores {
            bleu: bleu_scores.corpus,
            meteor: meteor_scores.corpus,
            rouge_l: rouge_scores.corpus,
            cider: cider_scores.corpus,
        },
        per_image,
        meteor_modules: meteor.modules().to_vec(),
        paraphrase_entries_used,
    })
}
