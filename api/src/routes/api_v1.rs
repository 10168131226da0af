//! The REST API, `/api/v1` (contract: openapi.yaml). JSON in, JSON out, in the shapes of
//! `larder-api-types`; errors are `{"error": code, "message": text}`. Here: turning domain
//! values into those shapes (`From`), requests into service inputs (`TryFrom`, where the
//! rules about valid combinations live), and nothing else.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use larder_api_types as api;

use super::body::Credentials;
use super::errors::ApiError;
use super::extract::CachePath;
use crate::domain::{self, CacheName, Permission, TokenId, TokenScope};
use crate::services::{
    CacheChanges, CacheCollection, CollectReason, NewOwnedCache, Principal, ServiceError, Services, TokenRequest, TokenTarget,
    UploadAnswer, UploadRequest,
};
use crate::startup::PublicUrl;

type ApiResult = Result<HttpResponse, ApiError>;

/// Largest JSON body accepted.
const MAX_JSON_BODY: usize = 64 * 1024;

/// JSON body errors (malformed, wrong content type, too large, too slow) in our error shape.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(MAX_JSON_BODY).error_handler(|error, _req| {
        use actix_web::error::JsonPayloadError as E;
        let service_error = match &error {
            E::OverflowKnownLength { .. } | E::Overflow { .. } => ServiceError::PayloadTooLarge { limit: MAX_JSON_BODY as u64 },
            E::ContentType => ServiceError::BadRequest("expected a JSON body with Content-Type: application/json".into()),
            E::Payload(payload) if super::body::timed_out(payload) => ServiceError::RequestTimeout,
            other => ServiceError::BadRequest(format!("invalid JSON body: {other}")),
        };
        ApiError(service_error).into()
    })
}

/// The caller, who must present a token.
async fn caller(services: &Services, credentials: &Credentials) -> Result<Principal, ApiError> {
    services
        .authenticate(credentials.token())
        .await?
        .ok_or(ApiError(ServiceError::Unauthorized("authentication required: send a token (Authorization: Bearer …)")))
}

// ---- shapes: domain → wire ---------------------------------------------------------------

impl From<Permission> for api::Permission {
    fn from(permission: Permission) -> Self {
        match permission {
            Permission::Read => api::Permission::Read,
            Permission::Write => api::Permission::Write,
            Permission::Admin => api::Permission::Admin,
        }
    }
}

impl From<api::Permission> for Permission {
    fn from(permission: api::Permission) -> Self {
        match permission {
            api::Permission::Read => Permission::Read,
            api::Permission::Write => Permission::Write,
            api::Permission::Admin => Permission::Admin,
        }
    }
}

impl From<domain::NarEncoding> for api::NarEncoding {
    fn from(encoding: domain::NarEncoding) -> Self {
        match encoding {
            domain::NarEncoding::None => api::NarEncoding::None,
            domain::NarEncoding::Zstd => api::NarEncoding::Zstd,
        }
    }
}

impl From<api::NarEncoding> for domain::NarEncoding {
    fn from(encoding: api::NarEncoding) -> Self {
        match encoding {
            api::NarEncoding::None => domain::NarEncoding::None,
            api::NarEncoding::Zstd => domain::NarEncoding::Zstd,
        }
    }
}

impl From<domain::SigningMode> for api::SigningMode {
    fn from(mode: domain::SigningMode) -> Self {
        match mode {
            domain::SigningMode::Server => api::SigningMode::Server,
            domain::SigningMode::Client => api::SigningMode::Client,
        }
    }
}

impl From<api::SigningMode> for domain::SigningMode {
    fn from(mode: api::SigningMode) -> Self {
        match mode {
            api::SigningMode::Server => domain::SigningMode::Server,
            api::SigningMode::Client => domain::SigningMode::Client,
        }
    }
}

impl From<domain::Account> for api::Account {
    fn from(account: domain::Account) -> Self {
        let domain::Account { username, email, created_at, .. } = account;
        api::Account { username: username.as_str().to_owned(), email: email.as_str().to_owned(), created_at }
    }
}

