//! Claiming a run directory before anything in it is written: an exclusive advisory lock held
//! for the run's life (a second process on the same directory is refused, naming the holder's
//! pid), and the fresh-or-resume question answered first, so that a refused fresh run leaves
//! the existing run exactly as it was.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::checkpoint_name;
use crate::{Error, Result};

/// The lock file inside a run directory.
pub const LOCK_FILE: &str = "run.lock";

/// Held while a run owns its directory; dropping it (or the process ending, however it ends)
/// releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Creates `root` if needed and locks it. `resume`: the run continues the directory's
    /// checkpoints; otherwise a directory that already holds checkpoints is refused.
    pub fn claim(root: &Path, resume: bool) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { "another process" } else { holder };
                return Err(Error::Msg(format!(
                    "{} is in use by {who}: one run at a time in a run directory",
                    root.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        if !resume {
            if let Some(existing) = newest_checkpoint(root)? {
                return Err(Error::Msg(format!(
                    "{} already has checkpoints ({}): resume it or use another run directory",
                    root.display(),
                    existing.display()
                )));
            }
        }
        // Who holds it, for the error a second process gets.
        let pid = format!("pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A finished checkpoint of the run in `root`, if there is one (partial `*.tmp` saves do not
/// count: the checkpointer removes them).
fn newest_checkpoint(root: &Path) -> Result<Option<PathBuf>> {
    let dir = root.join("checkpoints");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(None) };
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(step) = name.strip_prefix("step-").and_then(|d| d.parse::<u64>().ok()) else {
            continue;
        };
        if path.is_dir()
            && name == checkpoint_name(step)
            && newest.as_ref().is_none_or(|(s, _)| step > *s)
        {
            newest = Some((step, path));
        }
    }
    Ok(newest.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_while_the_first_holds_and_granted_after() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::claim(dir.path(), false).unwrap();
        let e = RunLock::claim(dir.path(), true).unwrap_err().to_string();
        assert!(e.contains("in use by pid") && e.contains("one run at a time"), "{e}");
        drop(first);
        RunLock::claim(dir.path(), true).unwrap();
    }

    #[test]
    fn a_fresh_claim_on_a_run_with_checkpoints_is_refused_and_a_resume_granted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("checkpoints/step-000004.tmp")).unwrap();
        // A partial save is not a checkpoint.
        RunLock::claim(dir.path(), false).unwrap();
        std::fs::create_dir_all(dir.path().join("checkpoints/step-000003")).unwrap();
        let e = RunLock::claim(dir.path(), false).unwrap_err().to_string();
        assert!(e.contains("already has checkpoints") && e.contains("step-000003"), "{e}");
        RunLock::claim(dir.path(), true).unwrap();
    }
}
