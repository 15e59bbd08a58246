//! Loader: deterministic order, exact resume from a saved cursor, corrupt samples counted.

use crate::common;

use datasets::image::{DecodeLimits, ImageProcessorConfig, TrainAugment};
use datasets::loader::epoch_order;
use datasets::synth::{generate, SynthConfig};
use datasets::text::{CaptionCleaner, Padding, TextTokenizer};
use datasets::{ImageSource, ImageTextItem, Loader, LoaderConfig, LoaderState};

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(&common::fixtures().join("hf-tiny/itm/tokenizer.json"), 32).unwrap()
}

use crate::common::png;

fn items(n: usize) -> Vec<ImageTextItem> {
    generate(&SynthConfig { images: n, seed: 5, image_size: 24, ..Default::default() })
        .into_iter()
        .map(|s| ImageTextItem {
            key: format!("s{}", s.id),
            image: ImageSource::Bytes(png(&s.scene.render())),
            caption: s.captions[0].clone(),
            image_id: s.id,
        })
        .collect()
}

fn config(augment: bool) -> LoaderConfig {
    LoaderConfig {
        batch_size: 4,
        prefetch: 2,
        workers: 0,
        shuffle: true,
        augment: augment.then(TrainAugment::default),
        image: ImageProcessorConfig::square(16),
        clip: None,
        pad_to_square: false,
        caption: CaptionCleaner::default(),
        padding: Padding::MaxLength,
        limits: DecodeLimits::default(),
    }
}

#[test]
fn epoch_order_is_a_seeded_permutation() {
    let a = epoch_order(50, 1, 0, true);
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(50, 1, 0, true));
    assert_ne!(a, epoch_order(50, 1, 1, true));
    assert_ne!(a, epoch_order(50, 2, 0, true));
    assert_eq!(epoch_order(5, 1, 0, false), vec![0, 1, 2, 3, 4]);
}

#[test]
fn resume_from_saved_cursor_sees_the_same_batches() {
    for augment in [false, true] {
        let loader = Loader::new(items(18), tokenizer(), config(augment));
        let start = LoaderState { seed: 7, epoch: 3, position: 0 };
        let full: Vec<_> = loader.epoch(start).map(|b| b.unwrap()).collect();
        assert_eq!(full.len(), 5); // 4+4+4+4+2
        assert_eq!(full.iter().map(|b| b.batch_size).sum::<usize>(), 18);
        assert_eq!(full[4].batch_size, 2);
        assert_eq!(full[0].seq_len, 32);
        assert_eq!(full[0].pixel_values.len(), 4 * 3 * 16 * 16);
        // Save the cursor after batch 1 (e.g. in a checkpoint), round-trip it through JSON.
        let saved = serde_json::to_string(&full[1].state_after).unwrap();
        let resumed_state: LoaderState = serde_json::from_str(&saved).unwrap();
        assert_eq!(resumed_state.position, 8);
        let resumed: Vec<_> = loader.epoch(resumed_state).map(|b| b.unwrap()).collect();
        assert_eq!(resumed.len(), 3);
        for (a, b) in full[2..].iter().zip(&resumed) {
            assert_eq!(a.keys, b.keys);
            assert_eq!(a.pixel_values, b.pixel_values, "augment={augment}");
            assert_eq!(a.input_ids, b.input_ids);
            assert_eq!(a.state_after, b.state_after);
        }
        // Every sample exactly once per epoch.
        let mut keys: Vec<_> = full.iter().flat_map(|b| b.keys.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 18);
    }
}

#[test]
fn augmentation_changes_pixels_but_not_eval() {
    let it = items(4);
    let state = LoaderState { seed: 1, epoch: 0, position: 0 };
    let eval = Loader::new(it.clone(), tokenizer(), config(false));
    let train = Loader::new(it, tokenizer(), config(true));
    let e = eval.epoch(state).next().unwrap().unwrap();
    let t = train.epoch(state).next().unwrap().unwrap();
    assert_eq!(e.keys, t.keys);
    assert_ne!(e.pixel_values, t.pixel_values);
}

#[test]
fn corrupt_missing_and_bomb_samples_are_skipped_and_counted() {
    let mut it = items(6);
    it[1].image = ImageSource::Bytes(b"\x89PNG\r\n\x1a\n truncated".to_vec());
    it[2].image = ImageSource::Path("/nonexistent/image.png".into());
    // A PNG header claiming 100000 x 100000 pixels: refused from the header alone.
    let mut bomb = png(&datasets::image::RgbImage8 { width: 1, height: 1, data: vec![0, 0, 0] });
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    it[3].image = ImageSource::Bytes(bomb);
    let mut cfg = config(false);
    cfg.shuffle = false;
    cfg.batch_size = 6;
    let loader = Loader::new(it, tokenizer(), cfg);
    let b = loader.epoch(LoaderState { seed: 0, epoch: 0, position: 0 }).next().unwrap().unwrap();
    assert_eq!(b.batch_size, 3);
    assert_eq!(b.keys, vec!["s0", "s4", "s5"]);
    assert_eq!(b.image_ids, vec![0, 4, 5]);
    assert_eq!(b.input_ids.len(), 3 * 32);
    let skipped: Vec<_> = b.skipped.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(skipped, vec!["s1", "s2", "s3"]);
    assert!(b.skipped[1].reason.contains("/nonexistent/image.png"));
    assert!(b.skipped[2].reason.to_lowercase().contains("limit"), "{}", b.skipped[2].reason);
}

/// PNG chunk CRC (ISO 3309), to forge a valid IHDR with absurd dimensions.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The loader's own decode threads change nothing but who decodes: the same batches, augmented
/// alike, as on the shared pool.
#[test]
fn own_worker_threads_give_the_same_batches() {
    let start = LoaderState { seed: 3, epoch: 1, position: 0 };
    let shared = Loader::new(items(10), tokenizer(), config(true));
    let own = Loader::new(items(10), tokenizer(), LoaderConfig { workers: 3, ..config(true) });
    for (a, b) in shared.epoch(start).zip(own.epoch(start)) {
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.keys, b.keys);
        assert_eq!(a.pixel_values, b.pixel_values);
    }
}

/// The ranks of a data-parallel run split an epoch: disjoint, together every sample once, each
/// resumable on its own.
#[test]
fn ranks_split_an_epoch_without_overlap() {
    let start = LoaderState { seed: 2, epoch: 0, position: 0 };
    let keys = |l: &Loader, at: LoaderState| -> Vec<String> {
        l.epoch(at).flat_map(|b| b.unwrap().keys).collect()
    };
    let all = keys(&Loader::new(items(11), tokenizer(), config(false)), start);
    let mut union = Vec::new();
    for rank in 0..3 {
        let l = Loader::new(items(11), tokenizer(), config(false)).for_rank(rank, 3).unwrap();
        let mine = keys(&l, start);
        assert_eq!(mine.len(), l.len());
        assert_eq!(mine, all.iter().skip(rank).step_by(3).cloned().collect::<Vec<_>>());
        // Resumed after its first batch, the rank reads on where it stopped.
        let at = l.epoch(start).next().unwrap().unwrap().state_after;
        assert_eq!(keys(&l, at), mine[at.position..].to_vec());
        union.extend(mine);
    }
    union.sort();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(union, sorted);
    assert!(Loader::new(items(2), tokenizer(), config(false)).for_rank(3, 3).is_err());
}
