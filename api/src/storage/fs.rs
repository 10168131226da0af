//! Local-directory storage: each object is a file under `root`, named by its key.
//!
//! Uploads are written to a temporary file in `root/.tmp` (same filesystem, so the final
//! rename is atomic), fsynced, renamed over the key, and the directory is fsynced, so a
//! crash leaves either the old object, the new one, or a stray temporary file — never a
//! partial object under its key.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use super::file_chunks::FileChunks;
use super::{ByteRange, Object, PartUpload, Storage, StoredPart, Upload};

/// Directory holding in-progress uploads, relative to the root. Keys may not start with it.
const TMP_DIR: &str = ".tmp";
/// Directory of assemblies' parts, inside [`TMP_DIR`]: `parts/<assembly>/<number>`.
const PARTS_DIR: &str = "parts";
/// Buffer size for buffering writes.
const IO_BUFFER: usize = 64 * 1024;
/// Read size when streaming an object out: large reads mean few syscalls and few body
/// chunks per NAR (measured in the commit that set it).
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
    tmp: PathBuf,
}

impl FsStorage {
    /// Opens (creating if needed) a storage directory and its temporary-upload directory.
    pub async fn new(root: PathBuf) -> anyhow::Result<Self> {
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).await.with_context(|| format!("creating storage directory {}", tmp.display()))?;
        Ok(Self { root, tmp })
    }

    /// Maps a key to its path under the root, refusing anything that could escape the root
    /// or land in the temporary directory.
    fn path_for(&self, key: &str) -> anyhow::Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn temp_path(&self) -> PathBuf {
        self.tmp.join(format!("{}.part", uuid::Uuid::new_v4()))
    }

    /// The directory of an assembly's parts; its id is ours (hex), checked all the same.
    fn assembly_dir(&self, assembly: &str) -> anyhow::Result<PathBuf> {
        if assembly.is_empty() || !assembly.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("invalid assembly id {assembly:?}");
        }
        Ok(self.tmp.join(PARTS_DIR).join(assembly))
    }

    /// An upload into `target`, through a temporary file renamed over it on commit.
    async fn upload_to(&self, key: &str, target: PathBuf) -> anyhow::Result<FsUpload> {
        let temp = self.temp_path();
        let file = File::create(&temp).await.with_context(|| format!("creating temporary file for {key}"))?;
        Ok(FsUpload {
            key: key.to_owned(),
            root: self.root.clone(),
            target,
            temp,
            file: Some(BufWriter::with_capacity(IO_BUFFER, file)),
            written: 0,
            failed: false,
        })
    }
}

/// Keys are relative, `/`-separated paths of plain segments (`nar/abc.nar.zst`).
fn validate_key(key: &str) -> anyhow::Result<()> {
    if key.is_empty() {
        bail!("invalid storage key: empty");
    }
    if key.starts_with('/') {
        bail!("invalid storage key {key:?}: absolute path");
    }
    if key.contains('\\') || key.contains('\0') {
        bail!("invalid storage key {key:?}: backslash or NUL byte");
    }
    for segment in key.split('/') {
        match segment {
            "" => bail!("invalid storage key {key:?}: empty path segment"),
            "." | ".." => bail!("invalid storage key {key:?}: relative path segment"),
            _ => {}
        }
    }
    if key.split('/').next() == Some(TMP_DIR) {
        bail!("invalid storage key {key:?}: reserved directory");
    }
    Ok(())
}

/// fsyncs a directory, so that entries created or renamed in it are durable.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).await?.sync_all().await
}

#[async_trait]
impl Storage for FsStorage {
    async fn begin_upload(&self, key: &str) -> anyhow::Result<Box<dyn Upload>> {
        let target = self.path_for(key)?;
        Ok(Box::new(self.upload_to(key, target).await?))
    }

    async fn begin_parts(&self, key: &str) -> anyhow::Result<String> {
        self.path_for(key)?;
        let assembly = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.assembly_dir(&assembly)?;
        fs::create_dir_all(&dir).await.with_context(|| format!("creating the parts directory of {key}"))?;
        Ok(assembly)
    }

    async fn begin_part(&self, key: &str, assembly: &str, number: u32) -> anyhow::Result<Box<dyn PartUpload>> {
        let dir = self.assembly_dir(assembly)?;
        if !fs::try_exists(&dir).await? {
            bail!("no assembly {assembly} for {key}");
        }
        Ok(Box::new(self.upload_to(&format!("{key} part {number}"), dir.join(number.to_string())).await?))
    }

