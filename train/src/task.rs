//! What a run trains and what it reads: a [`Task`] turns one micro-batch into losses, a
//! [`Batches`] source hands the loop one step's micro-batches at a time.

use std::collections::BTreeMap;

use datasets::LoaderState;

use crate::grad::MicroLoss;
use crate::rng::TrainRng;
use crate::{Error, Result};

/// The objective of a run: the losses of one micro-batch (their `total` is what is minimized).
pub trait Task {
    type Batch;

    /// Training-mode losses of `batch`; every random draw (dropout, negatives) comes from `rng`.
    fn loss(&self, batch: &Self::Batch, rng: &mut TrainRng) -> Result<MicroLoss>;

    /// Validation metrics (eval mode, no draw from the run's RNG) over every batch of `data`,
    /// named as the metrics log shows them (`val_loss`, ...).
    fn validate(
        &self,
        data: &mut dyn Batches<Batch = Self::Batch>,
    ) -> Result<BTreeMap<String, f64>> {
        let _ = data;
        Err(Error::Config("this run has no validation loss: unset validation.every_steps".into()))
    }
}

/// One optimizer step's data.
pub struct StepBatch<B> {
    /// One entry per micro-batch; the step's gradient is the mean of theirs.
    pub micro: Vec<B>,
    /// Samples in the step.
    pub samples: u64,
    /// Samples the pipeline dropped while reading this batch (unreadable image, ...).
    pub skipped: u64,
    /// Where the source stands after this batch; saved with a checkpoint so a resumed run reads on
    /// from here (`None` for sources that are not resumable).
    pub cursor: Option<LoaderState>,
}

/// What a source gives when asked for the next step.
pub enum Fetched<B> {
    Step(StepBatch<B>),
    /// A batch too thin to train on (e.g. fewer than two readable samples, which ITM needs):
    /// passed over, its cursor kept so that a resumed run does not read it again.
    PassedOver {
        reason: String,
        skipped: u64,
        cursor: Option<LoaderState>,
    },
    /// The epoch is over; the loop calls [`Batches::start_epoch`] for the next one.
    EndOfEpoch,
}

/// Where a run's batches come from.
pub trait Batches {
    type Batch;

    /// Positions the source at the start of `epoch`, or at `cursor` inside it (a resumed run).
    fn start_epoch(&mut self, epoch: u64, cursor: Option<LoaderState>) -> Result<()>;

    fn next(&mut self) -> Result<Fetched<Self::Batch>>;

    /// A checkpoint holding `cursor` was just written: a source that reports what it has read
    /// brings its report up to the checkpoint here.
    fn checkpointed(&mut self, _cursor: Option<&LoaderState>) -> Result<()> {
        Ok(())
    }
}
