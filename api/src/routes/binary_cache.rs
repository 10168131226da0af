//! The Nix binary cache protocol under `/{cache}/`: what stock `nix` reads and writes.

use actix_files::HttpRange;
use actix_web::body::SizedStream;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::body::{self, Credentials};
use super::errors::NixError;
use super::not_found;
use crate::db::CacheRow;
use crate::domain::Permission;
use crate::services::{Principal, ServiceError, Services};
use crate::storage::{ByteRange, Object};
use larder_protocol::narinfo::MAX_NARINFO_SIZE;

type NixResult = Result<HttpResponse, NixError>;

const NARINFO_TYPE: &str = "text/x-nix-narinfo";
const NAR_TYPE: &str = "application/x-nix-nar";

/// Authenticates the caller and checks `needed` on the cache named in the path.
async fn access(
    services: &Services,
    cache: &str,
    credentials: &Credentials,
    needed: Permission,
) -> Result<(CacheRow, Option<Principal>), NixError> {
    let principal = services.authenticate(credentials.token()).await?;
    let cache = services.authorize(cache, principal.as_ref(), needed).await?;
    Ok((cache, principal))
}

/// NAR URLs name content, so they may be cached for good; private ones only privately.
fn immutable_cache_control(cache: &CacheRow) -> &'static str {
    if cache.is_public() {
        "public, max-age=31536000, immutable"
    } else {
        "private, max-age=31536000, immutable"
    }
}

pub async fn get_cache_info(services: web::Data<Services>, path: web::Path<String>, credentials: Credentials) -> NixResult {
    let (cache, _) = access(&services, &path, &credentials, Permission::Read).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/x-nix-cache-info")
        .body(format!("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: {}\n", cache.priority)))
}

/// nix 2.8 PUTs nix-cache-info when it cannot read it; we always serve our own.
pub async fn put_cache_info(
    services: web::Data<Services>,
    path: web::Path<String>,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> NixResult {
    access(&services, &path, &credentials, Permission::Write).await?;
    body::read_small(&req, payload, services.limits().max_small_upload).await?;
    Ok(HttpResponse::Ok().finish())
}

/// `<hash>.narinfo` and `<hash>.ls`.
pub async fn get_file(services: web::Data<Services>, path: web::Path<(String, String)>, credentials: Credentials) -> NixResult {
    let (cache_name, file) = path.into_inner();
    let (cache, _) = access(&services, &cache_name, &credentials, Permission::Read).await?;
    if let Some(hash_part) = file.strip_suffix(".narinfo") {
        return Ok(match services.narinfo(&cache, hash_part).await? {
            Some(text) => HttpResponse::Ok()
                .content_type(NARINFO_TYPE)
                .insert_header((header::CACHE_CONTROL, if cache.is_public() { "public, max-age=300" } else { "private, max-age=300" }))
                .body(text),
            None => not_found(),
        });
    }
    if let Some(hash_part) = file.strip_suffix(".ls") {
        return Ok(match services.listing(&cache, hash_part).await? {
            Some(object) => streamed(StatusCode::OK, "application/json", object.total_size, object),
            None => not_found(),
        });
    }
    Ok(not_found())
}

pub async fn put_file(
    services: web::Data<Services>,
    path: web::Path<(String, String)>,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> NixResult {
    let (cache_name, file) = path.into_inner();
    let (cache, _) = access(&services, &cache_name, &credentials, Permission::Write).await?;
    let limit = services.limits().max_small_upload.min(MAX_NARINFO_SIZE as u64);
    let body = body::read_small(&req, payload, limit).await?;
    if let Some(hash_part) = file.strip_suffix(".narinfo") {
        let text = std::str::from_utf8(&body).map_err(|_| ServiceError::BadRequest("narinfo is not UTF-8".into()))?;
        services.commit_narinfo(&cache, hash_part, text).await?;
        return Ok(HttpResponse::Ok().finish());
    }
    if file.ends_with(".ls") {
        // The listing is computed from the NAR itself when it arrives; the client's copy
        // is not trusted, only accepted so that `write-nar-listing=true` pushes succeed.
        return Ok(HttpResponse::Ok().finish());
    }
    Err(ServiceError::NotFound(format!("cannot upload '{file}': expected <hash>.narinfo or <hash>.ls")).into())
}

pub async fn get_nar(
    services: web::Data<Services>,
    path: web::Path<(String, String)>,
    credentials: Credentials,
    req: HttpRequest,
) -> NixResult {
    let (cache_name, file) = path.into_inner();
    let (cache, principal) = access(&services, &cache_name, &credentials, Permission::Read).await?;
    // HEAD is how `nix copy` asks whether to skip a NAR: a pusher sees its pending uploads.
    let pusher = principal.is_some_and(|p| p.permission.allows(Permission::Write));
    let include_pending = req.method() == Method::HEAD && pusher;
    let Some(nar) = services.nar(&cache, &file, include_pending).await? else {
        return Ok(not_found());
    };
    let range = match req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(value) => match HttpRange::parse(value, nar.size).ok().as_deref() {
            Some([one]) => Some(ByteRange { start: one.start, end: one.start + one.length - 1 }),
            // Several ranges at once are allowed to be answered with the whole body.
            Some(_) => None,
            None => {
                return Ok(HttpResponse::RangeNotSatisfiable()
                    .insert_header((header::CONTENT_RANGE, format!("bytes */{}", nar.size)))
                    .finish())
            }
        },
    };
    let mut response = match range {
        Some(r) => {
            let mut response = HttpResponse::PartialContent();
            response.insert_header((header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end, nar.size)));
            response
        }
        None => HttpResponse::Ok(),
    };
    response
        .content_type(NAR_TYPE)
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, immutable_cache_control(&cache)));
    let length = range.map_or(nar.size, |r| r.len());
    if req.method() == Method::HEAD {
        // actix sends no body for HEAD but takes Content-Length from the body's size.
        let nothing = futures_util::stream::empty::<std::io::Result<bytes::Bytes>>();
        return Ok(response.body(SizedStream::new(length, nothing)));
    }
    let object = services.open_nar(&nar, range).await?;
    Ok(response.body(SizedStream::new(length, object.stream)))
}

