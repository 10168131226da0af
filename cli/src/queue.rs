//! The local push queue of one cache: a directory of small files, one per hook call (or per
//! group of paths `watch-store` saw appear), each a list of store paths, one a line.
//!
//! Files are written to a temporary name, fsynced and renamed into place, so a reader sees
//! a file whole or not at all, and what a finished `post-build-hook` queued survives a
//! crash. A file is removed only after the server accepted every path it names; removing
//! entries is the only thing that loses information, and it comes last.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use larder_protocol::store_path::StorePath;

const SUFFIX: &str = ".paths";
const DRAINER_LOCK: &str = ".drainer.lock";
/// A temporary file this old is left over from a writer that died before its rename.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

pub struct Queue {
    dir: PathBuf,
}

/// One queue file and the store paths it names.
#[derive(Debug)]
pub struct Entry {
    file: PathBuf,
    pub paths: Vec<String>,
}

/// Held while a `watch-store` drains a queue; released when dropped (or the process dies).
pub struct DrainerLock {
    _file: File,
}

/// Where the queue of `cache` lives: `dir` if given (--queue-dir, LARDER_QUEUE_DIR), else
/// `$XDG_STATE_HOME/larder/queue/<cache>`, else `~/.local/state/larder/queue/<cache>`.
pub fn queue_dir(cache: &str, dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    check_cache_name(cache)?;
    if let Some(dir) = dir {
        return Ok(dir);
    }
    let state_home = match std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/state"),
            None => bail!("neither XDG_STATE_HOME nor HOME is set, so there is no default queue directory: pass --queue-dir DIR (or set LARDER_QUEUE_DIR), the same for post-build-hook and watch-store"),
        },
    };
    Ok(state_home.join("larder").join("queue").join(cache))
}

/// The cache name becomes a directory name: nothing that could leave the queue directory.
fn check_cache_name(cache: &str) -> anyhow::Result<()> {
    let fine = !cache.is_empty() && !cache.starts_with('.') && cache.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !fine {
        bail!("'{cache}' is not a cache name (letters, digits, '-', '_' and '.')");
    }
    Ok(())
}

impl Queue {
    pub fn open(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating the push queue {}", dir.display()))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds one file naming `paths`; returns once it is on disk.
    pub fn append(&self, paths: &[String]) -> anyhow::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        // Sorted by name is oldest first; pid and counter keep concurrent writers apart.
        let name = format!("{:020}-{}-{}{SUFFIX}", now.as_nanos(), std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let text: String = paths.iter().map(|p| format!("{p}\n")).collect();
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, self.dir.join(&name))?;
            // The rename itself is durable only once the directory is synced.
            File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("writing to the push queue {}", self.dir.display()))
    }

    /// Every queue file, oldest first. Lines that are not store paths are skipped with a
    /// warning (nothing could push them).
    pub fn entries(&self) -> anyhow::Result<Vec<Entry>> {
        let listing = std::fs::read_dir(&self.dir).with_context(|| format!("reading the push queue {}", self.dir.display()))?;
        let mut entries = Vec::new();
        for item in listing {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                if name.ends_with(".tmp") && is_older_than(&item.path(), STALE_TEMPORARY) {
                    let _ = std::fs::remove_file(item.path());
                }
                continue;
            }
            if !name.ends_with(SUFFIX) {
                continue;
            }
            let text = match std::fs::read_to_string(item.path()) {
                Ok(text) => text,
                // Removed by another drainer since the listing.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error).with_context(|| format!("reading {}", item.path().display())),
            };
            let mut paths = Vec::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                match StorePath::parse(line) {
                    Ok(path) => paths.push(path.to_absolute()),
                    Err(error) => eprintln!("warning: skipping '{line}' in {}: {error}", item.path().display()),
                }
            }
            entries.push(Entry { file: item.path(), paths });
        }
        entries.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(entries)
    }

    /// Removes entries whose paths the server has accepted.
    pub fn remove(&self, entries: &[Entry]) -> anyhow::Result<()> {
        for entry in entries {
            match std::fs::remove_file(&entry.file) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error).with_context(|| format!("removing {} from the push queue", entry.file.display())),
            }
        }
        Ok(())
    }

    /// One drainer per queue: a second `watch-store` for the same cache would push the same
    /// paths twice over.
    pub fn lock_for_draining(&self) -> anyhow::Result<DrainerLock> {
        let path = self.dir.join(DRAINER_LOCK);
        let file =
            File::options().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DrainerLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another `larder watch-store` already drains {}: stop it first, or give this one its own --queue-dir",
                self.dir.display()
            ),
            Err(std::fs::TryLockError::Error(error)) => Err(error).with_context(|| format!("locking {}", path.display())),
        }
    }
}

fn is_older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|elapsed| elapsed > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/7dnbw9k7m0vprqdi1snsnjjqbqcyzwzf-a";
    const B: &str = "/nix/store/2k5b8akbk9s51ljxbms07l0hh21ymq5l-b";

    #[test]
    fn entries_come_back_in_order_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q")).unwrap();
        queue.append(&[A.to_owned()]).unwrap();
        queue.append(&[B.to_owned(), A.to_owned()]).unwrap();
        let entries = queue.entries().unwrap();
        assert_eq!(entries.iter().map(|e| e.paths.clone()).collect::<Vec<_>>(), [vec![A], vec![B, A]]);
        queue.remove(&entries[..1]).unwrap();
        let left = queue.entries().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].paths, [B, A]);
        queue.remove(&entries).unwrap();
        assert!(queue.entries().unwrap().is_empty(), "removing twice is fine");
    }

    #[test]
    fn unfinished_writes_and_garbage_are_not_entries() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().to_owned()).unwrap();
        std::fs::write(dir.path().join(".1-2-3.paths.tmp"), format!("{A}\n")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        std::fs::write(dir.path().join("1-2-3.paths"), format!("{A}\nnot a path\n/etc/passwd\n")).unwrap();
        let entries = queue.entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].paths, [A]);
    }

    #[test]
    fn one_drainer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().to_owned()).unwrap();
        let held = queue.lock_for_draining().unwrap();
        let second = queue.lock_for_draining().err().expect("a second drainer is refused").to_string();
        assert!(second.contains("already drains"), "{second}");
        drop(held);
        queue.lock_for_draining().expect("free again");
    }

    #[test]
    fn cache_names_cannot_leave_the_queue_directory() {
        assert!(queue_dir("../etc", Some(PathBuf::from("/q"))).is_err());
        assert!(queue_dir(".hidden", None).is_err());
        assert!(queue_dir("a/b", None).is_err());
        assert_eq!(queue_dir("team-1", Some(PathBuf::from("/q"))).unwrap(), PathBuf::from("/q"));
    }
}