impl From<domain::Cache> for api::Cache {
    fn from(cache: domain::Cache) -> Self {
        let domain::Cache { name, public, priority, description, created_at, .. } = cache;
        api::Cache { name: name.as_str().to_owned(), public, priority, description, created_at }
    }
}

impl From<domain::SigningKey> for api::Key {
    fn from(key: domain::SigningKey) -> Self {
        let name = key.name().to_owned();
        let domain::SigningKey { public_key, active, created_at, .. } = key;
        api::Key { name, public_key: public_key.to_nix_string(), active, created_at }
    }
}

/// A token as the API shows it, its caches named from `caches` (those the caller sees).
fn token_view(caches: &[domain::Cache], token: domain::Token) -> api::Token {
    let name_of = |id: &domain::CacheId| caches.iter().find(|c| c.id == *id).map(|c| c.name.as_str().to_owned());
    let domain::Token { id, scope, permission, description, created_at, expires_at, revoked_at, last_used_at } = token;
    let (kind, cache, limited, limited_to) = match &scope {
        TokenScope::Cache(cache) => (api::TokenKind::Cache, name_of(cache), false, Vec::new()),
        TokenScope::Personal { caches: domain::CacheLimit::All, .. } => (api::TokenKind::Personal, None, false, Vec::new()),
        TokenScope::Personal { caches: domain::CacheLimit::Only(ids), .. } => {
            (api::TokenKind::Personal, None, true, ids.iter().filter_map(name_of).collect())
        }
        TokenScope::Session(_) => (api::TokenKind::Session, None, false, Vec::new()),
    };
    api::Token {
        id: id.as_str().to_owned(),
        kind,
        cache,
        limited,
        caches: limited_to,
        permission: permission.into(),
        description,
        created_at,
        expires_at,
        revoked_at,
        last_used_at,
    }
}

impl From<domain::GcPolicy> for api::GcPolicy {
    fn from(policy: domain::GcPolicy) -> Self {
        let domain::GcPolicy { keep_days, quota_bytes, quota_mode } = policy;
        let quota_mode = match quota_mode {
            domain::QuotaMode::Evict => api::QuotaMode::Evict,
            domain::QuotaMode::Refuse => api::QuotaMode::Refuse,
        };
        api::GcPolicy { keep_days, quota_bytes, quota_mode }
    }
}

impl From<api::GcPolicy> for domain::GcPolicy {
    fn from(policy: api::GcPolicy) -> Self {
        let api::GcPolicy { keep_days, quota_bytes, quota_mode } = policy;
        let quota_mode = match quota_mode {
            api::QuotaMode::Evict => domain::QuotaMode::Evict,
            api::QuotaMode::Refuse => domain::QuotaMode::Refuse,
        };
        domain::GcPolicy { keep_days, quota_bytes, quota_mode }
    }
}

impl From<CacheCollection> for api::GcPreview {
    fn from(collection: CacheCollection) -> Self {
        let paths = collection
            .paths
            .into_iter()
            .map(|path| api::CollectablePath {
                store_path: path.store_path,
                file_size: path.file_size,
                nar_size: path.nar_size,
                last_used_at: path.last_used_at,
                reason: match path.reason {
                    CollectReason::Retention => api::CollectReason::Retention,
                    CollectReason::Quota => api::CollectReason::Quota,
                },
            })
            .collect();
        api::GcPreview { path_count: collection.path_count, bytes_freed: collection.bytes_freed, paths }
    }
}

impl From<crate::db::CacheUsage> for api::Usage {
    fn from(usage: crate::db::CacheUsage) -> Self {
        let crate::db::CacheUsage { paths, stored_bytes, served_bytes_24h, served_bytes_30d, last_push_at, last_use_at } = usage;
        api::Usage { paths, stored_bytes, served_bytes_24h, served_bytes_30d, last_push_at, last_use_at }
    }
}

