//! Pushes with the stock client: NAR uploads (verified while they stream) and narinfo
//! commits (which publish a path only when its NAR and references are in the cache).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::write::{BrotliDecoder, BzDecoder, GzipDecoder, XzDecoder, ZstdDecoder};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use larder_protocol::compression::{self, Compression};
use larder_protocol::hash::{Sha256Hash, Sha256Hasher};
use larder_protocol::nar::{NarParser, NarSummary};
use larder_protocol::narinfo::NarInfo;
use larder_protocol::store_path::StorePath;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::keys::SigningMode;
use super::{ServiceError, ServiceResult, Services};
use crate::db::{CacheRow, NarRow, NewNar, NewPath};
use crate::storage::Upload;

/// Where a NAR's bytes and its listing live, by file hash (content-addressed, shared).
pub(crate) fn nar_storage_key(file_hash: &Sha256Hash, compression: Compression) -> String {
    compression::nar_url(file_hash, compression)
}

fn listing_storage_key(file_hash: &Sha256Hash) -> String {
    format!("ls/{}.ls", file_hash.to_nix32())
}

impl Services {
    /// Receives `nar/<file>` for a cache: streams it into storage while hashing the file
    /// and parsing the decompressed NAR, and keeps it only if the bytes match the file
    /// hash in the URL, form a valid NAR and arrived in full.
    pub async fn receive_nar<S>(
        &self,
        cache: &CacheRow,
        file_name: &str,
        content_length: Option<u64>,
        mut body: S,
    ) -> ServiceResult<()>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let limit = self.limits().max_nar_size;
        if content_length.is_some_and(|len| len > limit) {
            return Err(ServiceError::PayloadTooLarge { limit });
        }
        let (expected_hash, extension) = compression::parse_nar_file_name(file_name)
            .map_err(|e| ServiceError::BadRequest(format!("bad NAR file name '{file_name}': {e}")))?;

        // Bytes already stored (pushed to any cache) need not be stored again, but this
        // cache must still prove it has them, so they are hashed and parsed all the same.
        let already_stored = self.db().nar_by_file_hash(&expected_hash.to_nix32()).await?;
        // Begun at the first chunk, once the bytes have told the compression (and so the key).
        let mut upload: Option<Box<dyn Upload>> = None;
        let store = already_stored.is_none();
        let verified = self.stream_and_verify(&mut body, content_length, expected_hash, extension, store, &mut upload).await;
        let (received, compression, summary) = match verified {
            Ok(verified) => verified,
            Err(error) => {
                // Explicitly, not only on drop: a rejected upload must leave nothing behind.
                if let Some(upload) = upload {
                    if let Err(error) = upload.abort().await {
                        tracing::warn!(%error, "could not discard a rejected upload");
                    }
                }
                return Err(error);
            }
        };
        let file_hash = expected_hash;

