//! A request body read against a byte limit and its declared length: the one loop every
//! upload (NARs, narinfos, build logs) reads through.

use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::{ServiceError, ServiceResult};

pub struct LimitedBody<S> {
    inner: S,
    limit: u64,
    declared: Option<u64>,
    received: u64,
}

impl<S: Stream<Item = io::Result<Bytes>> + Unpin> LimitedBody<S> {
    /// Refuses at once a body whose declared length (Content-Length) is over `limit`.
    pub fn new(inner: S, limit: u64, declared: Option<u64>) -> ServiceResult<Self> {
        if declared.is_some_and(|len| len > limit) {
            return Err(ServiceError::PayloadTooLarge { limit });
        }
        Ok(Self { inner, limit, declared, received: 0 })
    }

    /// The next piece, or `None` at the end of a complete body. A body over the limit,
    /// longer or shorter than declared, cut off or stalled is an error.
    pub async fn next_chunk(&mut self) -> ServiceResult<Option<Bytes>> {
        let Some(chunk) = self.inner.next().await else {
            return match self.declared {
                Some(expected) if expected != self.received => Err(ServiceError::BadRequest(format!(
                    "body shorter than Content-Length ({} of {expected} bytes): nothing stored",
                    self.received
                ))),
                _ => Ok(None),
            };
        };
        let chunk = chunk.map_err(|e| interrupted(&e))?;
        self.received += chunk.len() as u64;
        if self.received > self.limit {
            return Err(ServiceError::PayloadTooLarge { limit: self.limit });
        }
        if self.declared.is_some_and(|len| self.received > len) {
            return Err(ServiceError::BadRequest("body longer than Content-Length".into()));
        }
        Ok(Some(chunk))
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The whole body (for small ones: the limit bounds the memory).
    pub async fn read_all(mut self) -> ServiceResult<Bytes> {
        let mut body = BytesMut::new();
        while let Some(chunk) = self.next_chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
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
