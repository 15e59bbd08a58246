//! An epoch over several sources: each sample slot draws its source by weight and takes that
//! source's next sample, in a seeded order of the source's own (a new one each time the source
//! runs through, so a small source weighted up repeats in a fresh order). Listed sources are
//! permuted in memory; streamed ones ([`ShardSet`]) are read window by window. The samples of
//! an epoch are a function of (seed, epoch) alone: a reader started at any position reads what
//! a reader started at 0 reads from there on.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::shards::{ShardPass, ShardSet};
use crate::error::{DataError, Result};
use crate::item::ImageTextItem;

/// The samples of one source.
#[derive(Debug, Clone)]
pub enum SourceItems {
    /// Read whole into memory (annotation files).
    Listed(Vec<ImageTextItem>),
    /// Shards counted at the start and read a window at a time.
    Streamed(ShardSet),
}

impl SourceItems {
    pub fn len(&self) -> usize {
        match self {
            SourceItems::Listed(items) => items.len(),
            SourceItems::Streamed(set) => set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sources with their weights.
#[derive(Debug, Clone)]
pub struct Mixture {
    sources: Vec<SourceItems>,
    /// Cumulative, normalized to end at 1.
    cumulative: Vec<f64>,
    /// Added to the image ids of each source, so that ids stay distinct across sources (ITC
    /// treats equal ids as positives).
    id_base: Vec<u64>,
}

impl Mixture {
    /// `sources` with their weights; an empty source must have weight 0.
    pub fn new(sources: Vec<(SourceItems, f64)>) -> Result<Self> {
        if sources.is_empty() {
            return Err(DataError::Invalid("a mixture needs at least one source".into()));
        }
        for (s, (items, w)) in sources.iter().enumerate() {
            if !(w.is_finite() && *w >= 0.0) {
                return Err(DataError::Invalid(format!(
                    "data.sources[{s}].weight must be >= 0 (got {w})"
                )));
            }
            if items.is_empty() && *w > 0.0 {
                return Err(DataError::Invalid(format!(
                    "data.sources[{s}] has no samples to draw"
                )));
            }
        }
        let total: f64 = sources.iter().map(|(_, w)| w).sum();
        if total <= 0.0 {
            return Err(DataError::Invalid("data.sources: the weights sum to 0".into()));
        }
        let mut acc = 0.0;
        let cumulative = sources
            .iter()
            .map(|(_, w)| {
                acc += w / total;
                acc
            })
            .collect();
        let mut next = 0u64;
        let mut id_base = Vec::with_capacity(sources.len());
        for (items, _) in &sources {
            id_base.push(next);
            next += match items {
                SourceItems::Listed(items) => {
                    items.iter().map(|it| it.image_id + 1).max().unwrap_or(0)
                }
                SourceItems::Streamed(set) => set.len() as u64,
            };
        }
        let sources = sources.into_iter().map(|(items, _)| items).collect();
        Ok(Self { sources, cumulative, id_base })
    }

    /// Samples per epoch: as many as the sources hold together.
    pub fn len(&self) -> usize {
        self.sources.iter().map(SourceItems::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sources(&self) -> &[SourceItems] {
        &self.sources
    }

    /// Every sample of every source once, source after source in file order, with the image
    /// ids an epoch gives them.
    pub fn into_items(self) -> Result<Vec<ImageTextItem>> {
        let mut out = Vec::with_capacity(self.len());
        for (s, source) in self.sources.into_iter().enumerate() {
            let items = match source {
                SourceItems::Listed(items) => items,
                SourceItems::Streamed(set) => set.all_items()?,
            };
            out.extend(items.into_iter().map(|mut it| {
                it.image_id += self.id_base[s];
                it
            }));
        }
        Ok(out)
    }

    /// A reader at the start of `epoch`.
    pub fn reader(self: &Arc<Self>, seed: u64, epoch: u64) -> MixtureReader {
        let mut pick = ChaCha8Rng::seed_from_u64(seed ^ 0x6d69_7874_7572_6573);
        pick.set_stream(epoch);
        let n = self.sources.len();
        MixtureReader {
            mixture: self.clone(),
            seed,
            epoch,
            pick,
            taken: vec![0; n],
            passes: (0..n).map(|_| None).collect(),
        }
    }
}

/// The pass a source is in, by the number of times it ran through this epoch.
#[derive(Debug)]
enum Pass {
    Listed { cycle: u64, order: Vec<usize> },
    Streamed { cycle: u64, pass: ShardPass },
}

/// Reads an epoch of a [`Mixture`] slot by slot.
#[derive(Debug)]
pub struct MixtureReader {
    mixture: Arc<Mixture>,
    seed: u64,
    epoch: u64,
    pick: ChaCha8Rng,
    /// Samples each source gave this epoch.
    taken: Vec<usize>,
    passes: Vec<Option<Pass>>,
}

impl MixtureReader {
    /// The source of the next slot and its ordinal in that source's epoch.
    fn draw(&mut self) -> (usize, usize) {
        let u: f64 = self.pick.random();
        let cumulative = &self.mixture.cumulative;
        let s = cumulative.iter().position(|&c| u < c).unwrap_or(cumulative.len() - 1);
        self.taken[s] += 1;
        (s, self.taken[s] - 1)
    }

    /// Samples each source gave so far this epoch.
    pub fn taken(&self) -> &[usize] {
        &self.taken
    }

    /// Passes over `n` slots without reading their samples (another rank's, or a resumed
    /// run's past).
    pub fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.draw();
        }
    }

    /// The next slot's source and sample.
    pub fn next_item(&mut self) -> Result<(usize, ImageTextItem)> {
        let (s, ordinal) = self.draw();
        let source = &self.mixture.sources[s];
        let n = source.len();
        let (cycle, j) = ((ordinal / n) as u64, ordinal % n);
        // Each pass of a source is seeded by (seed, source, epoch, cycle).
        let stream = self.epoch.wrapping_mul(1 << 20).wrapping_add(cycle);
        let source_seed = self.seed ^ (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = &mut self.passes[s];
        let mut item = match source {
            SourceItems::Listed(items) => {
                if !matches!(slot, Some(Pass::Listed { cycle: c, .. }) if *c == cycle) {
                    let mut rng = ChaCha8Rng::seed_from_u64(source_seed);
                    rng.set_stream(stream);
                    let mut order: Vec<usize> = (0..n).collect();
                    order.shuffle(&mut rng);
                    *slot = Some(Pass::Listed { cycle, order });
                }
                let Some(Pass::Listed { order, .. }) = slot else { unreachable!("set above") };
                items[order[j]].clone()
            }
            SourceItems::Streamed(set) => {
                if !matches!(slot, Some(Pass::Streamed { cycle: c, .. }) if *c == cycle) {
                    *slot = Some(Pass::Streamed { cycle, pass: set.pass(source_seed, stream) });
                }
                let Some(Pass::Streamed { pass, .. }) = slot else { unreachable!("set above") };
                pass.item(set, j)?
            }
        };
        item.image_id += self.mixture.id_base[s];
        Ok((s, item))
    }

    /// Samples whose index the reader holds now: the listed sources' orders and the streamed
    /// sources' windows.
    pub fn resident(&self) -> usize {
        self.passes
            .iter()
            .map(|p| match p {
                Some(Pass::Listed { order, .. }) => order.len(),
                Some(Pass::Streamed { pass, .. }) => pass.resident(),
                None => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::ImageSource;

    fn listed(n: usize) -> SourceItems {
        SourceItems::Listed(
            (0..n)
                .map(|i| ImageTextItem {
                    key: i.to_string(),
                    image: ImageSource::Bytes(Vec::new()),
                    caption: String::new(),
                    image_id: i as u64,
                })
                .collect(),
        )
    }

    fn epoch(m: &Arc<Mixture>, seed: u64, epoch: u64) -> Vec<(usize, u64)> {
        let mut r = m.reader(seed, epoch);
        (0..m.len()).map(|_| r.next_item().map(|(s, it)| (s, it.image_id)).unwrap()).collect()
    }

    #[test]
    fn weights_three_to_one_draw_three_to_one_and_the_order_is_a_function_of_the_seed() {
        let m = Arc::new(Mixture::new(vec![(listed(50), 3.0), (listed(9_950), 1.0)]).unwrap());
        let order = epoch(&m, 7, 2);
        assert_eq!(order.len(), 10_000);
        let first = order.iter().filter(|(s, _)| *s == 0).count() as f64;
        let ratio = first / (order.len() as f64 - first);
        assert!((ratio - 3.0).abs() < 0.15, "{ratio}");
        assert_eq!(order, epoch(&m, 7, 2));
        assert_ne!(order, epoch(&m, 7, 3));
        // The small source runs through in full before it repeats; ids of the second source
        // start past the first's.
        let small: Vec<u64> =
            order.iter().filter(|(s, _)| *s == 0).map(|(_, id)| *id).take(50).collect();
        let mut sorted = small.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert!(order.iter().filter(|(s, _)| *s == 1).all(|(_, id)| *id >= 50));
        // A reader that skips to a slot reads on as one that read up to it.
        let mut r = m.reader(7, 2);
        r.skip(6_000);
        let rest: Vec<(usize, u64)> = (6_000..10_000)
            .map(|_| r.next_item().map(|(s, it)| (s, it.image_id)).unwrap())
            .collect();
        assert_eq!(rest, order[6_000..]);
        let e = Mixture::new(vec![(listed(0), 1.0), (listed(5), 1.0)]).unwrap_err();
        assert!(e.to_string().contains("sources[0]"));
    }
}
