//! Request plumbing shared by the route modules: credentials and bodies.

use std::future::{ready, Ready};
use std::io;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::auth::token_from_authorization;
use crate::services::ServiceError;

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
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(token_from_authorization);
        ready(Ok(Credentials(token)))
    }
}

pub fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The request body as a stream of bytes, for the services.
pub fn stream(payload: web::Payload) -> impl Stream<Item = io::Result<Bytes>> + Unpin {
    payload.map(|chunk| chunk.map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string())))
}

/// Reads a small body whole, refusing it past `limit` bytes.
pub async fn read_small(req: &HttpRequest, payload: web::Payload, limit: u64) -> Result<Bytes, ServiceError> {
    if content_length(req).is_some_and(|len| len > limit) {
        return Err(ServiceError::PayloadTooLarge { limit });
    }
    let mut body = BytesMut::new();
    let mut stream = stream(payload);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ServiceError::BadRequest(format!("upload interrupted: {e}")))?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ServiceError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
