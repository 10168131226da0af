//! Extractors for what every route takes from a request.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use super::errors::{ApiError, NixError};
use crate::domain::CacheName;
use crate::services::{ServiceError, NO_ACCESS};

/// The `{cache}` segment of a route. A name that cannot be a cache's answers exactly like
/// a cache that does not exist (on the binary cache as text, on the API as JSON), so the
/// name rules leak nothing either.
pub struct CachePath(pub CacheName);

impl FromRequest for CachePath {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let name = req.match_info().get("cache").unwrap_or_default();
        ready(CacheName::parse(name).map(CachePath).map_err(|_| {
            let error = ServiceError::Unauthorized(NO_ACCESS);
            // By the route, not the path: `/api/nix-cache-info` is a (reserved) cache's.
            if req.match_pattern().is_some_and(|pattern| pattern.starts_with("/api/v1/")) {
                ApiError(error).into()
            } else {
                NixError(error).into()
            }
        }))
    }
}
