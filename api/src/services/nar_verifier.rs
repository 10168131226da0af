//! Checking an uploaded NAR as it streams: decompressing it (whatever the client chose)
//! into the NAR parser, which learns its NarHash, NarSize and listing without ever holding
//! it whole, and refuses more than `max_nar_size` of it once decompressed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::write::{BrotliDecoder, BzDecoder, GzipDecoder, XzDecoder, ZstdDecoder};
use larder_protocol::compression::Compression;
use larder_protocol::hash::{Sha256Hash, Sha256Hasher};
use larder_protocol::nar::{NarParser, NarSummary};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::ServiceError;

type ServiceResult<T> = Result<T, ServiceError>;

/// An uploaded file checked as it streams: its hash and size, and the NAR it holds.
pub(super) struct UploadVerifier {
    nar: NarVerifier,
    /// Fed only while the file is compressed: an uncompressed file is the NAR, whose hash
    /// the parser computes anyway (one SHA-256 pass over the bytes, not two).
    file_hasher: Sha256Hasher,
    file_size: u64,
}

/// What an uploaded file turned out to be.
pub(super) struct VerifiedUpload {
    pub(super) file_hash: Sha256Hash,
    pub(super) file_size: u64,
    pub(super) compression: Compression,
    pub(super) summary: NarSummary,
}

impl UploadVerifier {
    /// For a file named with `extension` (`""`, `.zst`, `.xz`…), refusing a NAR larger than
    /// `max_nar_size` once decompressed and keeping a listing of at most `max_listing_size`.
    pub(super) fn new(extension: &str, max_nar_size: u64, max_listing_size: usize) -> ServiceResult<Self> {
        let nar = NarVerifier::for_extension(extension, NarSink::new(max_nar_size, max_listing_size))?;
        Ok(Self { nar, file_hasher: Sha256Hasher::default(), file_size: 0 })
    }

    pub(super) async fn write(&mut self, chunk: &[u8]) -> ServiceResult<()> {
        self.nar.write(chunk).await?;
        if self.nar.compression() != Compression::None {
            self.file_hasher.update(chunk);
        }
        self.file_size += chunk.len() as u64;
        Ok(())
    }

    /// Known once the first bytes were written (a `.nar` may be plain or gzip).
    pub(super) fn compression(&self) -> Compression {
        self.nar.compression()
    }

    pub(super) async fn finish(self) -> ServiceResult<VerifiedUpload> {
        let compression = self.nar.compression();
        let summary = self.nar.finish().await?;
        let file_hash = if compression == Compression::None { summary.nar_hash } else { self.file_hasher.finish() };
        Ok(VerifiedUpload { file_hash, file_size: self.file_size, compression, summary })
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
        Poll::Ready(this.parser.feed(buf).map(|()| buf.len()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string())))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