        let nar = match already_stored {
            Some(nar) => nar,
            None => {
                let storage_key = nar_storage_key(&file_hash, compression);
                let listing_key = listing_storage_key(&file_hash);
                match summary.listing {
                    Some(listing) => self.storage().put_bytes(&listing_key, Bytes::from(listing)).await?,
                    // The NAR is fine; only its `.ls` (which nix never needs to substitute)
                    // is too large to keep: that key stays empty and `.ls` answers 404.
                    None => tracing::info!(
                        cache = %cache.name,
                        file_hash = %file_hash.to_nix32(),
                        limit = self.limits().max_listing_size,
                        "NAR listing larger than max_listing_size: not kept"
                    ),
                }
                let upload = upload.ok_or_else(|| ServiceError::BadRequest("empty body: not a NAR".into()))?;
                upload.commit().await?;
                NarRow {
                    id: 0,
                    file_hash: file_hash.to_nix32(),
                    file_size: received as i64,
                    compression: compression.name().to_owned(),
                    nar_hash: summary.nar_hash.to_nix32(),
                    nar_size: summary.nar_size as i64,
                    storage_key,
                    listing_key,
                    created_at: 0,
                }
            }
        };
        if nar.nar_hash != summary.nar_hash.to_nix32() {
            // Same file hash, different content: impossible short of a sha256 collision.
            return Err(anyhow::anyhow!("stored NAR {} disagrees with its upload", nar.file_hash).into());
        }
        self.db()
            .record_nar_upload(
                cache.id,
                NewNar {
                    file_hash: &nar.file_hash,
                    file_size: nar.file_size as u64,
                    compression: &nar.compression,
                    nar_hash: &nar.nar_hash,
                    nar_size: nar.nar_size as u64,
                    storage_key: &nar.storage_key,
                    listing_key: &nar.listing_key,
                },
            )
            .await?;
        tracing::info!(cache = %cache.name, file_hash = %nar.file_hash, size = nar.file_size, "received NAR");
        Ok(())
    }

    /// Streams the body into `upload` (begun once the compression is known, if `store`)
    /// while hashing and parsing it; returns (bytes received, compression, NAR summary)
    /// only if the body is complete, matches `expected_hash` and is a valid NAR.
    async fn stream_and_verify<S>(
        &self,
        body: &mut S,
        content_length: Option<u64>,
        expected_hash: Sha256Hash,
        extension: &str,
        store: bool,
        upload: &mut Option<Box<dyn Upload>>,
    ) -> ServiceResult<(u64, Compression, NarSummary)>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let limit = self.limits().max_nar_size;
        let mut verifier = NarVerifier::for_extension(extension, NarSink::new(limit, self.limits().max_listing_size))?;
        let mut file_hasher = Sha256Hasher::default();
        let mut received: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| interrupted(&e))?;
            received += chunk.len() as u64;
            if received > limit {
                return Err(ServiceError::PayloadTooLarge { limit });
            }
            if content_length.is_some_and(|len| received > len) {
                return Err(ServiceError::BadRequest("body longer than Content-Length".into()));
            }
            file_hasher.update(&chunk);
            verifier.write(&chunk).await?;
            if upload.is_none() && store {
                let key = nar_storage_key(&expected_hash, verifier.compression());
                *upload = Some(self.storage().begin_upload(&key).await?);
            }
            if let Some(upload) = upload.as_mut() {
                upload.write(chunk).await?;
            }
        }
        if let Some(expected) = content_length.filter(|len| received != *len) {
            return Err(ServiceError::BadRequest(format!(
                "body shorter than Content-Length ({received} of {expected} bytes): nothing stored"
            )));
        }
        let file_hash = file_hasher.finish();
        if file_hash != expected_hash {
            return Err(ServiceError::BadRequest(format!(
                "NAR bytes hash to {} but the URL says {}: nothing stored",
                file_hash.to_nix32(),
                expected_hash.to_nix32()
            )));
        }
        let compression = verifier.compression();
        Ok((received, compression, verifier.finish().await?))
    }

    /// Commits `<hash>.narinfo`: the path is published only if its NAR was uploaded to this
    /// cache and matches what the narinfo claims, and all its references are published.
    pub async fn commit_narinfo(&self, cache: &CacheRow, hash_part: &str, text: &str) -> ServiceResult<()> {
        let info = NarInfo::parse(text).map_err(|e| ServiceError::BadRequest(format!("malformed narinfo: {e}")))?;
        if info.store_path.hash().as_str() != hash_part {
            return Err(ServiceError::BadRequest(format!(
                "narinfo is for {} but was uploaded as {hash_part}.narinfo",
                info.store_path
            )));
        }
        let file_name = info
            .url
            .strip_prefix("nar/")
            .ok_or_else(|| ServiceError::BadRequest(format!("narinfo URL '{}' must point into nar/", info.url)))?;
        let (file_hash, extension) = compression::parse_nar_file_name(file_name)
            .map_err(|e| ServiceError::BadRequest(format!("bad narinfo URL '{}': {e}", info.url)))?;
        let nar = self.db().uploaded_nar(cache.id, &file_hash.to_nix32()).await?.ok_or_else(|| {
            ServiceError::BadRequest(format!("{} was never uploaded to this cache: upload the NAR first", info.url))
        })?;
        let mismatch = |field: &str| ServiceError::BadRequest(format!("narinfo {field} does not match the uploaded NAR {}", info.url));
        if info.compression.name() != nar.compression || info.compression.extension() != extension {
            return Err(mismatch("Compression"));
        }
        if info.file_hash.is_some_and(|h| h.to_nix32() != nar.file_hash) {
            return Err(mismatch("FileHash"));
        }
        if info.file_size.is_some_and(|s| s != nar.file_size as u64) {
            return Err(mismatch("FileSize"));
        }
        if info.nar_hash.to_nix32() != nar.nar_hash {
            return Err(mismatch("NarHash"));
        }
        if info.nar_size != nar.nar_size as u64 {
            return Err(mismatch("NarSize"));
        }

        let other_refs: Vec<String> = info
            .references
            .iter()
            .filter(|r| r.hash() != info.store_path.hash())
            .map(|r| r.hash().as_str().to_owned())
            .collect();
        let missing = self.db().missing_paths(cache.id, &other_refs).await?;
        if !missing.is_empty() {
            return Err(ServiceError::BadRequest(missing_references_message(&info.references, &missing)));
        }

        let fingerprint = info.fingerprint();
        let sigs: Vec<String> = match SigningMode::of(cache) {
            // Server-held: the cache's keys sign the fingerprint now, once.
            SigningMode::Server => {
                self.signing_keys(cache).await?.iter().map(|key| key.sign(fingerprint.as_bytes()).to_nix_string()).collect()
            }
            // Client-held: only the owner's own, verified signatures are kept and served.
            SigningMode::Client => {
                self.verified_client_signatures(cache, &info.store_path.to_absolute(), &fingerprint, &info.sigs).await?
            }
        };
        let refs: Vec<String> = info.references.iter().map(StorePath::base_name).collect();
        let deriver = info.deriver.as_ref().map(StorePath::base_name);
        self.db()
            .upsert_path(NewPath {
                cache_id: cache.id,
                hash_part,
                store_path: &info.store_path.to_absolute(),
                nar_id: nar.id,
                refs: &refs.join(" "),
                deriver: deriver.as_deref(),
                ca: info.ca.as_deref(),
                sigs: &sigs.join("\n"),
            })
            .await?;
        tracing::info!(cache = %cache.name, path = %info.store_path, "published path");
        Ok(())
    }

    /// Stores a build log (`log/<drv>`), replacing an earlier one.
    pub async fn receive_build_log<S>(&self, cache: &CacheRow, drv: &str, mut body: S) -> ServiceResult<()>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let drv_path = StorePath::from_base_name(drv)
            .ok()
            .filter(|p| p.name().ends_with(".drv"))
            .ok_or_else(|| ServiceError::BadRequest(format!("'{drv}' is not a derivation's file name")))?;
        let key = format!("log/{}/{}", cache.id, drv_path.base_name());
        let limit = self.limits().max_small_upload;
        let mut upload = self.storage().begin_upload(&key).await?;
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    upload.abort().await?;
                    return Err(interrupted(&e));
                }
            };
            received += chunk.len() as u64;
            if received > limit {
                upload.abort().await?;
                return Err(ServiceError::PayloadTooLarge { limit });
            }
            upload.write(chunk).await?;
        }
        upload.commit().await?;
        self.db().upsert_build_log(cache.id, &drv_path.base_name(), &key, received).await?;
        Ok(())
    }
}

