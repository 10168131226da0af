//! NAR and auxiliary object storage: a narrow streaming trait with two backends, a local
//! directory (the embedded default) and S3 (any S3-compatible engine).
//!
//! Objects are written through an [`Upload`]: nothing is visible under the key until
//! `commit`, so a half-received or rejected upload never becomes an object.

mod file_chunks;
mod fs;
mod s3;

use std::io;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub use fs::FsStorage;
pub use s3::{S3Settings, S3Storage};

pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// An inclusive byte range `[start, end]` within an object, already clamped to its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    // An inclusive range always holds at least one byte, so there is no `is_empty`.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// An object being read: the requested bytes as a stream, and the object's full size.
pub struct Object {
    pub stream: ByteStream,
    /// Size of the whole object (not of the requested range).
    pub total_size: u64,
}

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Starts writing `key`. The object appears only when the upload is committed.
    async fn begin_upload(&self, key: &str) -> anyhow::Result<Box<dyn Upload>>;

    /// Streams an object, or a range of it. `None` if the object does not exist.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> anyhow::Result<Option<Object>>;

    /// The object's size, or `None` if it does not exist.
    async fn size(&self, key: &str) -> anyhow::Result<Option<u64>>;

    /// Deletes an object. Deleting a missing object succeeds (deletes are retried from queues).
    async fn delete(&self, key: &str) -> anyhow::Result<()>;

    /// Checks that the backend is reachable and writable enough to serve (used by /readyz).
    async fn health_check(&self) -> anyhow::Result<()>;

    /// Removes what uploads interrupted by a crash left behind (temporary files, unfinished
    /// multipart uploads) untouched for longer than `older_than`, and assemblies (whose
    /// sessions live longer) untouched for longer than `assemblies_older_than`; returns how many.
    async fn remove_stale_uploads(&self, older_than: Duration, assemblies_older_than: Duration) -> anyhow::Result<usize>;

    /// A URL the client may fetch the object from directly (for a while), if this storage
    /// is set to hand those out; `None` streams it through the server.
    async fn download_url(&self, _key: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }

    /// Starts an object assembled from numbered parts that arrive separately, in any order
    /// (an upload session's NAR); returns the storage's id of it. Nothing appears under
    /// `key` until [`Storage::complete_parts`].
    async fn begin_parts(&self, key: &str) -> anyhow::Result<String>;

    /// Starts writing part `number` (1-based) of an assembly; committing it replaces an
    /// earlier copy of that part, aborting it (or a failed write) leaves the earlier copy.
    async fn begin_part(&self, key: &str, assembly: &str, number: u32) -> anyhow::Result<Box<dyn PartUpload>>;

    /// Makes the object under `key` the concatenation of `parts`, in the order given, and
    /// lets go of the parts.
    async fn complete_parts(&self, key: &str, assembly: &str, parts: &[StoredPart]) -> anyhow::Result<()>;

    /// Discards an assembly and its parts; discarding one already gone succeeds.
    async fn abort_parts(&self, key: &str, assembly: &str) -> anyhow::Result<()>;

    /// Stores a small object in one go (listings, build logs).
    async fn put_bytes(&self, key: &str, bytes: Bytes) -> anyhow::Result<()> {
        let mut upload = self.begin_upload(key).await?;
        upload.write(bytes).await?;
        upload.commit().await?;
        Ok(())
    }
}

#[async_trait]
pub trait Upload: Send {
    async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()>;
    /// Makes the object visible under its key (atomically replacing any previous one);
    /// returns the number of bytes stored.
    async fn commit(self: Box<Self>) -> anyhow::Result<u64>;
    /// Discards what was written. Also what happens, best effort, when an upload is dropped.
    async fn abort(self: Box<Self>) -> anyhow::Result<()>;
}

/// A part of an assembly, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPart {
    pub number: u32,
    /// What the storage needs to assemble it (S3's ETag; empty for the filesystem).
    pub tag: String,
}

#[async_trait]
pub trait PartUpload: Send {
    async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()>;
    /// Keeps the part (replacing an earlier copy); returns its tag for [`StoredPart`].
    async fn commit(self: Box<Self>) -> anyhow::Result<String>;
    /// Discards what was written. Also what happens, best effort, when it is dropped.
    async fn abort(self: Box<Self>) -> anyhow::Result<()>;
}
