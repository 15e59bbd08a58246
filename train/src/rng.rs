//! The one seeded RNG type of training, and named sub-streams derived from the run seed.
//!
//! candle's CPU RNG cannot be seeded, so every random draw on a training path (init, dropout
//! masks, ITM negatives, data order) comes from a `ChaCha8Rng`. Its state serializes with serde,
//! which is what makes exact resume possible.

use rand::SeedableRng;
pub use rand_chacha::ChaCha8Rng as TrainRng;

/// The RNG for the whole run.
pub fn seeded(seed: u64) -> TrainRng {
    TrainRng::seed_from_u64(seed)
}

/// An independent stream for one consumer (`"init"`, `"dropout"`, `"data"`, …): the same seed
/// with a ChaCha stream id taken from the name, so adding a consumer never shifts the others.
pub fn substream(seed: u64, name: &str) -> TrainRng {
    let mut rng = TrainRng::seed_from_u64(seed);
    rng.set_stream(fnv1a64(name.as_bytes()));
    rng
}

// A fixed hash: `DefaultHasher` may change between Rust releases, which would change streams.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn substreams_are_reproducible_and_distinct() {
        let mut r1 = substream(7, "data");
        let mut r2 = substream(7, "data");
        let mut r3 = substream(7, "dropout");
        let x1: Vec<u32> = (0..8).map(|_| r1.random()).collect();
        let x2: Vec<u32> = (0..8).map(|_| r2.random()).collect();
        let x3: Vec<u32> = (0..8).map(|_| r3.random()).collect();
        assert_eq!(x1, x2);
        assert_ne!(x1, x3);
        assert_ne!(x1[0], x1[1]);
    }

    #[test]
    fn fnv_matches_reference_vector() {
        // Reference: FNV-1a 64 test vectors (draft-eastlake-fnv), "a" -> 0xaf63dc4c8601ec8c.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut r = seeded(42);
        let _: u64 = r.random();
        let json = serde_json::to_string(&r).unwrap();
        let mut back: TrainRng = serde_json::from_str(&json).unwrap();
        assert_eq!(r.random::<u64>(), back.random::<u64>());
    }
}