    async fn complete_parts(&self, key: &str, assembly: &str, parts: &[StoredPart]) -> anyhow::Result<()> {
        let dir = self.assembly_dir(assembly)?;
        let target = self.path_for(key)?;
        if let [only] = parts {
            // One part is the whole object already (complete and fsynced): moved into place
            // in one rename, not copied.
            move_into_place(&self.root, &dir.join(only.number.to_string()), &target, key).await?;
        } else {
            let mut upload = self.upload_to(key, target).await?;
            for part in parts {
                let path = dir.join(part.number.to_string());
                let mut file = File::open(&path).await.with_context(|| format!("opening part {} of {key}", part.number))?;
                let mut buffer = vec![0; READ_CHUNK];
                loop {
                    let read = file.read(&mut buffer).await.with_context(|| format!("reading part {} of {key}", part.number))?;
                    if read == 0 {
                        break;
                    }
                    Upload::write(&mut upload, Bytes::copy_from_slice(&buffer[..read])).await?;
                }
            }
            Upload::commit(Box::new(upload)).await?;
        }
        self.abort_parts(key, assembly).await
    }

    async fn abort_parts(&self, key: &str, assembly: &str) -> anyhow::Result<()> {
        let dir = self.assembly_dir(assembly)?;
        match fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing the parts of {key}")),
        }
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> anyhow::Result<Option<Object>> {
        let path = self.path_for(key)?;
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("opening object {key}")),
            };
            let meta = file.metadata().with_context(|| format!("reading metadata of object {key}"))?;
            if !meta.is_file() {
                return Ok(None);
            }
            let total_size = meta.len();
            let (start, len) = match range {
                None => (0, total_size),
                Some(range) => {
                    if range.start > range.end || range.end >= total_size {
                        bail!("range {}-{} outside object {key} of {total_size} bytes", range.start, range.end);
                    }
                    (range.start, range.len())
                }
            };
            if start > 0 {
                io::Seek::seek(&mut file, io::SeekFrom::Start(start)).with_context(|| format!("seeking in object {key}"))?;
            }
            let chunks = FileChunks::read_first(file, len, READ_CHUNK).with_context(|| format!("reading object {key}"))?;
            let stream: super::ByteStream = Box::pin(chunks);
            Ok(Some(Object { stream, total_size }))
        })
        .await?
    }

    async fn size(&self, key: &str) -> anyhow::Result<Option<u64>> {
        let path = self.path_for(key)?;
        match fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading size of object {key}")),
        }
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let path = self.path_for(key)?;
        match fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting object {key}")),
        }
    }

    async fn health_check(&self) -> anyhow::Result<()> {
        let probe = self.tmp.join(format!("health-{}", uuid::Uuid::new_v4()));
        let result = async {
            let mut file = File::create(&probe).await?;
            file.write_all(b"larder").await?;
            file.sync_all().await?;
            io::Result::Ok(())
        }
        .await;
        let removed = fs::remove_file(&probe).await;
        result.with_context(|| format!("writing probe file in {}", self.tmp.display()))?;
        removed.with_context(|| format!("removing probe file in {}", self.tmp.display()))?;
        Ok(())
    }

    async fn remove_stale_uploads(&self, older_than: Duration, assemblies_older_than: Duration) -> anyhow::Result<usize> {
        let mut removed = self.remove_stale_assemblies(assemblies_older_than).await?;
        let mut entries = fs::read_dir(&self.tmp).await.with_context(|| format!("listing {}", self.tmp.display()))?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "part") {
                continue;
            }
            let Ok(modified) = entry.metadata().await.and_then(|m| m.modified()) else { continue };
            if modified.elapsed().is_ok_and(|age| age > older_than) {
                match fs::remove_file(&path).await {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
                }
            }
        }
        Ok(removed)
    }
}

impl FsStorage {
    /// Assemblies whose directory has not changed for `older_than` (no part arrived):
    /// their session expired, or its record was lost in a crash.
    async fn remove_stale_assemblies(&self, older_than: Duration) -> anyhow::Result<usize> {
        let parts = self.tmp.join(PARTS_DIR);
        let mut entries = match fs::read_dir(&parts).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("listing {}", parts.display())),
        };
        let mut removed = 0;
        while let Some(entry) = entries.next_entry().await? {
            let Ok(modified) = entry.metadata().await.and_then(|m| m.modified()) else { continue };
            if modified.elapsed().is_ok_and(|age| age > older_than) {
                match fs::remove_dir_all(entry.path()).await {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("removing {}", entry.path().display())),
                }
            }
        }
        Ok(removed)
    }
}