fn pin_view((newest, earlier): (domain::PinRevision, Vec<domain::PinRevision>)) -> api::Pin {
    api::Pin {
        store_path: newest.store_path.to_absolute(),
        pinned_at: newest.pinned_at,
        keep_revisions: newest.keep_revisions,
        keep_days: newest.keep_days,
        earlier: earlier.into_iter().map(|r| api::PinRevision { store_path: r.store_path.to_absolute(), pinned_at: r.pinned_at }).collect(),
        name: newest.name,
    }
}

// ---- requests: wire → service inputs -----------------------------------------------------

fn cache_name(name: &str) -> Result<CacheName, ServiceError> {
    CacheName::parse(name).map_err(ServiceError::BadRequest)
}

impl TryFrom<api::NewCache> for NewOwnedCache {
    type Error = ServiceError;

    fn try_from(request: api::NewCache) -> Result<Self, ServiceError> {
        let api::NewCache { name, public, priority, description } = request;
        Ok(NewOwnedCache { name: cache_name(&name)?, public, priority, description })
    }
}

impl From<api::CacheChanges> for CacheChanges {
    fn from(request: api::CacheChanges) -> Self {
        let api::CacheChanges { public, priority, description, compression } = request;
        CacheChanges { public, priority, description, compression: compression.map(Into::into) }
    }
}

impl TryFrom<api::NewToken> for TokenRequest {
    type Error = ServiceError;

    fn try_from(request: api::NewToken) -> Result<Self, ServiceError> {
        let api::NewToken { kind, cache, caches, permission, expires_in, description } = request;
        let target = match (kind, cache) {
            (api::TokenKind::Cache, Some(cache)) if caches.is_empty() => TokenTarget::Cache(cache_name(&cache)?),
            (api::TokenKind::Cache, _) => return Err(ServiceError::BadRequest("a cache token needs `cache` (and no `caches`)".into())),
            (api::TokenKind::Personal, None) => TokenTarget::Personal(caches.iter().map(|c| cache_name(c)).collect::<Result<_, _>>()?),
            (api::TokenKind::Personal, Some(_)) => {
                return Err(ServiceError::BadRequest("a personal token takes `caches`, not `cache`".into()))
            }
            (api::TokenKind::Session, _) => {
                return Err(ServiceError::BadRequest("a session is opened by logging in (POST /api/v1/sessions)".into()))
            }
        };
        Ok(TokenRequest { target, permission: permission.into(), expires_in: expires_in.map(Duration::from_secs), description })
    }
}

// ---- accounts and sessions -------------------------------------------------------------

pub async fn sign_up(services: web::Data<Services>, body: web::Json<api::SignUp>) -> ApiResult {
    let api::SignUp { username, email, password } = body.into_inner();
    let account = services.sign_up(&username, &email, &password).await?;
    Ok(HttpResponse::Created().json(api::Account::from(account)))
}

pub async fn log_in(services: web::Data<Services>, body: web::Json<api::LogIn>, req: HttpRequest) -> ApiResult {
    let client = req.peer_addr().map(|a| a.ip());
    let session = services.log_in(&body.username, &body.password, client).await?;
    Ok(HttpResponse::Created().json(api::SessionCreated { token: session.secret, expires_at: session.token.expires_at }))
}

pub async fn log_out(services: web::Data<Services>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.log_out(&principal).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn get_account(services: web::Data<Services>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    Ok(HttpResponse::Ok().json(api::Account::from(services.account(&principal).await?)))
}

pub async fn change_password(services: web::Data<Services>, credentials: Credentials, body: web::Json<api::ChangePassword>) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.change_password(&principal, &body.current_password, &body.new_password).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn delete_account(services: web::Data<Services>, credentials: Credentials, body: web::Json<api::Confirm>) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.delete_account(&principal, &body.confirm).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- caches ------------------------------------------------------------------------------

pub async fn list_caches(services: web::Data<Services>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let caches: Vec<api::Cache> = services.my_caches(&principal).await?.into_iter().map(api::Cache::from).collect();
    Ok(HttpResponse::Ok().json(caches))
}

pub async fn create_cache(services: web::Data<Services>, credentials: Credentials, body: web::Json<api::NewCache>) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let cache = services.create_owned_cache(&principal, body.into_inner().try_into()?).await?;
    Ok(HttpResponse::Created().json(api::Cache::from(cache)))
}

