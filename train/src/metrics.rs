//! `metrics.jsonl`: one JSON object per logged step, appended and flushed as it is written so
//! a crash loses at most the line being written.
//!
//! JSON has no NaN: non-finite numbers are written as the strings `"NaN"`, `"inf"`, `"-inf"`
//! (serde_json would silently write `null`), and read back as such.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    pub step: u64,
    pub epoch: u64,
    #[serde(with = "float")]
    pub lr: f64,
    /// Each loss by name (`itc`, `itm`, `lm`, `total`, …), mean over the step's micro-batches.
    #[serde(with = "float_map")]
    pub losses: BTreeMap<String, f64>,
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub samples_per_sec: Option<f64>,
    /// Seconds the step waited for its batch (0 when the loader keeps up with the model).
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub input_wait_s: Option<f64>,
    /// Steps skipped so far for a non-finite loss or gradient.
    #[serde(default)]
    pub skipped_steps: u64,
    /// Samples dropped so far by the data pipeline (unreadable image, empty caption).
    #[serde(default)]
    pub skipped_samples: u64,
    /// Anything else (validation metrics, `spike: true`, memory, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl MetricsRecord {
    pub fn new(step: u64, epoch: u64, lr: f64) -> Self {
        Self {
            step,
            epoch,
            lr,
            losses: BTreeMap::new(),
            grad_norm: None,
            samples_per_sec: None,
            input_wait_s: None,
            skipped_steps: 0,
            skipped_samples: 0,
            extra: BTreeMap::new(),
        }
    }
}

/// An open `metrics.jsonl`, appending.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// On resume: drops records after `step` (logged after the checkpoint being resumed), so
    /// the curves do not show those steps twice; then opens for appending.
    pub fn open_resumed(path: &Path, step: u64) -> Result<Self> {
        if path.exists() {
            let kept: Vec<MetricsRecord> =
                read_metrics(path)?.into_iter().filter(|r| r.step < step).collect();
            let tmp = path.with_extension("jsonl.tmp");
            let mut out = String::new();
            for r in &kept {
                out.push_str(&to_line(r, path)?);
            }
            std::fs::write(&tmp, out).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        }
        Self::open(path)
    }

    pub fn append(&mut self, record: &MetricsRecord) -> Result<()> {
        let line = to_line(record, &self.path)?;
        self.file.write_all(line.as_bytes()).map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

fn to_line(record: &MetricsRecord, path: &Path) -> Result<String> {
    let mut line = serde_json::to_string(record).map_err(|e| Error::json(path, e))?;
    line.push('\n');
    Ok(line)
}

/// Reads every record. An unterminated last line (a crash mid-write) is dropped; any other bad
/// line is an error naming its number.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !complete => break,
            Err(e) => {
                return Err(Error::Msg(format!(
                    "{}:{}: bad metrics record: {e}",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(out)
}

fn encode(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::Value::from(v)
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

fn decode<E: serde::de::Error>(v: serde_json::Value) -> std::result::Result<f64, E> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| E::custom("number out of range")),
        serde_json::Value::Null => Ok(f64::NAN),
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            other => Err(E::custom(format!("expected a number, got \"{other}\""))),
        },
        other => Err(E::custom(format!("expected a number, got {other}"))),
    }
}

mod float {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        super::encode(*v).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        super::decode(serde_json::Value::deserialize(d)?)
    }
}

mod opt_float {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(super::encode).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<serde_json::Value>::deserialize(d)? {
            None => Ok(None),
            Some(v) => super::decode(v).map(Some),
        }
    }
}

mod float_map {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;
    pub fn serialize<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        m.iter().map(|(k, v)| (k, super::encode(*v))).collect::<BTreeMap<_, _>>().serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        BTreeMap::<String, serde_json::Value>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| super::decode(v).map(|f| (k, f)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64, itc: f64) -> MetricsRecord {
        let mut r = MetricsRecord::new(step, 0, 1e-4);
        r.losses.insert("itc".into(), itc);
        r.losses.insert("total".into(), itc * 2.0);
        r.grad_norm = Some(0.5);
        r.samples_per_sec = Some(12.5);
        r.extra.insert("spike".into(), true.into());
        r
    }

    #[test]
    fn append_flush_and_read_back_including_non_finite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path).unwrap();
        let mut nan = record(2, f64::NAN);
        nan.grad_norm = Some(f64::INFINITY);
        nan.skipped_steps = 1;
        let records = vec![record(1, 1.5), nan];
        for r in &records {
            log.append(r).unwrap();
        }
        // Flushed per record: visible before the log is dropped.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains(r#""itc":"NaN""#) && text.contains(r#""grad_norm":"inf""#), "{text}");
        assert!(text.lines().next().unwrap().contains(r#""spike":true"#));
        let back = read_metrics(&path).unwrap();
        assert_eq!(back[0], records[0]);
        assert!(back[1].losses["itc"].is_nan() && back[1].grad_norm == Some(f64::INFINITY));
        assert_eq!(back[1].skipped_steps, 1);
    }

    #[test]
    fn truncated_last_line_is_dropped_but_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path).unwrap();
        log.append(&record(1, 1.0)).unwrap();
        drop(log);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(r#"{"step":2,"epo"#);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_metrics(&path).unwrap().len(), 1);
        std::fs::write(&path, format!("garbage\n{text}\n")).unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl:1: bad metrics record"), "{err}");
    }

    #[test]
    fn resume_drops_records_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path).unwrap();
        for s in 0..6 {
            log.append(&record(s, 1.0)).unwrap();
        }
        drop(log);
        let mut log = MetricsLog::open_resumed(&path, 4).unwrap();
        log.append(&record(4, 2.0)).unwrap();
        let steps: Vec<u64> = read_metrics(&path).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![0, 1, 2, 3, 4]);
    }
}
