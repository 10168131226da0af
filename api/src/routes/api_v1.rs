//! The REST API, `/api/v1` (contract: openapi.yaml). JSON in, JSON out; errors are
//! `{"error": code, "message": text}`.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::body::Credentials;
use super::errors::ApiError;
use crate::db::{CacheRow, TokenRow};
use crate::domain::Permission;
use crate::services::{CacheChanges, CacheInfo, ListedToken, Principal, ServiceError, Services, SigningMode, TokenRequest};
use crate::startup::PublicUrl;

type ApiResult = Result<HttpResponse, ApiError>;

/// JSON body errors (malformed, wrong content type, too large) in our error shape.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(64 * 1024).error_handler(|error, _req| {
        use actix_web::error::JsonPayloadError as E;
        let service_error = match &error {
            E::OverflowKnownLength { .. } | E::Overflow { .. } => ServiceError::PayloadTooLarge { limit: 64 * 1024 },
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

// ---- accounts and sessions -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    username: String,
    email: String,
    password: String,
}

pub async fn sign_up(services: web::Data<Services>, body: web::Json<SignUp>) -> ApiResult {
    let account = services.sign_up(&body.username, &body.email, &body.password).await?;
    Ok(HttpResponse::Created().json(account))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogIn {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct SessionCreated {
    token: String,
    expires_at: Option<i64>,
}

pub async fn log_in(services: web::Data<Services>, body: web::Json<LogIn>, req: HttpRequest) -> ApiResult {
    let client = req.peer_addr().map(|a| a.ip());
    let session = services.log_in(&body.username, &body.password, client).await?;
    Ok(HttpResponse::Created().json(SessionCreated { token: session.secret, expires_at: session.row.expires_at }))
}

pub async fn log_out(services: web::Data<Services>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.log_out(&principal).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn get_account(services: web::Data<Services>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    Ok(HttpResponse::Ok().json(services.account(&principal).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    current_password: String,
    new_password: String,
}

pub async fn change_password(services: web::Data<Services>, credentials: Credentials, body: web::Json<ChangePassword>) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.change_password(&principal, &body.current_password, &body.new_password).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    confirm: String,
}

pub async fn delete_account(services: web::Data<Services>, credentials: Credentials, body: web::Json<Confirm>) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.delete_account(&principal, &body.confirm).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- caches ------------------------------------------------------------------------------

#[derive(Serialize)]
struct CacheView {
    name: String,
    public: bool,
    priority: i64,
    description: String,
    created_at: i64,
}

impl From<CacheRow> for CacheView {
    fn from(row: CacheRow) -> Self {
        let public = row.is_public();
        let CacheRow { name, priority, description, created_at, .. } = row;
        Self { name, public, priority, description, created_at }
    }
}

pub async fn list_caches(services: web::Data<Services>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let caches: Vec<CacheView> = services.my_caches(&principal).await?.into_iter().map(CacheView::from).collect();
    Ok(HttpResponse::Ok().json(caches))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCache {
    name: String,
    public: bool,
    priority: Option<i64>,
    #[serde(default)]
    description: String,
}

pub async fn create_cache(services: web::Data<Services>, credentials: Credentials, body: web::Json<NewCache>) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let cache = services.create_owned_cache(&principal, &body.name, body.public, body.priority, &body.description).await?;
    Ok(HttpResponse::Created().json(CacheView::from(cache)))
}

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
) -> ApiResult {
    let principal = services.authenticate(credentials.token()).await?;
    let cache = services.authorize(&path, principal.as_ref(), Permission::Read).await?;
    let info = services.cache_info(&cache).await?;
    let substituter = format!("{}/{}", public_url.base(&req), cache.name);
    Ok(HttpResponse::Ok().json(CacheInfoResponse { info, substituter }))
}

pub async fn update_cache(
    services: web::Data<Services>,
    path: web::Path<String>,
    credentials: Credentials,
    body: web::Json<CacheChanges>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let cache = services.update_cache(&principal, &path, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(CacheView::from(cache)))
}

pub async fn delete_cache(
    services: web::Data<Services>,
    path: web::Path<String>,
    credentials: Credentials,
    body: web::Json<Confirm>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.delete_cache(&principal, &path, &body.confirm).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- tokens ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// "cache" (needs `cache`) or "personal" (optionally `caches`).
    kind: String,
    cache: Option<String>,
    #[serde(default)]
    caches: Vec<String>,
    permission: String,
    /// Lifetime in seconds; absent for no expiry.
    expires_in: Option<u64>,
    #[serde(default)]
    description: String,
}

#[derive(Serialize)]
struct TokenView {
    id: String,
    kind: String,
    cache: Option<String>,
    /// For personal tokens: true if it acts only on `caches` (which may have become empty
    /// when they were deleted: then it acts on nothing).
    limited: bool,
    caches: Vec<String>,
    permission: String,
    description: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

#[derive(Serialize)]
struct TokenCreated {
    #[serde(flatten)]
    view: TokenView,
    /// The token itself. Shown only in this response; Larder does not keep it.
    token: String,
}

/// A token as the API shows it, its caches named from `caches` (those the caller sees).
fn token_view(caches: &[CacheRow], token: ListedToken) -> TokenView {
    let name_of = |id: i64| caches.iter().find(|c| c.id == id).map(|c| c.name.clone());
    let ListedToken { row, limited_to } = token;
    let TokenRow { id, kind, cache_id, limited, permission, description, created_at, expires_at, revoked_at, last_used_at, .. } = row;
    TokenView {
        id,
        kind,
        cache: cache_id.and_then(name_of),
        limited: limited != 0,
        caches: limited_to.into_iter().filter_map(name_of).collect(),
        permission,
        description,
        created_at,
        expires_at,
        revoked_at,
        last_used_at,
    }
}

pub async fn list_tokens(services: web::Data<Services>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let caches = services.my_caches(&principal).await?;
    let views: Vec<TokenView> = services.my_tokens(&principal).await?.into_iter().map(|t| token_view(&caches, t)).collect();
    Ok(HttpResponse::Ok().json(views))
}

pub async fn create_token(services: web::Data<Services>, credentials: Credentials, body: web::Json<NewToken>) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let body = body.into_inner();
    let permission: Permission = body.permission.parse().map_err(ServiceError::BadRequest)?;
    let request = match (body.kind.as_str(), body.cache) {
        ("cache", Some(cache)) if body.caches.is_empty() => TokenRequest::Cache { cache },
        ("cache", _) => return Err(ServiceError::BadRequest("a cache token needs `cache` (and no `caches`)".into()).into()),
        ("personal", None) => TokenRequest::Personal { caches: body.caches },
        ("personal", Some(_)) => return Err(ServiceError::BadRequest("a personal token takes `caches`, not `cache`".into()).into()),
        (other, _) => return Err(ServiceError::BadRequest(format!("unknown token kind '{other}': expected cache or personal")).into()),
    };
    const TEN_YEARS: u64 = 10 * 366 * 24 * 3600;
    let expires_in = match body.expires_in {
        Some(secs) if secs > TEN_YEARS => return Err(ServiceError::BadRequest("expires_in is at most ten years".into()).into()),
        other => other.map(Duration::from_secs),
    };
    let created = services.create_token_for(&principal, request, permission, expires_in, &body.description).await?;
    let caches = services.my_caches(&principal).await?;
    let view = token_view(&caches, ListedToken { row: created.row, limited_to: created.limited_to });
    Ok(HttpResponse::build(StatusCode::CREATED).json(TokenCreated { view, token: created.secret }))
}

pub async fn revoke_token(services: web::Data<Services>, credentials: Credentials, path: web::Path<String>) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.revoke_own_token(&principal, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Anything under /api/v1 that no route matches (path or method).
pub async fn unknown_route() -> ApiResult {
    Err(ServiceError::NotFound("no such API route (see openapi.yaml)".into()).into())
}

// ---- signing keys ------------------------------------------------------------------------

pub async fn list_keys(services: web::Data<Services>, path: web::Path<String>, credentials: Credentials) -> ApiResult {
    let principal = services.authenticate(credentials.token()).await?;
    Ok(HttpResponse::Ok().json(services.list_keys(principal.as_ref(), &path).await?))
}

pub async fn add_key(services: web::Data<Services>, path: web::Path<String>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    Ok(HttpResponse::Created().json(services.add_key(&principal, &path).await?))
}

pub async fn retire_key(services: web::Data<Services>, path: web::Path<(String, String)>, credentials: Credentials) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    let (cache, key) = path.into_inner();
    services.retire_key(&principal, &cache, &key).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyBody {
    public_key: String,
}

pub async fn register_public_key(
    services: web::Data<Services>,
    path: web::Path<String>,
    credentials: Credentials,
    body: web::Json<PublicKeyBody>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    Ok(HttpResponse::Created().json(services.register_public_key(&principal, &path, &body.public_key).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyBody {
    secret_key: String,
}

pub async fn import_secret_key(
    services: web::Data<Services>,
    path: web::Path<String>,
    credentials: Credentials,
    body: web::Json<SecretKeyBody>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    Ok(HttpResponse::Created().json(services.import_secret_key(&principal, &path, &body.secret_key).await?))
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningModeBody {
    mode: SigningMode,
    #[serde(default)]
    drop_paths: bool,
}

pub async fn set_signing_mode(
    services: web::Data<Services>,
    path: web::Path<String>,
    credentials: Credentials,
    body: web::Json<SigningModeBody>,
) -> ApiResult {
    let principal = caller(&services, &credentials).await?;
    services.set_signing_mode(&principal, &path, body.mode, body.drop_paths).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "mode": body.mode })))
}
