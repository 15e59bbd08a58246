//! Writing a file or a directory so that readers see the old one or the whole new one, never a
//! half-written one: everything goes into a sibling `NAME.tmp`, is fsynced, and is renamed into
//! place. A crash leaves at most a stale `NAME.tmp` (removed by the next write) or, while an
//! existing directory is being replaced, the old one under `NAME.old`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// `NAME` + `suffix` beside `path`.
fn sibling(path: &Path, suffix: &str) -> Result<PathBuf> {
    let Some(name) = path.file_name() else {
        bail!("{} names no file or directory", path.display());
    };
    let mut name = OsString::from(name);
    name.push(suffix);
    Ok(path.with_file_name(name))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes `path` (a file, or a directory's entries) to disk.
fn fsync(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {} to disk", path.display()))
}

fn remove_any(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    let removed = if meta.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    removed.with_context(|| format!("cannot remove {}", path.display()))
}

/// Fills a fresh `DIR.tmp` with `fill`, syncs every file in it, and moves it to `dir`
/// (replacing an existing `dir`: the old one is renamed away first and removed last).
pub fn replace_dir(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = sibling(dir, ".tmp")?;
    let old = sibling(dir, ".old")?;
    let parent = parent(dir);
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    remove_any(&tmp)?;
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let filled = fill(&tmp).and_then(|()| sync_tree(&tmp));
    if let Err(e) = filled {
        // Best effort: the error that matters is the one from `fill`.
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let replacing = dir.exists();
    if replacing {
        remove_any(&old)?;
        fs::rename(dir, &old)
            .with_context(|| format!("cannot move {} aside to {}", dir.display(), old.display()))?;
    }
    if let Err(e) = fs::rename(&tmp, dir) {
        if replacing {
            let _ = fs::rename(&old, dir);
        }
        return Err(e)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()));
    }
    fsync(parent)?;
    if replacing {
        remove_any(&old)?;
    }
    Ok(())
}

/// Syncs every file below `dir`, then the directories themselves (their entries).
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            fsync(&path)?;
        }
    }
    fsync(dir)
}

/// Writes `path` through `fill(PATH.tmp)`, syncs it and renames it over `path`.
pub fn replace_file(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a directory", path.display());
    }
    let tmp = sibling(path, ".tmp")?;
    let parent = parent(path);
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    remove_any(&tmp)?;
    let filled = fill(&tmp).and_then(|()| fsync(&tmp));
    if let Err(e) = filled {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    fsync(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_replaced_whole_and_a_failed_fill_leaves_the_old_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        replace_dir(&dir, |tmp| Ok(fs::write(tmp.join("a"), "1")?)).unwrap();
        replace_dir(&dir, |tmp| Ok(fs::write(tmp.join("b"), "2")?)).unwrap();
        assert!(!dir.join("a").exists(), "the old directory's files are gone");
        assert_eq!(fs::read_to_string(dir.join("b")).unwrap(), "2");

        let err = replace_dir(&dir, |tmp| {
            fs::write(tmp.join("c"), "half")?;
            bail!("disk full")
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(fs::read_to_string(dir.join("b")).unwrap(), "2");
        assert!(!dir.join("c").exists());
        let left: Vec<_> =
            fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![OsString::from("model")], "no .tmp or .old left behind");
    }

    #[test]
    fn a_file_is_replaced_whole_and_a_failed_fill_leaves_the_old_one() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("x.pth");
        replace_file(&path, |tmp| Ok(fs::write(tmp, "one")?)).unwrap();
        let err = replace_file(&path, |tmp| {
            fs::write(tmp, "tw")?;
            bail!("interrupted")
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "interrupted");
        assert_eq!(fs::read_to_string(&path).unwrap(), "one");
        assert!(!root.path().join("x.pth.tmp").exists());
    }
}
