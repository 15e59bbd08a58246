//! Fuzzing the webdataset tar reader: mutated shards (headers, sizes, checksums, truncation)
//! must stream what they can and end in Ok or a `DataError` naming the shard, never a panic
//! or an allocation sized by a corrupt header.

use crate::fuzz;

use datasets::formats::{for_each_shard_sample, write_shard, ShardMembers};

fn shard_bytes(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("seed.tar");
    let samples: Vec<ShardMembers> = (0..3)
        .map(|i| {
            (
                format!("{i:09}"),
                vec![
                    ("jpg".to_string(), vec![0xff, 0xd8, 0xff, i as u8, 1, 2, 3]),
                    ("txt".to_string(), format!("caption {i}").into_bytes()),
                    (
                        "json".to_string(),
                        format!("{{\"caption\": \"json caption {i}\"}}").into_bytes(),
                    ),
                ],
            )
        })
        .collect();
    write_shard(&path, &samples).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn mutated_shards_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = shard_bytes(tmp.path());
    let path = tmp.path().join("shard-00000.tar");
    let check = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        let mut n = 0;
        match for_each_shard_sample(&path, |_| n += 1) {
            Ok(()) => Ok(()),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("shard-00000.tar"), "error does not name the shard: {msg}");
                Err(msg)
            }
        }
    };
    let accepted = fuzz::fuzz("tar shard", 21, &[seed], 1500, check);
    assert!(accepted > 0, "every mutant refused: the seed path is not exercised");
}

#[test]
fn shard_cut_mid_member_delivers_earlier_samples_then_names_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let full = shard_bytes(tmp.path());
    let path = tmp.path().join("cut.tar");
    // Each member is a 512-byte header plus one 512-byte data block: cut inside the data of
    // the second sample's first member (member 4 of 9).
    std::fs::write(&path, &full[..3 * 1024 + 512 + 100]).unwrap();
    let mut keys = Vec::new();
    let err = for_each_shard_sample(&path, |s| keys.push(s.key)).unwrap_err().to_string();
    assert_eq!(keys, vec!["000000000"], "the complete first sample is delivered");
    assert!(err.contains("cut.tar") && err.contains("tar shard"), "{err}");
}