/// Decompresses an uploaded NAR as it streams and parses it, to learn its NarHash, NarSize
/// and listing without ever holding it whole.
enum NarVerifier {
    /// No extension: plain, or gzip (which nix also names `.nar`); decided by the first bytes.
    Undecided(NarSink),
    Plain(NarSink),
    Xz(XzDecoder<NarSink>),
    Zstd(ZstdDecoder<NarSink>),
    Bzip2(BzDecoder<NarSink>),
    Br(BrotliDecoder<NarSink>),
    Gzip(GzipDecoder<NarSink>),
}

impl NarVerifier {
    fn for_extension(extension: &str, sink: NarSink) -> ServiceResult<Self> {
        let sink = || sink;
        Ok(match extension {
            "" => NarVerifier::Undecided(sink()),
            ".xz" => NarVerifier::Xz(XzDecoder::new(sink())),
            ".zst" => NarVerifier::Zstd(ZstdDecoder::new(sink())),
            ".bz2" => NarVerifier::Bzip2(BzDecoder::new(sink())),
            ".br" => NarVerifier::Br(BrotliDecoder::new(sink())),
            other => {
                return Err(ServiceError::BadRequest(format!(
                    "NARs compressed as '{other}' are not accepted: use none, xz, zstd, bzip2, br or gzip"
                )))
            }
        })
    }

    fn compression(&self) -> Compression {
        match self {
            NarVerifier::Undecided(_) | NarVerifier::Plain(_) => Compression::None,
            NarVerifier::Xz(_) => Compression::Xz,
            NarVerifier::Zstd(_) => Compression::Zstd,
            NarVerifier::Bzip2(_) => Compression::Bzip2,
            NarVerifier::Br(_) => Compression::Br,
            NarVerifier::Gzip(_) => Compression::Gzip,
        }
    }

