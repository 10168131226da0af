//! The REST API, `/api/v1` (contract: openapi.yaml).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::body::Credentials;
use super::errors::ApiError;
use crate::domain::Permission;
use crate::services::{CacheInfo, Services};
use crate::startup::PublicUrl;

#[derive(Serialize)]
struct CacheInfoResponse {
    #[serde(flatten)]
    info: CacheInfo,
    /// What to put in `substituters` (and `nix copy --to`).
    substituter: String,
}

/// What a client needs to configure itself for a cache (visibility rules as on the
/// binary cache: an unknown cache and a private one without access answer alike).
pub async fn cache_info(
    services: web::Data<Services>,
    public_url: web::Data<PublicUrl>,
    path: web::Path<String>,
    credentials: Credentials,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let principal = services.authenticate(credentials.token()).await?;
    let cache = services.authorize(&path, principal.as_ref(), Permission::Read).await?;
    let info = services.cache_info(&cache).await?;
    let substituter = format!("{}/{}", public_url.base(&req), cache.name);
    Ok(HttpResponse::Ok().json(CacheInfoResponse { info, substituter }))
}