/// What a client needs to configure itself for a cache (visibility rules as on the
/// binary cache: an unknown cache and a private one without access answer alike).
pub async fn cache_info(
    services: web::Data<Services>,
    public_url: web::Data<PublicUrl>,
    cache: CachePath,
    credentials: Credentials,
    req: HttpRequest,
) -> ApiResult {
    let principal = services.authenticate(credentials.token()).await?;
    let cache = services.authorize(&cache.0, principal.as_ref(), Permission::Read).await?;
    let public_keys = services.trusted_public_keys(&cache).await?.iter().map(|k| k.to_nix_string()).collect();
    let substituter = format!("{}/{}", public_url.base(&req), cache.name);
    Ok(HttpResponse::Ok().json(api::CacheInfo {
        name: cache.name.as_str().to_owned(),
        public: cache.public,
        priority: cache.priority,
        compression: cache.compression.into(),
        public_keys,
        substituter,
    }))
}

pub async fn update_cache(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    body: web::Json<api::CacheChanges>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let cache = services.update_cache(&principal, &cache.0, body.into_inner().into()).await?;
    Ok(HttpResponse::Ok().json(api::Cache::from(cache)))
}

pub async fn delete_cache(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    body: web::Json<api::Confirm>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.delete_cache(&principal, &cache.0, &body.confirm).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- tokens ------------------------------------------------------------------------------

pub async fn list_tokens(services: web::Data<Services>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let caches = services.my_caches(&principal).await?;
    let views: Vec<api::Token> = services.my_tokens(&principal).await?.into_iter().map(|t| token_view(&caches, t)).collect();
    Ok(HttpResponse::Ok().json(views))
}

pub async fn create_token(services: web::Data<Services>, credentials: Credentials, body: web::Json<api::NewToken>) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let created = services.create_token_for(&principal, body.into_inner().try_into()?).await?;
    let caches = services.my_caches(&principal).await?;
    Ok(HttpResponse::Created().json(api::TokenCreated { token: token_view(&caches, created.token), secret: created.secret }))
}