struct FsUpload {
    key: String,
    root: PathBuf,
    target: PathBuf,
    temp: PathBuf,
    /// `None` once committed or aborted: nothing left to clean up.
    file: Option<BufWriter<File>>,
    written: u64,
    /// A write failed: the temporary file may be incomplete and must not be committed.
    failed: bool,
}

impl FsUpload {
    async fn finish(&mut self) -> anyhow::Result<u64> {
        let key = &self.key;
        let mut file = self.file.take().context("upload already finished")?;
        file.flush().await.with_context(|| format!("flushing upload of {key}"))?;
        file.get_ref().sync_all().await.with_context(|| format!("fsyncing upload of {key}"))?;
        drop(file);
        move_into_place(&self.root, &self.temp, &self.target, key).await?;
        Ok(self.written)
    }
}

/// Renames a complete, fsynced file to `target` under `root`, creating its directory, and
/// makes the rename (and any new directory) durable.
async fn move_into_place(root: &Path, from: &Path, target: &Path, key: &str) -> anyhow::Result<()> {
    let parent = target.parent().unwrap_or(root).to_path_buf();
    let created_parent = match fs::metadata(&parent).await {
        Ok(meta) if meta.is_dir() => false,
        _ => {
            fs::create_dir_all(&parent).await.with_context(|| format!("creating directory for {key}"))?;
            true
        }
    };
    fs::rename(from, target).await.with_context(|| format!("moving upload of {key} into place"))?;
    sync_dir(&parent).await.with_context(|| format!("fsyncing directory of {key}"))?;
    if created_parent {
        // New directories must themselves be durable in their parents, up to the root.
        let mut dir = parent.parent();
        while let Some(d) = dir {
            sync_dir(d).await.with_context(|| format!("fsyncing directory {}", d.display()))?;
            if d == root {
                break;
            }
            dir = d.parent();
        }
    }
    Ok(())
}

#[async_trait]
impl Upload for FsUpload {
    async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        if self.failed {
            bail!("upload of {}: an earlier write failed", self.key);
        }
        let file = self.file.as_mut().context("upload already finished")?;
        if let Err(e) = file.write_all(&chunk).await {
            // Part of the chunk may have been written: the file can only be discarded now.
            self.failed = true;
            return Err(e).with_context(|| format!("writing upload of {}", self.key));
        }
        self.written += chunk.len() as u64;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> anyhow::Result<u64> {
        if self.failed {
            bail!("upload of {}: not committed, an earlier write failed", self.key);
        }
        // On failure, `Drop` removes the temporary file (if it was not renamed).
        self.finish().await
    }

    async fn abort(mut self: Box<Self>) -> anyhow::Result<()> {
        if let Some(file) = self.file.take() {
            drop(file);
            match fs::remove_file(&self.temp).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing aborted upload of {}", self.key)),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl PartUpload for FsUpload {
    async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        Upload::write(self, chunk).await
    }

    async fn commit(self: Box<Self>) -> anyhow::Result<String> {
        Upload::commit(self).await?;
        Ok(String::new())
    }

    async fn abort(self: Box<Self>) -> anyhow::Result<()> {
        Upload::abort(self).await
    }
}

impl Drop for FsUpload {
    fn drop(&mut self) {
        // Not committed or aborted, or commit failed before/at the rename: clean up, best
        // effort. After a successful rename the temporary path no longer exists.
        if self.file.is_some() || self.temp.exists() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::validate_key;

    #[test]
    fn accepts_plain_relative_keys() {
        for key in ["nar/abc.nar.zst", "ls/abc.ls", "log/3/xyz.drv", "nix-cache-info", "a/.b"] {
            assert!(validate_key(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn rejects_escaping_or_odd_keys() {
        for key in ["", "/etc/passwd", "../x", "a/../../x", "a/..", "./a", "a//b", "a/", "a\\b", "a\0b", ".tmp/x", ".tmp"] {
            assert!(validate_key(key).is_err(), "{key:?}");
        }
    }
}
