//! Request plumbing shared by the route modules: credentials and bodies.

use std::future::{ready, Future, Ready};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

use crate::auth::token_from_authorization;
use crate::services::{LimitedBody, ServiceError};

/// The token a request presents, if any (Bearer, or Basic with the token as password).
pub struct Credentials(Option<String>);

impl Credentials {
    pub fn token(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl FromRequest for Credentials {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = req.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(token_from_authorization);
        ready(Ok(Credentials(token)))
    }
}

pub fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The request body as a stream of bytes, for the services. A body cut off by
/// [`BodyDeadline`] fails with `TimedOut`, anything else with `UnexpectedEof`.
pub fn stream(payload: web::Payload) -> impl Stream<Item = io::Result<Bytes>> + Unpin {
    payload.map(|chunk| chunk.map_err(payload_error_to_io))
}

fn payload_error_to_io(error: PayloadError) -> io::Error {
    match error {
        PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut => e,
        other => io::Error::new(io::ErrorKind::UnexpectedEof, other.to_string()),
    }
}

/// True if a body failed because [`BodyDeadline`] cut it off.
pub fn timed_out(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
}

/// How long a client may take to send a request body.
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeouts {
    /// The longest pause between two pieces of the body.
    pub stall: Duration,
    /// The slowest average rate (bytes per second) tolerated after the first `stall`;
    /// 0 for none. Without it, a body trickling one byte a second would never stall.
    pub min_rate: u64,
}

impl BodyTimeouts {
    /// Wraps a request's body so that it fails with `TimedOut` past the deadlines.
    pub fn apply(self, payload: Payload) -> Payload {
        let deadline = BodyDeadline { inner: payload, timeouts: self, started: Instant::now(), received: 0, timer: None };
        Payload::Stream { payload: Box::pin(deadline) }
    }
}

/// A request body with deadlines: a stall of more than `stall`, or an average rate below
/// `min_rate` once `stall` has passed, ends it with a `TimedOut` error. The timer exists
/// only while the body is waited for, so bodiless requests cost nothing.
pub struct BodyDeadline {
    inner: Payload,
    timeouts: BodyTimeouts,
    started: Instant,
    received: u64,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl BodyDeadline {
    fn deadline(&self) -> Instant {
        let stalled = Instant::now() + self.timeouts.stall;
        if self.timeouts.min_rate == 0 {
            return stalled;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.timeouts.min_rate as f64);
        stalled.min(self.started + self.timeouts.stall + earned)
    }
}

impl Stream for BodyDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                this.timer = None;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                let deadline = this.deadline();
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.inner = Payload::None;
                        let error = io::Error::new(io::ErrorKind::TimedOut, "request body not received in time");
                        Poll::Ready(Some(Err(PayloadError::Io(error))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Reads a small body whole, refusing it past `limit` bytes.
pub async fn read_small(req: &HttpRequest, payload: web::Payload, limit: u64) -> Result<Bytes, ServiceError> {
    LimitedBody::new(stream(payload), limit, content_length(req))?.read_all().await
}

/// As [`read_small`], for a text body (`what` names it when it is not UTF-8).
pub async fn read_small_text(req: &HttpRequest, payload: web::Payload, limit: u64, what: &str) -> Result<String, ServiceError> {
    let body = read_small(req, payload, limit).await?;
    String::from_utf8(Vec::from(body)).map_err(|_| ServiceError::BadRequest(format!("{what} is not UTF-8")))
}
