//! img2dataset webdataset shards (`NNNNN.tar` of `key.jpg` + `key.txt` + `key.json`), streamed
//! member by member without unpacking (as img2dataset `--output_format webdataset` writes them).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

const IMAGE_EXTS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "jpe"];

/// One grouped sample of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSample {
    pub key: String,
    /// Encoded image bytes and their extension (lower-cased).
    pub image: Option<(String, Vec<u8>)>,
    /// From `.json["caption"]` like LAVIS `LaionDataset`, else the `.txt` member.
    pub caption: Option<String>,
}

/// webdataset's grouping key: the member path up to the first dot of its file name.
fn split_key(name: &str) -> Option<(&str, String)> {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[slash..].find('.')? + slash;
    Some((&name[..dot], name[dot + 1..].to_ascii_lowercase()))
}

#[derive(Default)]
struct Pending {
    key: String,
    members: BTreeMap<String, Vec<u8>>,
}

impl Pending {
    fn finish(self) -> ShardSample {
        let mut members = self.members;
        let image =
            IMAGE_EXTS.iter().find_map(|ext| members.remove(*ext).map(|b| (ext.to_string(), b)));
        let caption = caption_of(members.get("json"), members.get("txt"));
        ShardSample { key: self.key, image, caption }
    }
}

/// The caption of a sample: its `.json`'s `caption` as LAVIS's `LaionDataset` reads it, else its
/// `.txt`.
fn caption_of(json: Option<&Vec<u8>>, txt: Option<&Vec<u8>>) -> Option<String> {
    json.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v.get("caption").and_then(|c| c.as_str().map(str::to_string)))
        .or_else(|| txt.map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// A sample of [`index_shard`] while its members are read.
struct PendingIndex {
    sample: IndexedSample,
    json: Option<Vec<u8>>,
    txt: Option<Vec<u8>>,
}

impl PendingIndex {
    fn finish(self) -> IndexedSample {
        let caption = caption_of(self.json.as_ref(), self.txt.as_ref());
        IndexedSample { caption, ..self.sample }
    }
}

/// Stream the samples of one tar shard in member order, calling `f` for each grouped sample.
/// A truncated shard ends the stream with an error after the samples read so far were delivered.
pub fn for_each_shard_sample(path: &Path, mut f: impl FnMut(ShardSample)) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let tar_err = |message: String| DataError::Tar { path: path.to_path_buf(), message };
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut pending: Option<Pending> = None;
    for entry in archive.entries().map_err(|e| tar_err(e.to_string()))? {
        let mut entry = entry.map_err(|e| tar_err(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(|e| tar_err(e.to_string()))?.to_string_lossy().into_owned();
        let Some((key, ext)) = split_key(&name) else {
            continue;
        };
        // A new key completes the previous sample: deliver it before reading on, so a shard cut
        // inside this member still yields it.
        if pending.as_ref().is_some_and(|p| p.key != key) {
            if let Some(p) = pending.take() {
                f(p.finish());
            }
        }
        // The header's size may be corrupt: never reserve more than the reader will confirm.
        let mut bytes = Vec::with_capacity(entry.size().min(1 << 20) as usize);
        entry.read_to_end(&mut bytes).map_err(|e| tar_err(format!("member {name}: {e}")))?;
        pending
            .get_or_insert_with(|| Pending { key: key.to_string(), ..Default::default() })
            .members
            .insert(ext, bytes);
    }
    if let Some(p) = pending {
        f(p.finish());
    }
    Ok(())
}

/// One sample of a shard as an index entry: where its image lies, and its caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedSample {
    pub key: String,
    /// Byte offset and length of the image member inside the shard.
    pub image: Option<(u64, u64)>,
    pub caption: Option<String>,
}

/// The samples of one shard, read by seeking past the image bodies (only captions are read):
/// an index for reading images in place later. A shard cut short keeps the samples before the
/// cut and reports the cut as the error beside them.
pub fn index_shard(path: &Path) -> Result<(Vec<IndexedSample>, Option<DataError>)> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let tar_err = |message: String| DataError::Tar { path: path.to_path_buf(), message };
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut archive = tar::Archive::new(file);
    let mut out: Vec<IndexedSample> = Vec::new();
    let mut current: Option<PendingIndex> = None;
    let entries = archive.entries_with_seek().map_err(|e| tar_err(e.to_string()))?;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.extend(current.map(PendingIndex::finish));
                return Ok((out, Some(tar_err(e.to_string()))));
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(|e| tar_err(e.to_string()))?.to_string_lossy().into_owned();
        let Some((key, ext)) = split_key(&name) else {
            continue;
        };
        if current.as_ref().is_some_and(|c| c.sample.key != key) {
            out.extend(current.take().map(PendingIndex::finish));
        }
        let pending = current.get_or_insert_with(|| PendingIndex {
            sample: IndexedSample { key: key.to_string(), image: None, caption: None },
            json: None,
            txt: None,
        });
        let (offset, size) = (entry.raw_file_position(), entry.size());
        if offset + size > len {
            // The sample being read is lost with its member; the ones before it are kept.
            let cut = tar_err(format!("member {name} is cut short by the end of the file"));
            return Ok((out, Some(cut)));
        }
        if IMAGE_EXTS.contains(&ext.as_str()) {
            pending.sample.image.get_or_insert((offset, size));
        } else if ext == "json" || ext == "txt" {
            let mut bytes = Vec::with_capacity(size.min(1 << 16) as usize);
            entry.read_to_end(&mut bytes).map_err(|e| tar_err(format!("member {name}: {e}")))?;
            *if ext == "json" { &mut pending.json } else { &mut pending.txt } = Some(bytes);
        }
    }
    out.extend(current.map(PendingIndex::finish));
    Ok((out, None))
}

/// One sample of a shard to write: its key and its `(extension, bytes)` members.
pub type ShardMembers = (String, Vec<(String, Vec<u8>)>);

/// Write a webdataset shard (used by the synthetic world and tests): members in key order.
pub fn write_shard(path: &Path, samples: &[ShardMembers]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    for (key, members) in samples {
        for (ext, bytes) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("{key}.{ext}"), bytes.as_slice())
                .map_err(|e| DataError::io(path, e))?;
        }
    }
    builder
        .into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_up_to_the_first_dot_of_the_basename() {
        assert_eq!(split_key("000010005.jpg"), Some(("000010005", "jpg".into())));
        assert_eq!(split_key("a/b.c/x.seg.JSON"), Some(("a/b.c/x", "seg.json".into())));
        assert_eq!(split_key("noext"), None);
    }
}