pub async fn revoke_token(services: web::Data<Services>, credentials: Credentials, path: web::Path<String>) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.revoke_own_token(&principal, &TokenId::from_presented(&path)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Anything under /api/v1 that no route matches (path or method).
pub async fn unknown_route() -> ApiResult {
    Err(ServiceError::NotFound("no such API route (see openapi.yaml)".into()).into())
}

// ---- signing keys ------------------------------------------------------------------------

pub async fn list_keys(services: web::Data<Services>, cache: CachePath, credentials: Credentials) -> ApiResult {
    let principal = services.authenticate(credentials.token()).await?;
    let keys: Vec<api::Key> = services.list_keys(principal.as_ref(), &cache.0).await?.into_iter().map(api::Key::from).collect();
    Ok(HttpResponse::Ok().json(keys))
}

pub async fn add_key(services: web::Data<Services>, cache: CachePath, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    Ok(HttpResponse::Created().json(api::Key::from(services.add_key(&principal, &cache.0).await?)))
}

pub async fn retire_key(
    services: web::Data<Services>,
    cache: CachePath,
    path: web::Path<(String, String)>,
    credentials: Credentials,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.retire_key(&principal, &cache.0, &path.1).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn register_public_key(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    body: web::Json<api::NewPublicKey>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    Ok(HttpResponse::Created().json(api::Key::from(services.register_public_key(&principal, &cache.0, &body.public_key).await?)))
}

pub async fn import_secret_key(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    body: web::Json<api::NewSecretKey>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    Ok(HttpResponse::Created().json(api::Key::from(services.import_secret_key(&principal, &cache.0, &body.secret_key).await?)))
}

pub async fn set_signing_mode(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    body: web::Json<api::SetSigningMode>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let api::SetSigningMode { mode, drop_paths } = body.into_inner();
    services.set_signing_mode(&principal, &cache.0, mode.into(), drop_paths).await?;
    Ok(HttpResponse::Ok().json(api::SigningModeSet { mode }))
}

// ---- garbage collection, pins, paths, usage ----------------------------------------------

pub async fn get_gc_policy(services: web::Data<Services>, cache: CachePath, credentials: Credentials) -> ApiResult {
    let principal = services.authenticate(credentials.token()).await?;
    Ok(HttpResponse::Ok().json(api::GcPolicy::from(services.gc_policy(principal.as_ref(), &cache.0).await?)))
}

pub async fn set_gc_policy(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    body: web::Json<api::GcPolicy>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let policy = services.set_gc_policy(&principal, &cache.0, body.into_inner().into()).await?;
    Ok(HttpResponse::Ok().json(api::GcPolicy::from(policy)))
}

pub async fn preview_gc(services: web::Data<Services>, cache: CachePath, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    Ok(HttpResponse::Ok().json(api::GcPreview::from(services.gc_preview(&principal, &cache.0).await?)))
}

pub async fn list_pins(services: web::Data<Services>, cache: CachePath, credentials: Credentials) -> ApiResult {
    let principal = services.authenticate(credentials.token()).await?;
    let pins: Vec<api::Pin> = services.pins(principal.as_ref(), &cache.0).await?.into_iter().map(pin_view).collect();
    Ok(HttpResponse::Ok().json(pins))
}

pub async fn create_pin(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    body: web::Json<api::NewPin>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let api::NewPin { name, store_path, keep_revisions, keep_days } = body.into_inner();
    let pin = services.pin(&principal, &cache.0, &name, &store_path, (keep_revisions, keep_days)).await?;
    Ok(HttpResponse::Created().json(pin_view(pin)))
}

pub async fn delete_pin(
    services: web::Data<Services>,
    cache: CachePath,
    path: web::Path<(String, String)>,
    credentials: Credentials,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.unpin(&principal, &cache.0, &path.1).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The body is optional (`{"with_referrers": true}` to delete the referrers too).
pub async fn delete_path(
    services: web::Data<Services>,
    cache: CachePath,
    path: web::Path<(String, String)>,
    credentials: Credentials,
    body: web::Bytes,
) -> ApiResult {
    let request: api::DeletePath = if body.iter().all(u8::is_ascii_whitespace) {
        api::DeletePath::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ServiceError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let principal = caller(&services, &credentials).await?;
    let Ok(hash) = larder_protocol::binary_cache::parse_hash_part(&path.1) else {
        return Err(ServiceError::NotFound(format!("'{}' is not a store path hash", path.1)).into());
    };
    let deleted = services.delete_path(&principal, &cache.0, &hash, request.with_referrers).await?;
    Ok(HttpResponse::Ok().json(api::DeletedPaths { deleted }))
}

/// Up to 10,000 absolute store paths fit in a body this large.
const MAX_MISSING_PATHS_BODY: u64 = 2 * 1024 * 1024;

/// Read by hand: its body may be larger than other JSON bodies.
pub async fn missing_paths(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult {
    let principal = services.authenticate(credentials.token()).await?;
    let body = super::body::read_small(&req, payload, MAX_MISSING_PATHS_BODY).await?;
    let query: api::MissingPathsQuery =
        serde_json::from_slice(&body).map_err(|e| ServiceError::BadRequest(format!("invalid JSON body: {e}")))?;
    let missing = services.missing_paths(principal.as_ref(), &cache.0, &query.store_paths).await?;
    Ok(HttpResponse::Ok().json(api::MissingPaths { missing }))
}

pub async fn cache_usage(services: web::Data<Services>, cache: CachePath, credentials: Credentials) -> ApiResult {
    let principal = services.authenticate(credentials.token()).await?;
    Ok(HttpResponse::Ok().json(api::Usage::from(services.usage(principal.as_ref(), &cache.0).await?)))
}

pub async fn account_usage(services: web::Data<Services>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let mut total = api::Usage::default();
    let mut caches = Vec::new();
    for (cache, usage) in services.account_usage(&principal).await? {
        let usage = api::Usage::from(usage);
        total.paths += usage.paths;
        total.stored_bytes += usage.stored_bytes;
        total.served_bytes_24h += usage.served_bytes_24h;
        total.served_bytes_30d += usage.served_bytes_30d;
        total.last_push_at = total.last_push_at.max(usage.last_push_at);
        total.last_use_at = total.last_use_at.max(usage.last_use_at);
        caches.push(api::CacheUsage { cache: cache.name.as_str().to_owned(), usage });
    }
    Ok(HttpResponse::Ok().json(api::AccountUsage { total, caches }))
}

// ---- upload sessions --------------------------------------------------------------------

/// A new upload names up to 10,000 references: its body may be larger than other JSON bodies.
const MAX_NEW_UPLOAD_BODY: u64 = 2 * 1024 * 1024;

impl From<api::NewUpload> for UploadRequest {
    fn from(request: api::NewUpload) -> Self {
        let api::NewUpload { store_path, nar_hash, nar_size, references, deriver, ca, signatures, wire_compression, part_size } = request;
        UploadRequest {
            store_path,
            nar_hash,
            nar_size,
            references,
            deriver,
            ca,
            signatures,
            wire: wire_compression.map_or(domain::NarEncoding::None, Into::into),
            part_size,
        }
    }
}

fn upload_session_view(session: domain::UploadSession, parts: Vec<domain::UploadPart>) -> api::UploadSession {
    api::UploadSession {
        id: session.id,
        store_path: session.store_path.to_absolute(),
        wire_compression: session.wire.into(),
        part_size: session.part_size,
        expires_at: session.expires_at,
        parts: parts.into_iter().map(|p| api::UploadedPart { number: p.number, size: p.size }).collect(),
    }
}

/// Read by hand: its body may be larger than other JSON bodies.
pub async fn open_upload(
    services: web::Data<Services>,
    cache: CachePath,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let body = super::body::read_small(&req, payload, MAX_NEW_UPLOAD_BODY).await?;
    let request: api::NewUpload = serde_json::from_slice(&body).map_err(|e| ServiceError::BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(match services.open_upload(&principal, &cache.0, request.into()).await? {
        UploadAnswer::Present(store_path) => HttpResponse::Ok().json(api::UploadAnswer::Present { store_path: store_path.to_absolute() }),
        UploadAnswer::Open(session, parts) => HttpResponse::Created().json(api::UploadAnswer::Open(upload_session_view(*session, parts))),
    })
}

pub async fn get_upload(
    services: web::Data<Services>,
    cache: CachePath,
    path: web::Path<(String, String)>,
    credentials: Credentials,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let (session, parts) = services.upload_status(&principal, &cache.0, &path.1).await?;
    Ok(HttpResponse::Ok().json(upload_session_view(session, parts)))
}

pub async fn put_upload_part(
    services: web::Data<Services>,
    cache: CachePath,
    path: web::Path<(String, String, String)>,
    credentials: Credentials,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let number: u32 = path.2.parse().map_err(|_| ServiceError::BadRequest(format!("part number '{}' is not a number", path.2)))?;
    let _slot = services.upload_slot(&principal)?;
    let part = services
        .receive_part(&principal, &cache.0, &path.1, number, super::body::content_length(&req), super::body::stream(payload))
        .await?;
    Ok(HttpResponse::Ok().json(api::UploadedPart { number: part.number, size: part.size }))
}

pub async fn complete_upload(
    services: web::Data<Services>,
    cache: CachePath,
    path: web::Path<(String, String)>,
    credentials: Credentials,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let _slot = services.upload_slot(&principal)?;
    let completed = services.complete_upload(&principal, &cache.0, &path.1).await?;
    Ok(HttpResponse::Ok().json(api::CompletedUpload {
        store_path: completed.store_path.to_absolute(),
        url: completed.url,
        file_size: completed.file_size,
        nar_size: completed.nar_size,
    }))
}

pub async fn abort_upload(
    services: web::Data<Services>,
    cache: CachePath,
    path: web::Path<(String, String)>,
    credentials: Credentials,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.abort_upload(&principal, &cache.0, &path.1).await?;
    Ok(HttpResponse::NoContent().finish())
}
