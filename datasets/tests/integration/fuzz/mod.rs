//! A seeded byte-mutation loop for the fuzz tests: mutate valid inputs a fixed number of times
//! and require every call to return (Ok or a typed error), never to panic.
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bytes that tend to matter to parsers: delimiters, zero, all-ones, large lengths.
const INTERESTING: [u8; 16] =
    [0, 0xff, 0x7f, 0x80, b'"', b'{', b'}', b'[', b']', b',', b':', b'0', b'9', b'-', b'.', b'\\'];

/// One random edit of `data`.
pub fn mutate(data: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    let len = data.len();
    match rng.random_range(0..8) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] ^= 1 << rng.random_range(0..8);
        }
        // Overwrite with an interesting or random byte.
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] = if rng.random_bool(0.5) {
                INTERESTING[rng.random_range(0..INTERESTING.len())]
            } else {
                rng.random()
            };
        }
        // Truncate.
        2 => data.truncate(rng.random_range(0..=len)),
        // Delete a range.
        3 if len > 1 => {
            let a = rng.random_range(0..len);
            let b = rng.random_range(a..=len.min(a + 64));
            data.drain(a..b);
        }
        // Insert random bytes.
        4 => {
            let at = rng.random_range(0..=len);
            let n = rng.random_range(1..16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(at..at, bytes);
        }
        // Duplicate a range somewhere else.
        5 if len > 1 => {
            let a = rng.random_range(0..len);
            let b = rng.random_range(a..=len.min(a + 64));
            let chunk = data[a..b].to_vec();
            let at = rng.random_range(0..=data.len());
            data.splice(at..at, chunk);
        }
        // Overwrite 4 bytes with a large little- or big-endian integer (length fields).
        6 if len >= 4 => {
            let i = rng.random_range(0..=len - 4);
            let v: u32 = [u32::MAX, 0x7fff_ffff, 0x8000_0000, 0x0001_0000, rng.random()]
                [rng.random_range(0..5)];
            let bytes = if rng.random_bool(0.5) { v.to_be_bytes() } else { v.to_le_bytes() };
            data[i..i + 4].copy_from_slice(&bytes);
        }
        // Lengthen a number into one that overflows every integer type.
        _ => {
            let digits: Vec<usize> = (0..len).filter(|&i| data[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                data.extend_from_slice(b"99999999999999999999");
            } else {
                let at = digits[rng.random_range(0..digits.len())];
                data.splice(at..at, b"99999999999999999999".iter().copied());
            }
        }
    }
}

/// Runs `check` on `iterations` mutants of the `seeds` (1 to 4 stacked edits each) and on the
/// seeds themselves; returns how many mutants were accepted (Ok). Panics, naming the seed index,
/// iteration and a hex prefix of the input, if `check` panics.
pub fn fuzz<F>(name: &str, seed: u64, seeds: &[Vec<u8>], iterations: usize, mut check: F) -> usize
where
    F: FnMut(&[u8]) -> Result<(), String>,
{
    assert!(!seeds.is_empty());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ok = 0;
    for (i, s) in seeds.iter().enumerate() {
        let r = catch_unwind(AssertUnwindSafe(|| check(s)));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{name}: valid seed {i} rejected: {e}"),
            Err(_) => panic!("{name}: valid seed {i} panicked"),
        }
    }
    let mut failure = None;
    for it in 0..iterations {
        let k = rng.random_range(0..seeds.len());
        let mut data = seeds[k].clone();
        for _ in 0..rng.random_range(1..=4) {
            mutate(&mut data, &mut rng);
        }
        match catch_unwind(AssertUnwindSafe(|| check(&data))) {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => {}
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let hex: String = data.iter().take(64).map(|b| format!("{b:02x}")).collect();
                failure = Some(format!(
                    "{name}: panic on iteration {it} (fuzz seed {seed}, from seed input {k}, {} bytes, starts {hex}): {msg}",
                    data.len()
                ));
                break;
            }
        }
    }
    if let Some(f) = failure {
        panic!("{f}");
    }
    ok
}