pub async fn put_nar(
    services: web::Data<Services>,
    path: web::Path<(String, String)>,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> NixResult {
    let (cache_name, file) = path.into_inner();
    let (cache, principal) = access(&services, &cache_name, &credentials, Permission::Write).await?;
    let _slot = services.upload_slot(principal.as_ref().ok_or(ServiceError::Unauthorized(crate::services::NO_ACCESS))?)?;
    services.receive_nar(&cache, &file, body::content_length(&req), body::stream(payload)).await?;
    Ok(HttpResponse::Ok().finish())
}

pub async fn get_log(services: web::Data<Services>, path: web::Path<(String, String)>, credentials: Credentials) -> NixResult {
    let (cache_name, drv) = path.into_inner();
    let (cache, _) = access(&services, &cache_name, &credentials, Permission::Read).await?;
    Ok(match services.build_log(&cache, &drv).await? {
        Some(object) => streamed(StatusCode::OK, "text/plain; charset=utf-8", object.total_size, object),
        None => not_found(),
    })
}

pub async fn put_log(
    services: web::Data<Services>,
    path: web::Path<(String, String)>,
    credentials: Credentials,
    payload: web::Payload,
) -> NixResult {
    let (cache_name, drv) = path.into_inner();
    let (cache, principal) = access(&services, &cache_name, &credentials, Permission::Write).await?;
    let _slot = services.upload_slot(principal.as_ref().ok_or(ServiceError::Unauthorized(crate::services::NO_ACCESS))?)?;
    services.receive_build_log(&cache, &drv, body::stream(payload)).await?;
    Ok(HttpResponse::Ok().finish())
}

fn streamed(status: StatusCode, content_type: &str, length: u64, object: Object) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(content_type)
        .body(SizedStream::new(length, object.stream))
}