    async fn write(&mut self, chunk: &[u8]) -> ServiceResult<()> {
        if matches!(self, NarVerifier::Undecided(_)) && !chunk.is_empty() {
            // A NAR starts with the length of "nix-archive-1" (0x0d); gzip with 1f 8b.
            let NarVerifier::Undecided(sink) = std::mem::replace(self, NarVerifier::Plain(NarSink::new(0, 0))) else { unreachable!() };
            *self = if chunk[0] == 0x1f { NarVerifier::Gzip(GzipDecoder::new(sink)) } else { NarVerifier::Plain(sink) };
        }
        let result = match self {
            NarVerifier::Undecided(_) => Ok(()),
            NarVerifier::Plain(w) => w.write_all(chunk).await,
            NarVerifier::Xz(w) => w.write_all(chunk).await,
            NarVerifier::Zstd(w) => w.write_all(chunk).await,
            NarVerifier::Bzip2(w) => w.write_all(chunk).await,
            NarVerifier::Br(w) => w.write_all(chunk).await,
            NarVerifier::Gzip(w) => w.write_all(chunk).await,
        };
        result.map_err(invalid_nar)
    }

    async fn finish(self) -> ServiceResult<NarSummary> {
        async fn close<W: AsyncWrite + Unpin>(mut w: W, into_inner: impl FnOnce(W) -> NarSink) -> io::Result<NarSink> {
            w.shutdown().await?;
            Ok(into_inner(w))
        }
        let sink = match self {
            NarVerifier::Undecided(_) => return Err(ServiceError::BadRequest("empty body: not a NAR".into())),
            NarVerifier::Plain(w) => Ok(w),
            NarVerifier::Xz(w) => close(w, XzDecoder::into_inner).await,
            NarVerifier::Zstd(w) => close(w, ZstdDecoder::into_inner).await,
            NarVerifier::Bzip2(w) => close(w, BzDecoder::into_inner).await,
            NarVerifier::Br(w) => close(w, BrotliDecoder::into_inner).await,
            NarVerifier::Gzip(w) => close(w, GzipDecoder::into_inner).await,
        }
        .map_err(invalid_nar)?;
        sink.parser.finish().map_err(|e| ServiceError::BadRequest(format!("not a valid NAR: {e}")))
    }
}

fn invalid_nar(error: io::Error) -> ServiceError {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<NarTooLarge>()) {
        Some(NarTooLarge(limit)) => ServiceError::PayloadTooLarge { limit: *limit },
        None => ServiceError::BadRequest(format!("not a valid NAR: {error}")),
    }
}

/// Why reading a request body failed: the client stalled (or trickled), or went away.
fn interrupted(error: &io::Error) -> ServiceError {
    if error.kind() == io::ErrorKind::TimedOut {
        ServiceError::RequestTimeout
    } else {
        ServiceError::BadRequest("upload interrupted before its end: nothing stored".into())
    }
}

/// The decompressed NAR passed `max_nar_size`.
#[derive(Debug, thiserror::Error)]
#[error("the NAR is larger than {0} bytes once decompressed")]
struct NarTooLarge(u64);

/// Decompressed bytes the parser takes before letting other tasks on this worker run:
/// a small, highly compressed upload can expand to gigabytes within one body chunk.
const YIELD_EVERY_BYTES: u64 = 4 << 20;

/// The end of the decompression pipeline: feeds decompressed bytes to the NAR parser,
/// refusing more than `limit` of them.
struct NarSink {
    parser: NarParser,
    limit: u64,
    received: u64,
    since_yield: u64,
}

impl NarSink {
    fn new(limit: u64, max_listing_size: usize) -> Self {
        Self { parser: NarParser::with_listing_limit(max_listing_size), limit, received: 0, since_yield: 0 }
    }
}

impl AsyncWrite for NarSink {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.since_yield >= YIELD_EVERY_BYTES {
            this.since_yield = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.received += buf.len() as u64;
        if this.received > this.limit {
            return Poll::Ready(Err(io::Error::other(NarTooLarge(this.limit))));
        }
        this.since_yield += buf.len() as u64;
        Poll::Ready(
            this.parser
                .feed(buf)
                .map(|()| buf.len())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// "references not in this cache", naming at most a few of them (a narinfo may list
/// thousands, and nix prints the whole body to the user).
fn missing_references_message(references: &[StorePath], missing: &[String]) -> String {
    const NAMED: usize = 5;
    let missing: std::collections::HashSet<&str> = missing.iter().map(String::as_str).collect();
    let named: Vec<String> =
        references.iter().filter(|r| missing.contains(r.hash().as_str())).take(NAMED).map(StorePath::base_name).collect();
    let more = missing.len().saturating_sub(named.len());
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    format!("references not in this cache (push them first): {}{more}", named.join(" "))
}
