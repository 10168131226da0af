//! The Nix binary cache protocol under `/{cache}/`: what stock `nix` reads and writes.

use actix_files::HttpRange;
use actix_web::body::SizedStream;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use larder_protocol::binary_cache::{
    parse_hash_part, parse_nar_file_name, BUILD_LOG_MIME, CACHE_INFO_MIME, LISTING_MIME, NARINFO_MIME, NAR_MIME, REALISATION_MIME,
};
use larder_protocol::narinfo::MAX_NARINFO_SIZE;
use larder_protocol::realisation::{DrvOutputId, MAX_REALISATION_SIZE};

use super::body::{self, Credentials};
use super::errors::NixError;
use super::extract::CachePath;
use super::not_found;
use crate::domain::{Cache, Permission};
use crate::services::{Principal, ServiceError, Services};
use crate::storage::{ByteRange, Object};

type NixResult = Result<HttpResponse, NixError>;

/// Authenticates the caller and checks `needed` on the cache named in the path.
async fn access(
    services: &Services,
    cache: &CachePath,
    credentials: &Credentials,
    needed: Permission,
) -> Result<(Cache, Option<Principal>), NixError> {
    let principal = services.authenticate(credentials.token()).await?;
    let cache = services.authorize(&cache.0, principal.as_ref(), needed).await?;
    Ok((cache, principal))
}

/// Like [`access`] for uploads, which always come with a token.
async fn upload_access(services: &Services, cache: &CachePath, credentials: &Credentials) -> Result<(Cache, Principal), NixError> {
    let (cache, principal) = access(services, cache, credentials, Permission::Write).await?;
    // Write access on a cache never comes without a token.
    let principal = principal.ok_or(ServiceError::Unauthorized(crate::services::NO_ACCESS))?;
    Ok((cache, principal))
}

/// The `{hash}` of `{hash}.narinfo` and `{hash}.ls`.
fn hash_segment(req: &HttpRequest) -> &str {
    req.match_info().get("hash").unwrap_or_default()
}

/// Narinfos may change (re-signing), so clients may keep them only a while.
fn narinfo_cache_control(cache: &Cache) -> &'static str {
    if cache.public {
        "public, max-age=300"
    } else {
        "private, max-age=300"
    }
}

/// NAR URLs name content, so they may be cached for good; private ones only privately.
fn immutable_cache_control(cache: &Cache) -> &'static str {
    if cache.public {
        "public, max-age=31536000, immutable"
    } else {
        "private, max-age=31536000, immutable"
    }
}

pub async fn get_cache_info(services: web::Data<Services>, cache: CachePath, credentials: Credentials) -> NixResult {
    let (cache, _) = access(&services, &cache, &credentials, Permission::Read).await?;
    Ok(HttpResponse::Ok()
        .content_type(CACHE_INFO_MIME)
        .body(format!("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: {}\n", cache.priority)))
}

