//! Shuffled passes over `0..n` drawn from a seeded stream: the index order of the quickstart's
//! in-memory phases, where every sample is already a row of a tensor. (Runs that read files go
//! through `datasets::Loader`, whose order is a pure function of seed and epoch.)

use datasets::LoaderState;
use rand::seq::SliceRandom;

use crate::rng::TrainRng;
use crate::task::{Batches, Fetched, StepBatch};
use crate::Result;

pub struct EpochSampler {
    order: Vec<usize>,
    pos: usize,
    rng: TrainRng,
}

impl EpochSampler {
    pub fn new(n: usize, rng: TrainRng) -> Self {
        Self { order: (0..n).collect(), pos: n, rng }
    }

    /// `b` indices with no repeat (`b` ≤ n): an epoch's tail too short for a batch is skipped.
    pub fn next_distinct(&mut self, b: usize) -> Vec<usize> {
        if self.order.len() - self.pos < b {
            self.pos = self.order.len();
        }
        self.next(b)
    }

    /// `b` indices; a batch may run across the end of one shuffled pass into the next.
    pub fn next(&mut self, b: usize) -> Vec<usize> {
        (0..b)
            .map(|_| {
                if self.pos == self.order.len() {
                    self.order.shuffle(&mut self.rng);
                    self.pos = 0;
                }
                self.pos += 1;
                self.order[self.pos - 1]
            })
            .collect()
    }
}

/// Builds one step's batch from sample indices.
pub type IndexBuilder<'a, B> = Box<dyn FnMut(&[usize]) -> Result<B> + 'a>;

/// A [`Batches`] source of one micro-batch per step, built from `batch` sampled indices. It
/// never ends an epoch and has no cursor: a run over it is not resumable.
pub struct SampledBatches<'a, B> {
    sampler: EpochSampler,
    batch: usize,
    /// Draw with [`EpochSampler::next_distinct`] (no index twice in a batch).
    distinct: bool,
    build: IndexBuilder<'a, B>,
}

impl<'a, B> SampledBatches<'a, B> {
    pub fn new(
        sampler: EpochSampler,
        batch: usize,
        distinct: bool,
        build: IndexBuilder<'a, B>,
    ) -> Self {
        Self { sampler, batch, distinct, build }
    }
}

impl<B> Batches for SampledBatches<'_, B> {
    type Batch = B;

    fn start_epoch(&mut self, _epoch: u64, _cursor: Option<LoaderState>) -> Result<()> {
        Ok(())
    }

    fn next(&mut self) -> Result<Fetched<B>> {
        let idx = match self.distinct {
            true => self.sampler.next_distinct(self.batch),
            false => self.sampler.next(self.batch),
        };
        let micro = vec![(self.build)(&idx)?];
        Ok(Fetched::Step(StepBatch { micro, samples: idx.len() as u64, skipped: 0, cursor: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_once_per_pass_and_distinct_batches_never_repeat() {
        let mut s = EpochSampler::new(10, crate::rng::seeded(3));
        let mut pass: Vec<usize> = (0..10).flat_map(|_| s.next(1)).collect();
        pass.sort_unstable();
        assert_eq!(pass, (0..10).collect::<Vec<_>>());
        for _ in 0..20 {
            let mut b = s.next_distinct(4);
            b.sort_unstable();
            b.dedup();
            assert_eq!(b.len(), 4);
        }
    }
}
