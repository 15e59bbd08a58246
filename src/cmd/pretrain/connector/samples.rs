//! A connector run's samples: conversations or captions (with MiniGPT-4's prompt list), and
//! the text of each loader sample as its template reads it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};

use datasets::formats::{
    conversation_items, read_conversations, read_instruction_prompts, Conversation,
};
use datasets::text::CaptionCleaner;
use datasets::{ImageTextBatch, ImageTextItem, LoaderState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use train::tasks::{TemplateTokenizer, TrainText};
use train::RunConfig;

use crate::cmd::pretrain::data::{caption_items, CaptionData};

/// The run's samples: conversations (`data.conversations`) or captions, these with
/// MiniGPT-4's instructions in its stage 2.
pub(super) struct Samples {
    /// Indexed by the items' `image_id` when the data is conversations.
    conversations: Option<Vec<Conversation>>,
    /// `data.instructions`: a batch's captions answer one of these, drawn by [`Self::draw`].
    instructions: Option<Vec<String>>,
    seed: u64,
}

impl Samples {
    /// The samples' texts, and their loader items.
    pub(super) fn read(
        cfg: &RunConfig,
        run_root: &Path,
        marker: Option<&str>,
    ) -> Result<(Self, CaptionData)> {
        let seed = cfg.seed;
        let Some(path) = &cfg.data.conversations else {
            let instructions = match (&cfg.data.instructions, marker) {
                (Some(p), Some(m)) => Some(read_instruction_prompts(p, m)?),
                (Some(_), None) => bail!("data.instructions: only MiniGPT-4 reads a prompt list"),
                (None, _) => None,
            };
            let data = caption_items(cfg, run_root)?;
            return Ok((Self { conversations: None, instructions, seed }, data));
        };
        let conversations = read_conversations(path)?;
        let folder = match &cfg.data.images {
            Some(f) => f.clone(),
            None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let (items, text_only) = conversation_items(&conversations, &folder);
        if text_only > 0 {
            println!("{}: {text_only} records without an image left out", path.display());
        }
        let data = CaptionData::Items(items);
        Ok((Self { conversations: Some(conversations), instructions: None, seed }, data))
    }

    /// The instruction of a batch, as MiniGPT-4 draws one per batch: from the run seed and the
    /// batch's place in its epoch, so that a resumed run draws the same.
    pub(super) fn draw(&self, cursor: &LoaderState) -> Option<&str> {
        let prompts = self.instructions.as_ref()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6d69_6e69_6770_7434);
        rng.set_stream(cursor.epoch);
        rng.set_word_pos((cursor.position as u128) << 4);
        Some(&prompts[rng.random_range(0..prompts.len())])
    }

    /// Sample `k` of a loader batch.
    pub(super) fn text<'a>(&'a self, b: &'a ImageTextBatch, k: usize) -> TrainText<'a> {
        match (&self.conversations, self.draw(&b.state_after)) {
            (Some(c), _) => TrainText::Conversation(&c[b.image_ids[k] as usize].turns),
            (None, Some(instruction)) => {
                TrainText::Instructed { instruction, answer: &b.captions[k] }
            }
            (None, None) => TrainText::Caption(&b.captions[k]),
        }
    }

    /// Whether the template can read the text of `item`; `Err`: why not.
    pub(super) fn readable(
        &self,
        item: &ImageTextItem,
        tok: &TemplateTokenizer,
        cleaner: &CaptionCleaner,
    ) -> std::result::Result<(), String> {
        // Every prompt of the list reads the same way: the first stands for them all.
        let instruction = self.instructions.as_ref().map(|p| p[0].as_str());
        let caption;
        let text = match (self.conversations.as_deref(), instruction) {
            (Some(c), _) => TrainText::Conversation(&c[item.image_id as usize].turns),
            (None, Some(instruction)) => {
                caption = cleaner.clean(&item.caption);
                TrainText::Instructed { instruction, answer: &caption }
            }
            (None, None) => {
                caption = cleaner.clean(&item.caption);
                TrainText::Caption(&caption)
            }
        };
        tok.pieces(text).map(|_| ())
    }

    /// Leaves out the items of `data` held in memory whose text the template cannot read,
    /// saying how many and why (a streamed source's are checked batch by batch).
    pub(super) fn keep_readable(
        &self,
        data: &mut CaptionData,
        tok: &TemplateTokenizer,
        cleaner: &CaptionCleaner,
    ) -> Result<()> {
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut first: Option<String> = None;
        let before = data.len();
        data.retain(|item| match self.readable(item, tok, cleaner) {
            Ok(()) => true,
            Err(reason) => {
                first.get_or_insert_with(|| format!("{}: {reason}", item.key));
                let kind = reason.split(':').next().unwrap_or(&reason).to_string();
                *reasons.entry(kind).or_insert(0) += 1;
                false
            }
        });
        let left_out = before - data.len();
        if left_out > 0 {
            let counts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} × {r}")).collect();
            eprintln!(
                "warning: {left_out} of {before} samples left out ({}); first: {}",
                counts.join(", "),
                first.unwrap_or_default()
            );
        }
        if data.len() == 0 {
            bail!(
                "no sample of the training data can be read by the {:?} template",
                tok.template()
            );
        }
        Ok(())
    }
}