/// nix 2.8 PUTs nix-cache-info when it cannot read it; we always serve our own.
pub async fn put_cache_info(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> NixResult {
    upload_access(&services, &cache, &credentials).await?;
    body::read_small(&req, payload, services.limits().max_small_upload).await?;
    Ok(HttpResponse::Ok().finish())
}

pub async fn get_narinfo(services: web::Data<Services>, cache: CachePath, credentials: Credentials, req: HttpRequest) -> NixResult {
    let (cache, _) = access(&services, &cache, &credentials, Permission::Read).await?;
    // Not a store path hash: no lookup at all.
    let Ok(hash) = parse_hash_part(hash_segment(&req)) else {
        return Ok(not_found());
    };
    Ok(match services.narinfo(&cache, &hash).await? {
        Some(text) => {
            HttpResponse::Ok().content_type(NARINFO_MIME).insert_header((header::CACHE_CONTROL, narinfo_cache_control(&cache))).body(text)
        }
        None => not_found(),
    })
}

pub async fn put_narinfo(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> NixResult {
    let (cache, _) = upload_access(&services, &cache, &credentials).await?;
    let limit = services.limits().max_small_upload.min(MAX_NARINFO_SIZE as u64);
    let text = body::read_small_text(&req, payload, limit, "narinfo").await?;
    let hash = parse_hash_part(hash_segment(&req))
        .map_err(|e| ServiceError::BadRequest(format!("cannot upload '{}.narinfo': {e}", hash_segment(&req))))?;
    services.commit_narinfo(&cache, &hash, &text).await?;
    Ok(HttpResponse::Ok().finish())
}

pub async fn get_listing(services: web::Data<Services>, cache: CachePath, credentials: Credentials, req: HttpRequest) -> NixResult {
    let (cache, _) = access(&services, &cache, &credentials, Permission::Read).await?;
    let Ok(hash) = parse_hash_part(hash_segment(&req)) else {
        return Ok(not_found());
    };
    Ok(match services.listing(&cache, &hash).await? {
        Some(object) => streamed(LISTING_MIME, object),
        None => not_found(),
    })
}

/// The listing is computed from the NAR itself when it arrives; the client's copy is not
/// trusted, only accepted so that `write-nar-listing=true` pushes succeed.
pub async fn put_listing(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> NixResult {
    upload_access(&services, &cache, &credentials).await?;
    body::read_small(&req, payload, services.limits().max_small_upload).await?;
    Ok(HttpResponse::Ok().finish())
}

pub async fn get_nar(
    services: web::Data<Services>,
    cache: CachePath,
    file: web::Path<(String, String)>,
    credentials: Credentials,
    req: HttpRequest,
) -> NixResult {
    let (cache, principal) = access(&services, &cache, &credentials, Permission::Read).await?;
    let Ok((file_hash, extension)) = parse_nar_file_name(&file.1) else {
        return Ok(not_found());
    };
    // HEAD is how `nix copy` asks whether to skip a NAR: a pusher sees its pending uploads.
    let pusher = principal.is_some_and(|p| p.permission_on(&cache).is_some_and(|has| has.allows(Permission::Write)));
    let include_pending = req.method() == Method::HEAD && pusher;
    let Some(nar) = services.nar(&cache, &file_hash, extension, include_pending).await? else {
        return Ok(not_found());
    };
    // The whole NAR straight from the bucket, when so configured (a Range is served here:
    // it is rare and its answer must carry our Content-Range).
    if req.method() == Method::GET && !req.headers().contains_key(header::RANGE) {
        if let Some(url) = services.nar_redirect(&nar).await? {
            return Ok(HttpResponse::TemporaryRedirect()
                .insert_header((header::LOCATION, url))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish());
        }
    }
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
        .content_type(NAR_MIME)
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
    cache: CachePath,
    file: web::Path<(String, String)>,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> NixResult {
    let (cache, principal) = upload_access(&services, &cache, &credentials).await?;
    let _slot = services.upload_slot(&principal)?;
    let (file_hash, extension) =
        parse_nar_file_name(&file.1).map_err(|e| ServiceError::BadRequest(format!("bad NAR file name '{}': {e}", file.1)))?;
    services.receive_nar(&cache, file_hash, extension, body::content_length(&req), body::stream(payload)).await?;
    Ok(HttpResponse::Ok().finish())
}

/// The `{id}` of `realisations/{id}.doi`.
fn realisation_id_segment(req: &HttpRequest) -> &str {
    req.match_info().get("id").unwrap_or_default()
}

pub async fn get_realisation(services: web::Data<Services>, cache: CachePath, credentials: Credentials, req: HttpRequest) -> NixResult {
    let (cache, _) = access(&services, &cache, &credentials, Permission::Read).await?;
    // Not a derivation output id: no lookup at all.
    let Ok(id) = DrvOutputId::parse(realisation_id_segment(&req)) else {
        return Ok(not_found());
    };
    Ok(match services.realisation(&cache, &id).await? {
        Some(json) => HttpResponse::Ok()
            .content_type(REALISATION_MIME)
            .insert_header((header::CACHE_CONTROL, narinfo_cache_control(&cache)))
            .body(json),
        None => not_found(),
    })
}

/// Written by nix after the output paths themselves (`nix copy --to URL 'DRV^*'`).
pub async fn put_realisation(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> NixResult {
    let (cache, _) = upload_access(&services, &cache, &credentials).await?;
    let limit = services.limits().max_small_upload.min(MAX_REALISATION_SIZE as u64);
    let text = body::read_small_text(&req, payload, limit, "realisation").await?;
    let id = DrvOutputId::parse(realisation_id_segment(&req))
        .map_err(|e| ServiceError::BadRequest(format!("cannot upload '{}.doi': {e}", realisation_id_segment(&req))))?;
    services.put_realisation(&cache, &id, &text).await?;
    Ok(HttpResponse::Ok().finish())
}

pub async fn get_log(
    services: web::Data<Services>,
    cache: CachePath,
    drv: web::Path<(String, String)>,
    credentials: Credentials,
) -> NixResult {
    let (cache, _) = access(&services, &cache, &credentials, Permission::Read).await?;
    Ok(match services.build_log(&cache, &drv.1).await? {
        Some(object) => streamed(BUILD_LOG_MIME, object),
        None => not_found(),
    })
}

pub async fn put_log(
    services: web::Data<Services>,
    cache: CachePath,
    drv: web::Path<(String, String)>,
    credentials: Credentials,
    payload: web::Payload,
) -> NixResult {
    let (cache, principal) = upload_access(&services, &cache, &credentials).await?;
    let _slot = services.upload_slot(&principal)?;
    services.receive_build_log(&cache, &drv.1, body::stream(payload)).await?;
    Ok(HttpResponse::Ok().finish())
}

fn streamed(content_type: &str, object: Object) -> HttpResponse {
    HttpResponse::build(StatusCode::OK).content_type(content_type).body(SizedStream::new(object.total_size, object.stream))
}
