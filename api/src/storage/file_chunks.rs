//! A file sent as a stream of chunks, read on the blocking pool one chunk ahead of the one
//! being sent (the first where the file is opened). Each read lands in a buffer of its own
//! that becomes the chunk as it is (`tokio::fs::File` reads into an internal buffer and
//! copies out of it: one more pass over every byte served), and the next read runs while
//! the previous chunk is written to the socket.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::task::JoinHandle;

type ChunkRead = JoinHandle<io::Result<(File, Bytes)>>;

pub(super) struct FileChunks {
    /// Read already, to be sent next (the first chunk, read where the file was opened).
    ready: Option<(File, Bytes)>,
    /// Bytes still to be read after the read in flight (or the chunk ready).
    remaining: u64,
    chunk: usize,
    reading: Option<ChunkRead>,
}

impl FileChunks {
    /// Sends `len` bytes of `file` from where it is positioned, in chunks of `chunk` bytes.
    /// Blocks to read the first chunk: call it on the blocking pool, where the file was
    /// opened (one hand-off to a blocking thread per response, not two).
    pub(super) fn read_first(mut file: File, len: u64, chunk: usize) -> io::Result<Self> {
        let want = len.min(chunk as u64);
        let first = read_chunk(&mut file, want)?;
        Ok(Self { ready: Some((file, first)), remaining: len - want, chunk, reading: None })
    }

    fn read_next(&mut self, file: File) {
        if self.remaining == 0 {
            return;
        }
        let want = self.remaining.min(self.chunk as u64);
        self.remaining -= want;
        self.reading = Some(tokio::task::spawn_blocking(move || {
            let mut file = file;
            let chunk = read_chunk(&mut file, want)?;
            Ok((file, chunk))
        }));
    }
}

/// Exactly `want` bytes, read into spare capacity (nothing is zeroed first).
fn read_chunk(file: &mut File, want: u64) -> io::Result<Bytes> {
    let mut buffer = Vec::with_capacity(want as usize);
    file.take(want).read_to_end(&mut buffer)?;
    if (buffer.len() as u64) < want {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the object is shorter than its recorded size"));
    }
    Ok(Bytes::from(buffer))
}

impl Stream for FileChunks {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let (file, chunk) = if let Some(ready) = this.ready.take() {
            ready
        } else {
            let Some(reading) = this.reading.as_mut() else {
                return Poll::Ready(None);
            };
            let read = ready!(Pin::new(reading).poll(cx));
            this.reading = None;
            match read {
                Ok(Ok(read)) => read,
                Ok(Err(error)) => return Poll::Ready(Some(Err(error))),
                Err(joined) => return Poll::Ready(Some(Err(io::Error::other(joined)))),
            }
        };
        this.read_next(file);
        if chunk.is_empty() {
            return Poll::Ready(None); // an empty object
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl Drop for FileChunks {
    fn drop(&mut self) {
        // A client that hung up mid-NAR: a read not yet started is skipped (one already
        // running on the blocking pool finishes on its own).
        if let Some(reading) = self.reading.take() {
            reading.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;
    use std::io::{Seek, SeekFrom, Write};

    async fn collect(file: File, len: u64, chunk: usize) -> io::Result<Vec<Bytes>> {
        FileChunks::read_first(file, len, chunk)?.try_collect().await
    }

    #[tokio::test]
    async fn sends_exactly_the_range_asked_for_in_chunks() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();

        file.seek(SeekFrom::Start(0)).unwrap();
        let chunks = collect(file.try_clone().unwrap(), 10_000, 4096).await.unwrap();
        assert_eq!(chunks.iter().map(Bytes::len).collect::<Vec<_>>(), [4096, 4096, 1808]);
        assert_eq!(chunks.concat(), bytes);

        file.seek(SeekFrom::Start(100)).unwrap();
        let chunks = collect(file.try_clone().unwrap(), 50, 4096).await.unwrap();
        assert_eq!(chunks.concat(), &bytes[100..150]);

        file.seek(SeekFrom::Start(0)).unwrap();
        assert!(collect(file.try_clone().unwrap(), 0, 4096).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_file_shorter_than_recorded_is_an_error_not_a_short_body() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[7; 100]).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let error = collect(file, 200, 64).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
