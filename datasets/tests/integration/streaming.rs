//! webdataset sources streamed: every sample once an epoch in a seeded order that changes with
//! the epoch, one window's index resident, resume at any position and rank splits as the
//! uninterrupted single-process order has them, a shard changed under a run named.

use std::collections::BTreeSet;
use std::sync::Arc;

use datasets::sources::{open_source, read_source, Mixture, SourceItems};
use datasets::{Loader, LoaderState};

use crate::sources::{config, shard, webdataset};

/// `shards` shards of `per` good samples each (plus two it leaves out) under a temp dir; the
/// source's pattern.
fn shards(dir: &std::path::Path, shards: usize, per: usize) -> String {
    for k in 0..shards {
        shard(&dir.join(format!("{k:05}.tar")), per);
    }
    format!("{}/{{00000..{:05}}}.tar", dir.display(), shards - 1)
}

fn streamed(urls: &str, buffer: usize) -> SourceItems {
    open_source(&webdataset(urls.to_string(), 1.0), buffer).unwrap().0
}

/// Keys and ids of an epoch read slot by slot, and the most sample indices held at once.
fn read_epoch(m: &Arc<Mixture>, seed: u64, epoch: u64) -> (Vec<(String, u64)>, usize) {
    let mut r = m.reader(seed, epoch);
    let mut most = 0;
    let out = (0..m.len())
        .map(|_| {
            let (_, it) = r.next_item().unwrap();
            most = most.max(r.resident());
            (it.key, it.image_id)
        })
        .collect();
    (out, most)
}

#[test]
fn an_epoch_streams_every_sample_once_holding_one_window() {
    let dir = tempfile::tempdir().unwrap();
    let urls = shards(dir.path(), 12, 3);
    let (source, report) = open_source(&webdataset(urls.clone(), 1.0), 7).unwrap();
    assert!(matches!(source, SourceItems::Streamed(_)));
    // Counted as the whole read counts them, the same samples left out.
    let whole = read_source(&webdataset(urls, 1.0)).unwrap();
    assert_eq!(source.len(), 36);
    assert_eq!(report.skipped, whole.skipped);
    let m = Arc::new(Mixture::new(vec![(source, 1.0)]).unwrap());
    let (first, most) = read_epoch(&m, 5, 0);
    let want: BTreeSet<(String, u64)> =
        whole.items.iter().map(|i| (i.key.clone(), i.image_id)).collect();
    assert_eq!(first.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(first.len(), want.len());
    // A window closes at 7 samples: 3 shards of 3, never the whole set.
    assert!(most <= 9, "{most} indexed at once");
    // Seeded: the same epoch again, another epoch in another order, samples of a shard spread.
    assert_eq!(read_epoch(&m, 5, 0).0, first);
    let second = read_epoch(&m, 5, 1).0;
    assert_ne!(second, first);
    let shard_of = |k: &str| k.split('/').next().unwrap().to_string();
    let runs = first.windows(2).filter(|w| shard_of(&w[0].0) != shard_of(&w[1].0)).count();
    assert!(runs > 12, "samples of a shard stay together: {runs} changes of shard");
}

#[test]
fn a_resumed_or_split_epoch_reads_what_the_whole_epoch_reads() {
    let dir = tempfile::tempdir().unwrap();
    let urls = shards(dir.path(), 5, 4);
    let loader = |world: usize, rank: usize| {
        let m = Mixture::new(vec![
            (streamed(&urls, 6), 2.0),
            (SourceItems::Listed(read_source(&webdataset(urls.clone(), 1.0)).unwrap().items), 1.0),
        ])
        .unwrap();
        Loader::mixed(m, None, config()).for_rank(rank, world).unwrap()
    };
    let keys = |l: &Loader, position: usize| -> Vec<(String, u64)> {
        l.epoch(LoaderState { seed: 3, epoch: 1, position })
            .flat_map(|b| {
                let b = b.unwrap();
                b.keys.into_iter().zip(b.image_ids).collect::<Vec<_>>()
            })
            .collect()
    };
    let whole = loader(1, 0);
    let all = keys(&whole, 0);
    assert_eq!(all.len(), 40);
    // Resumed at every position, mid-shard and mid-window.
    for position in [1, 5, 6, 13, 39] {
        assert_eq!(keys(&whole, position), all[position..], "resumed at {position}");
    }
    // Three ranks: disjoint, together the whole epoch, each every third slot.
    for rank in 0..3 {
        let mine = keys(&loader(3, rank), 0);
        let every_third: Vec<_> = all.iter().skip(rank).step_by(3).cloned().collect();
        assert_eq!(mine, every_third, "rank {rank}");
        assert_eq!(keys(&loader(3, rank), 2), every_third[2..], "rank {rank} resumed");
    }
}

#[test]
fn a_shard_changed_under_a_run_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let urls = shards(dir.path(), 2, 3);
    let m = Arc::new(Mixture::new(vec![(streamed(&urls, 1), 1.0)]).unwrap());
    // Rewritten with fewer samples after the run counted it.
    shard(&dir.path().join("00001.tar"), 2);
    let mut r = m.reader(0, 0);
    let e = (0..m.len()).find_map(|_| r.next_item().err()).expect("the change is noticed");
    let e = e.to_string();
    assert!(e.contains("00001.tar") && e.contains("must not change"), "{e}");
}

#[test]
fn a_sample_check_leaves_refused_samples_out_of_their_batch_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let urls = shards(dir.path(), 2, 3);
    let m = Mixture::new(vec![(streamed(&urls, 4), 1.0)]).unwrap();
    let check: datasets::SampleCheck = Arc::new(|item| {
        if item.key.starts_with("00001.tar") {
            Err("second shard refused".to_string())
        } else {
            Ok(())
        }
    });
    let loader = Loader::mixed(m, None, config()).with_check(check);
    let (mut kept, mut refused) = (Vec::new(), Vec::new());
    for b in loader.epoch(LoaderState { seed: 2, epoch: 0, position: 0 }) {
        let b = b.unwrap();
        kept.extend(b.keys);
        refused.extend(b.skipped);
    }
    assert_eq!(kept.len(), 3);
    assert!(kept.iter().all(|k| k.starts_with("00000.tar")), "{kept:?}");
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|s| s.reason == "second shard refused"));
}
