//! The web dashboard: server-rendered pages (views in `larder-web`) over the same services
//! as the REST API. Here: reading forms, checking the form token, choosing the page and its
//! status, and turning domain values into what the pages show.
//!
//! Every cache page acts as the logged-in owner: another account's cache, public or not,
//! answers exactly like one that does not exist.

// `Result<_, HttpResponse>` is how a handler returns early with the page to show: the
// response is what it answers either way, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod session;

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use larder_protocol::store_path::StorePathHash;
use larder_web as views;
use larder_web::Template;
use serde::Deserialize;

pub use session::CookiePolicy;
use session::{Login, Visitor, PRESESSION_COOKIE, SESSION_COOKIE};

use crate::domain::{self, CacheName, NarEncoding, NewPassword, Permission, TokenId, TokenScope, Username};
use crate::services::{CacheChanges, NewOwnedCache, Principal, ServiceError, Services, TokenRequest, TokenTarget};
use crate::startup::PublicUrl;

/// What the dashboard needs of the server's settings.
#[derive(Clone)]
pub struct DashboardSettings {
    pub cookies: CookiePolicy,
    /// Per-cache host names (`{cache}.{base_domain}`), when configured.
    pub base_domain: Option<String>,
}

/// Paths per page in the path browser.
const PATHS_PER_PAGE: u32 = 50;
/// Paths shown under "Recent pushes".
const RECENT_PUSHES: u32 = 5;

/// Scripts and styles only from this server, no inline code, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

type Page = HttpResponse;

/// A handler's body: `Err` is a page shown early (a redirect to log in, "not found", …).
type Outcome = Result<Page, Page>;

/// The page a handler's body settled on, early or not.
async fn answer(body: impl std::future::Future<Output = Outcome>) -> Page {
    body.await.unwrap_or_else(|page| page)
}

/// Every dashboard route, for the one route table.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::FormConfig::default().limit(16 * 1024).error_handler(|error, _req| {
        let page = views::ErrorPage {
            chrome: views::Chrome::default(),
            title: "Bad form".into(),
            message: format!("The form could not be read: {error}."),
        };
        actix_web::error::InternalError::from_response(error, html(StatusCode::BAD_REQUEST, &page)).into()
    }))
    .route("/", web::get().to(landing))
    .route("/static/{asset}", web::get().to(asset))
    .route("/signup", web::get().to(sign_up_form))
    .route("/signup", web::post().to(sign_up))
    .route("/login", web::get().to(log_in_form))
    .route("/login", web::post().to(log_in))
    .route("/logout", web::post().to(log_out))
    .route("/caches", web::get().to(cache_list))
    .route("/caches/new", web::get().to(new_cache_form))
    .route("/caches/new", web::post().to(create_cache))
    .route("/caches/{cache}", web::get().to(cache_page))
    .route("/caches/{cache}/paths", web::get().to(path_list))
    .route("/caches/{cache}/paths/{hash}", web::get().to(path_page))
    .route("/caches/{cache}/paths/{hash}/delete", web::post().to(delete_path))
    .route("/caches/{cache}/tokens", web::get().to(tokens_page))
    .route("/caches/{cache}/tokens", web::post().to(create_cache_token))
    .route("/caches/{cache}/tokens/{id}/revoke", web::get().to(confirm_revoke_cache_token))
    .route("/caches/{cache}/tokens/{id}/revoke", web::post().to(revoke_cache_token))
    .route("/caches/{cache}/keys", web::get().to(keys_page))
    .route("/caches/{cache}/keys/rotate", web::post().to(rotate_key))
    .route("/caches/{cache}/keys/register", web::post().to(register_key))
    .route("/caches/{cache}/keys/mode", web::post().to(switch_signing_mode))
    .route("/caches/{cache}/keys/{key}/retire", web::post().to(retire_key))
    .route("/caches/{cache}/settings", web::get().to(settings_page))
    .route("/caches/{cache}/settings", web::post().to(save_settings))
    .route("/caches/{cache}/delete", web::post().to(delete_cache))
    .route("/account", web::get().to(account_page))
    .route("/account/password", web::post().to(change_password))
    .route("/account/tokens", web::post().to(create_personal_token))
    .route("/account/tokens/{id}/revoke", web::get().to(confirm_revoke_personal_token))
    .route("/account/tokens/{id}/revoke", web::post().to(revoke_personal_token))
    .route("/account/delete", web::post().to(delete_account));
}

// ---- responses ---------------------------------------------------------------------------

/// A rendered page with the dashboard's security headers.
fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => secured(HttpResponse::build(status)).content_type("text/html; charset=utf-8").body(body),
        Err(error) => {
            tracing::error!(%error, "could not render a dashboard page");
            secured(HttpResponse::InternalServerError()).content_type("text/plain; charset=utf-8").body("page could not be rendered\n")
        }
    }
}

fn secured(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        // Pages show secrets (a new token) and per-account data: never kept by caches.
        .insert_header((header::CACHE_CONTROL, "no-store"));
    builder
}

/// What a handler answers: a page for `visitor`, with the cookies it needs.
struct Reply<'a> {
    visitor: &'a Visitor,
    settings: &'a DashboardSettings,
}

impl Reply<'_> {
    fn page(&self, status: StatusCode, page: &impl Template) -> Page {
        let mut response = html(status, page);
        self.visitor.apply_cookies(&mut response, self.settings.cookies);
        response
    }

    fn ok(&self, page: &impl Template) -> Page {
        self.page(StatusCode::OK, page)
    }

    fn chrome(&self, flash: Option<String>) -> views::Chrome {
        views::Chrome { user: self.visitor.login.as_ref().map(|l| l.username.clone()), csrf: self.visitor.csrf_token(), flash }
    }

    fn error(&self, status: StatusCode, title: &str, message: impl Into<String>) -> Page {
        self.page(status, &views::ErrorPage { chrome: self.chrome(None), title: title.into(), message: message.into() })
    }

    fn not_found(&self) -> Page {
        self.error(StatusCode::NOT_FOUND, "Not found", "There is no such page, or it is not yours.")
    }

    fn form_expired(&self) -> Page {
        self.error(
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form was not sent from this dashboard, or your session changed since it was shown. Nothing was changed: go back, reload the page and send it again.",
        )
    }

    /// The page for a failure no form field explains.
    fn failure(&self, error: ServiceError) -> Page {
        match error {
            ServiceError::NotFound(_) | ServiceError::Unauthorized(_) | ServiceError::Forbidden { .. } => self.not_found(),
            ServiceError::TooManyRequests { message, .. } => self.error(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", message),
            ServiceError::Internal(error) => {
                tracing::error!(error = ?error, "dashboard request failed");
                self.error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The server could not do this. Try again in a moment.",
                )
            }
            other => self.error(StatusCode::BAD_REQUEST, "Not done", other.to_string()),
        }
    }
}

/// `303 See Other` to `location` (after a form: reloading the result does not resend it).
fn redirect(location: &str) -> HttpResponse {
    secured(HttpResponse::SeeOther()).insert_header((header::LOCATION, location)).finish()
}

/// A one-line notice after a redirect, chosen from a fixed list (nothing of the URL is shown).
fn flash(req: &HttpRequest) -> Option<String> {
    #[derive(Deserialize)]
    struct Done {
        done: Option<String>,
    }
    let done = web::Query::<Done>::from_query(req.query_string()).ok()?.into_inner().done?;
    let message = match done.as_str() {
        "welcome" => "Welcome to Larder. Create your first cache.",
        "cache-created" => "Cache created. Paste the settings below on your machines.",
        "token-revoked" => "Token revoked: it no longer works anywhere.",
        "path-deleted" => "Path deleted.",
        "settings-saved" => "Settings saved.",
        "key-rotated" => "New key added: it signs every path pushed from now on.",
        "key-retired" => "Key retired.",
        "key-registered" => "Public key registered.",
        "mode-switched" => "Signing mode switched.",
        "password-changed" => "Password changed.",
        "cache-deleted" => "Cache deleted.",
        _ => return None,
    };
    Some(message.to_owned())
}

// ---- the visitor -------------------------------------------------------------------------

/// The request's visitor, and how to answer them.
struct Request {
    visitor: Visitor,
    settings: DashboardSettings,
}

impl Request {
    async fn open(req: &HttpRequest, services: &Services, settings: &DashboardSettings) -> Self {
        Self { visitor: Visitor::of(req, services).await, settings: settings.clone() }
    }

    fn reply(&self) -> Reply<'_> {
        Reply { visitor: &self.visitor, settings: &self.settings }
    }

    /// The login, or the redirect to the log-in page (forgetting a session that ended).
    fn login(&self) -> Result<&Login, Page> {
        self.visitor.login.as_ref().ok_or_else(|| {
            let mut response = redirect("/login");
            self.visitor.apply_cookies(&mut response, self.settings.cookies);
            response
        })
    }

    /// The login of a form's sender, whose form token must match.
    fn form_login(&self, csrf: &str) -> Result<&Login, Page> {
        if !self.visitor.csrf_matches(csrf) {
            return Err(self.reply().form_expired());
        }
        self.login()
    }
}

type Deps = (web::Data<Services>, web::Data<DashboardSettings>, web::Data<PublicUrl>);

/// A cache of the logged-in account, by the name in the URL; anything else is "not found".
async fn own_cache(services: &Services, request: &Request, login: &Login, name: &str) -> Result<domain::Cache, Page> {
    let name = CacheName::parse(name).map_err(|_| request.reply().not_found())?;
    services.authorize(&name, Some(&login.principal), Permission::Admin).await.map_err(|_| request.reply().not_found())
}

fn cache_header(cache: &domain::Cache, tab: views::CacheTab) -> views::CacheHeader {
    views::CacheHeader { name: cache.name.as_str().to_owned(), public: cache.public, tab }
}

// ---- landing, assets ---------------------------------------------------------------------

async fn landing(req: HttpRequest, (services, settings, _): Deps) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    let reply = request.reply();
    reply.ok(&views::LandingPage { chrome: reply.chrome(None) })
}

async fn asset(path: web::Path<String>) -> HttpResponse {
    match views::asset(&path) {
        Some(asset) => HttpResponse::Ok()
            .content_type(asset.content_type)
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .body(asset.body),
        None => HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("not found\n"),
    }
}

// ---- sign up, log in, log out ------------------------------------------------------------

#[derive(Deserialize)]
struct SignUpForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn sign_up_form(req: HttpRequest, (services, settings, _): Deps) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    let reply = request.reply();
    reply.ok(&views::SignUpPage {
        chrome: reply.chrome(None),
        username: Default::default(),
        email: Default::default(),
        password_error: None,
        form_error: None,
        password_hint: password_hint(),
    })
}

async fn sign_up(req: HttpRequest, (services, settings, _): Deps, form: web::Form<SignUpForm>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    let reply = request.reply();
    let form = form.into_inner();
    if !request.visitor.csrf_matches(&form.csrf) {
        return reply.form_expired();
    }
    // Each field's own rule, for a message next to it (the service checks them again).
    let mut username = views::Field::new(form.username.trim());
    let mut email = views::Field::new(form.email.trim());
    let username_ok = Username::parse(&username.value).map_err(|e| username.error = Some(e)).ok();
    let _ = domain::Email::parse(&email.value).map_err(|e| email.error = Some(e));
    let mut password_error = username_ok.and_then(|name| NewPassword::parse(&form.password, name.as_str()).err());
    if username.error.is_some() && password_error.is_none() {
        password_error = NewPassword::parse(&form.password, "").err();
    }
    let mut form_error = None;
    if username.error.is_none() && email.error.is_none() && password_error.is_none() {
        match services.sign_up(&username.value, &email.value, &form.password).await {
            Ok(_) => return start_session(&req, &request, &services, &username.value, &form.password, "/caches?done=welcome").await,
            Err(ServiceError::Conflict(message)) if message.contains("username") => {
                username.error = Some(format!("“{}” is already taken: choose another username", username.value))
            }
            Err(ServiceError::Conflict(message)) => email.error = Some(message),
            Err(ServiceError::BadRequest(message)) => form_error = Some(message),
            Err(other) => return reply.failure(other),
        }
    }
    let page =
        views::SignUpPage { chrome: reply.chrome(None), username, email, password_error, form_error, password_hint: password_hint() };
    reply.page(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

fn password_hint() -> String {
    format!("At least {} characters; not your username, not one character repeated.", domain::MIN_PASSWORD_CHARS)
}

#[derive(Deserialize)]
struct LogInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn log_in_form(req: HttpRequest, (services, settings, _): Deps) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    let reply = request.reply();
    reply.ok(&views::LogInPage { chrome: reply.chrome(None), username: Default::default(), form_error: None })
}

async fn log_in(req: HttpRequest, (services, settings, _): Deps, form: web::Form<LogInForm>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    if !request.visitor.csrf_matches(&form.csrf) {
        return request.reply().form_expired();
    }
    start_session(&req, &request, &services, form.username.trim(), &form.password, "/caches").await
}

/// Logs in and sends the browser on with a new session cookie (never the one it came
/// with: the session id is renewed at every log-in).
async fn start_session(req: &HttpRequest, request: &Request, services: &Services, username: &str, password: &str, then: &str) -> Page {
    let settings = &request.settings;
    let reply = request.reply();
    let client = req.peer_addr().map(|a| a.ip());
    match services.log_in(username, password, client).await {
        Ok(session) => {
            if let Some(old) = &request.visitor.login {
                let _ = services.log_out(&old.principal).await;
            }
            let mut response = redirect(then);
            let _ = response.add_cookie(&settings.cookies.session(session.secret));
            let _ = response.add_cookie(&settings.cookies.removal(PRESESSION_COOKIE));
            response
        }
        Err(ServiceError::Unauthorized(_)) => {
            let page = views::LogInPage {
                chrome: reply.chrome(None),
                username: views::Field::new(username),
                form_error: Some("Wrong username or password.".into()),
            };
            reply.page(StatusCode::UNAUTHORIZED, &page)
        }
        Err(ServiceError::TooManyRequests { message, .. }) => {
            let page = views::LogInPage {
                chrome: reply.chrome(None),
                username: views::Field::new(username),
                form_error: Some(format!("Too many attempts: {message}.")),
            };
            reply.page(StatusCode::TOO_MANY_REQUESTS, &page)
        }
        Err(other) => reply.failure(other),
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn log_out(req: HttpRequest, (services, settings, _): Deps, form: web::Form<CsrfOnly>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let login = request.form_login(&form.csrf)?;
        if let Err(error) = services.log_out(&login.principal).await {
            return Ok(request.reply().failure(error));
        }
        let mut response = redirect("/");
        let _ = response.add_cookie(&settings.cookies.removal(SESSION_COOKIE));
        Ok(response)
    })
    .await
}

// ---- caches ------------------------------------------------------------------------------

async fn cache_list(req: HttpRequest, (services, settings, _): Deps) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let reply = request.reply();
        let login = request.login()?;
        let usage = services.account_usage(&login.principal).await.map_err(|error| request.reply().failure(error))?;
        let caches = usage
            .into_iter()
            .map(|(cache, usage)| views::CacheRow {
                name: cache.name.as_str().to_owned(),
                public: cache.public,
                paths: usage.paths,
                stored: views::bytes(usage.stored_bytes),
                last_push: usage.last_push_at.map_or_else(|| "never".to_owned(), views::timestamp),
            })
            .collect();
        Ok(reply.ok(&views::CacheListPage { chrome: reply.chrome(flash(&req)), caches }))
    })
    .await
}

#[derive(Deserialize)]
struct NewCacheForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    visibility: String,
    #[serde(default)]
    signing: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    description: String,
}

const CACHE_NAME_RULES: &str = "2 to 63 characters: a-z, 0-9 and '-', not starting or ending with '-'. It is part of the cache's URL.";

async fn new_cache_form(req: HttpRequest, (services, settings, _): Deps) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    let reply = request.reply();
    if let Err(page) = request.login() {
        return page;
    }
    reply.ok(&views::NewCachePage {
        chrome: reply.chrome(None),
        name: Default::default(),
        public: false,
        client_signing: false,
        priority: views::Field::new(services.limits().default_priority.to_string()),
        description: Default::default(),
        form_error: None,
        name_rules: CACHE_NAME_RULES,
    })
}

/// A priority as typed in a form: empty means the default.
fn parse_priority(text: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>()
        .ok()
        .filter(|p| (0..=10_000).contains(p))
        .map(Some)
        .ok_or_else(|| "priority must be a whole number from 0 to 10000".into())
}

async fn create_cache(req: HttpRequest, (services, settings, _): Deps, form: web::Form<NewCacheForm>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let reply = request.reply();
        let form = form.into_inner();
        let login = request.form_login(&form.csrf)?;
        let public = form.visibility == "public";
        let client_signing = form.signing == "client";
        let mut name = views::Field::new(form.name.trim());
        let mut priority = views::Field::new(form.priority.trim());
        let parsed_name = CacheName::parse(&name.value).map_err(|e| name.error = Some(e)).ok();
        let parsed_priority = parse_priority(&priority.value).map_err(|e| priority.error = Some(e)).ok();
        let mut form_error = None;
        if let (Some(cache_name), Some(priority)) = (parsed_name, parsed_priority) {
            let new = NewOwnedCache { name: cache_name.clone(), public, priority, description: form.description.trim().to_owned() };
            match services.create_owned_cache(&login.principal, new).await {
                Ok(cache) => {
                    if client_signing {
                        if let Err(error) =
                            services.set_signing_mode(&login.principal, &cache.name, domain::SigningMode::Client, false).await
                        {
                            return Ok(reply.failure(error));
                        }
                    }
                    return Ok(redirect(&format!("/caches/{}?done=cache-created", cache.name)));
                }
                Err(ServiceError::Conflict(_)) => name.error = Some(format!("the name “{}” is taken: choose another", name.value)),
                Err(ServiceError::BadRequest(message)) => form_error = Some(message),
                Err(other) => return Ok(reply.failure(other)),
            }
        }
        let page = views::NewCachePage {
            chrome: reply.chrome(None),
            name,
            public,
            client_signing,
            priority,
            description: views::Field::new(form.description),
            form_error,
            name_rules: CACHE_NAME_RULES,
        };
        Ok(reply.page(StatusCode::UNPROCESSABLE_ENTITY, &page))
    })
    .await
}

/// The substituter URL of a cache and the host nix matches netrc lines against.
fn substituter_of(cache: &CacheName, req: &HttpRequest, public_url: &PublicUrl, settings: &DashboardSettings) -> (String, String) {
    let base = public_url.base(req);
    let parsed = url::Url::parse(&base).ok();
    let host = parsed.as_ref().and_then(|u| u.host_str()).unwrap_or("localhost").to_owned();
    match (&settings.base_domain, &parsed) {
        (Some(domain), Some(url)) => {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            let cache_host = format!("{cache}.{domain}");
            (format!("{}://{cache_host}{port}", url.scheme()), cache_host)
        }
        _ => (format!("{base}/{cache}"), host),
    }
}

fn path_row(path: &domain::PublishedPath, pushed_at: i64) -> views::PathRow {
    views::PathRow {
        hash: path.store_path.hash().as_str().to_owned(),
        base_name: path.store_path.base_name(),
        nar_size: views::bytes(path.nar.nar_size),
        pushed: views::timestamp(pushed_at),
    }
}

async fn cache_page(req: HttpRequest, (services, settings, public_url): Deps, name: web::Path<String>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let reply = request.reply();
        let login = request.login()?;
        let cache = own_cache(&services, &request, login, &name).await?;
        let principal = Some(&login.principal);
        let loaded = async {
            let keys = services.trusted_public_keys(&cache).await?;
            let usage = services.usage(principal, &cache.name).await?;
            let recent = services.browse_paths(principal, &cache.name, "", 0, RECENT_PUSHES).await?;
            Ok::<_, ServiceError>((keys, usage, recent))
        };
        let (keys, usage, recent) = loaded.await.map_err(|error| request.reply().failure(error))?;
        let public_keys: Vec<String> = keys.iter().map(|k| k.to_nix_string()).collect();
        let (substituter, netrc_host) = substituter_of(&cache.name, &req, &public_url, &settings);
        let client_signing = cache.signing_mode == domain::SigningMode::Client;
        let server = public_url.base(&req);
        let snippets = views::SetupSnippets::new(&views::SnippetInput {
            server: &server,
            cache: cache.name.as_str(),
            substituter: &substituter,
            netrc_host: &netrc_host,
            public_keys: &public_keys,
            public: cache.public,
            client_signing,
        });
        Ok(reply.ok(&views::CachePage {
            chrome: reply.chrome(flash(&req)),
            header: cache_header(&cache, views::CacheTab::Overview),
            description: cache.description.clone(),
            substituter,
            public_keys,
            client_signing,
            snippets,
            paths: usage.paths,
            stored: views::bytes(usage.stored_bytes),
            last_push: usage.last_push_at.map_or_else(|| "never".to_owned(), views::timestamp),
            recent: recent.paths.iter().map(|(path, pushed)| path_row(path, *pushed)).collect(),
        }))
    })
    .await
}

// ---- paths -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct PathQuery {
    #[serde(default)]
    q: String,
    /// 1-based.
    #[serde(default)]
    page: Option<u32>,
}

async fn path_list(req: HttpRequest, (services, settings, public_url): Deps, name: web::Path<String>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let reply = request.reply();
        let login = request.login()?;
        let cache = own_cache(&services, &request, login, &name).await?;
        let query = web::Query::<PathQuery>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or(PathQuery { q: String::new(), page: None });
        let page = query.page.unwrap_or(1).max(1);
        let found = match services.browse_paths(Some(&login.principal), &cache.name, &query.q, page - 1, PATHS_PER_PAGE).await {
            Ok(found) => found,
            Err(ServiceError::BadRequest(message)) => return Err(reply.error(StatusCode::BAD_REQUEST, "Search too long", message)),
            Err(error) => return Ok(reply.failure(error)),
        };
        let page_url = |n: u32| {
            let q: String = url::form_urlencoded::byte_serialize(query.q.trim().as_bytes()).collect();
            format!("/caches/{}/paths?q={q}&page={n}", cache.name)
        };
        let (substituter, _) = substituter_of(&cache.name, &req, &public_url, &settings);
        Ok(reply.ok(&views::PathListPage {
            chrome: reply.chrome(flash(&req)),
            header: cache_header(&cache, views::CacheTab::Paths),
            query: query.q.trim().to_owned(),
            rows: found.paths.iter().map(|(path, pushed)| path_row(path, *pushed)).collect(),
            page,
            previous_url: (page > 1).then(|| page_url(page - 1)),
            next_url: found.has_more.then(|| page_url(page + 1)),
            push_hint: views::push_command(&substituter, cache.signing_mode == domain::SigningMode::Client).trim().to_owned(),
        }))
    })
    .await
}

async fn path_page(req: HttpRequest, (services, settings, _): Deps, path: web::Path<(String, String)>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    let (name, hash) = path.into_inner();
    show_path(&request, &services, &name, &hash, flash(&req), None).await
}

/// The page of one path, with an error above its fields when an action on it failed.
async fn show_path(request: &Request, services: &Services, name: &str, hash: &str, flash: Option<String>, error: Option<String>) -> Page {
    answer(async {
        let reply = request.reply();
        let login = request.login()?;
        let cache = own_cache(services, request, login, name).await?;
        let Ok(hash) = StorePathHash::parse(hash) else { return Err(reply.not_found()) };
        let details =
            services.path_details(Some(&login.principal), &cache.name, &hash).await.map_err(|error| request.reply().failure(error))?;
        let path = &details.path;
        let references = path
            .references
            .iter()
            .map(|r| views::Reference {
                base_name: r.base_name(),
                url: details.held_references.contains(r.hash()).then(|| format!("/caches/{}/paths/{}", cache.name, r.hash())),
            })
            .collect();
        let status = if error.is_some() { StatusCode::CONFLICT } else { StatusCode::OK };
        let page = views::PathPage {
            chrome: reply.chrome(flash),
            header: cache_header(&cache, views::CacheTab::Paths),
            hash: hash.as_str().to_owned(),
            store_path: path.store_path.to_absolute(),
            nar_hash: format!("sha256:{}", path.nar.nar_hash.to_nix32()),
            nar_size: format!("{} ({} bytes)", views::bytes(path.nar.nar_size), path.nar.nar_size),
            file_size: format!("{} ({} bytes)", views::bytes(path.nar.file_size), path.nar.file_size),
            compression: path.nar.compression.name().to_owned(),
            deriver: path.deriver.as_ref().map(|d| d.base_name()),
            ca: path.ca.clone(),
            references,
            signatures: path.signatures.iter().map(|s| s.to_nix_string()).collect(),
            pushed: views::timestamp(details.pushed_at),
            form_error: error,
        };
        Ok(reply.page(status, &page))
    })
    .await
}

async fn delete_path(
    req: HttpRequest,
    (services, settings, _): Deps,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfOnly>,
) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let (name, hash) = path.into_inner();
        let login = request.form_login(&form.csrf)?;
        let cache = own_cache(&services, &request, login, &name).await?;
        let Ok(parsed) = StorePathHash::parse(&hash) else { return Err(request.reply().not_found()) };
        Ok(match services.delete_path(&login.principal, &cache.name, &parsed, false).await {
            Ok(_) => redirect(&format!("/caches/{}/paths?done=path-deleted", cache.name)),
            Err(ServiceError::Conflict(message)) => {
                // The API's hint (with_referrers) means nothing here.
                let message = message.split(": delete those first").next().unwrap_or(&message).to_owned();
                show_path(
                    &request,
                    &services,
                    &name,
                    &hash,
                    None,
                    Some(format!("Not deleted: {message}. Delete the paths that refer to it first.")),
                )
                .await
            }
            Err(error) => request.reply().failure(error),
        })
    })
    .await
}

// ---- tokens ------------------------------------------------------------------------------

#[derive(Deserialize)]
struct TokenFormData {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    permission: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    expires: String,
}

impl TokenFormData {
    /// The permission and lifetime chosen, or the form with what is wrong with it.
    fn parse(&self) -> Result<(Permission, Option<Duration>), views::TokenForm> {
        let permission = match self.permission.as_str() {
            "read" => Some(Permission::Read),
            "write" => Some(Permission::Write),
            "admin" => Some(Permission::Admin),
            _ => None,
        };
        let day = 24 * 3600;
        let expires = match self.expires.as_str() {
            "never" => Some(None),
            "1d" => Some(Some(Duration::from_secs(day))),
            "30d" => Some(Some(Duration::from_secs(30 * day))),
            "90d" => Some(Some(Duration::from_secs(90 * day))),
            "365d" => Some(Some(Duration::from_secs(365 * day))),
            _ => None,
        };
        let description = self.description.trim();
        match (permission, expires) {
            (Some(permission), Some(expires)) if description.chars().count() <= 200 => Ok((permission, expires)),
            _ => {
                Err(self
                    .redisplay(Some("Choose a permission and an expiry from the lists; the description is at most 200 characters.".into())))
            }
        }
    }

    fn redisplay(&self, form_error: Option<String>) -> views::TokenForm {
        views::TokenForm {
            permission: self.permission.clone(),
            description: views::Field::new(self.description.trim()),
            expires: self.expires.clone(),
            form_error,
        }
    }
}

fn token_row(token: &domain::Token, revoke_url: String, reach: Option<String>) -> views::TokenRow {
    views::TokenRow {
        id: token.id.as_str().to_owned(),
        description: if token.description.is_empty() { "(no description)".into() } else { token.description.clone() },
        permission: token.permission.as_str().to_owned(),
        reach,
        created: views::timestamp(token.created_at),
        expires: token.expires_at.map_or_else(|| "never".to_owned(), views::timestamp),
        last_used: token.last_used_at.map_or_else(|| "never".to_owned(), views::timestamp),
        revoke_url,
    }
}

/// The live (unrevoked) tokens of the account that `keep` selects.
async fn live_tokens(
    services: &Services,
    principal: &Principal,
    keep: impl Fn(&TokenScope) -> bool,
) -> Result<Vec<domain::Token>, ServiceError> {
    Ok(services.my_tokens(principal).await?.into_iter().filter(|t| t.revoked_at.is_none() && keep(&t.scope)).collect())
}

async fn tokens_page(req: HttpRequest, (services, settings, public_url): Deps, name: web::Path<String>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    show_tokens(&req, &request, &services, &public_url, &name, None, views::TokenForm::default(), StatusCode::OK).await
}

#[allow(clippy::too_many_arguments)]
async fn show_tokens(
    req: &HttpRequest,
    request: &Request,
    services: &Services,
    public_url: &PublicUrl,
    name: &str,
    new_token: Option<(String, Permission)>,
    form: views::TokenForm,
    status: StatusCode,
) -> Page {
    answer(async {
        let reply = request.reply();
        let login = request.login()?;
        let cache = own_cache(services, request, login, name).await?;
        let tokens = live_tokens(services, &login.principal, |scope| *scope == TokenScope::Cache(cache.id))
            .await
            .map_err(|error| request.reply().failure(error))?;
        let (substituter, host) = substituter_of(&cache.name, req, public_url, &request.settings);
        let new_token = new_token.map(|(secret, permission)| views::NewToken {
            netrc: Some(views::netrc_line(&host, &secret)),
            push: permission
                .allows(Permission::Write)
                .then(|| views::push_command(&substituter, cache.signing_mode == domain::SigningMode::Client)),
            secret,
        });
        let rows = tokens.iter().map(|t| token_row(t, format!("/caches/{}/tokens/{}/revoke", cache.name, t.id), None)).collect();
        let page = views::TokensPage {
            chrome: reply.chrome(flash(req)),
            header: cache_header(&cache, views::CacheTab::Tokens),
            tokens: rows,
            new_token,
            form,
        };
        Ok(reply.page(status, &page))
    })
    .await
}

async fn create_cache_token(
    req: HttpRequest,
    (services, settings, public_url): Deps,
    name: web::Path<String>,
    form: web::Form<TokenFormData>,
) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let login = request.form_login(&form.csrf)?;
        let cache = own_cache(&services, &request, login, &name).await?;
        let (permission, expires_in) = match form.parse() {
            Ok(parsed) => parsed,
            Err(shown) => {
                return Err(show_tokens(&req, &request, &services, &public_url, &name, None, shown, StatusCode::UNPROCESSABLE_ENTITY).await);
            }
        };
        let token_request = TokenRequest {
            target: TokenTarget::Cache(cache.name.clone()),
            permission,
            expires_in,
            description: form.description.trim().to_owned(),
        };
        Ok(match services.create_token_for(&login.principal, token_request).await {
            Ok(created) => {
                let shown = Some((created.secret, permission));
                show_tokens(&req, &request, &services, &public_url, &name, shown, views::TokenForm::default(), StatusCode::OK).await
            }
            Err(ServiceError::BadRequest(message)) => {
                show_tokens(
                    &req,
                    &request,
                    &services,
                    &public_url,
                    &name,
                    None,
                    form.redisplay(Some(message)),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await
            }
            Err(error) => request.reply().failure(error),
        })
    })
    .await
}

/// The confirmation page before a token is revoked; `None` when it is not one of `tokens`.
fn revoke_confirmation(reply: &Reply<'_>, tokens: &[domain::Token], id: &str, action_url: String, cancel_url: String) -> Page {
    let Some(token) = tokens.iter().find(|t| t.id.as_str() == id) else { return reply.not_found() };
    let what = if token.description.is_empty() {
        format!("the {} token", token.permission.as_str())
    } else {
        format!("the token “{}”", token.description)
    };
    reply.ok(&views::ConfirmPage {
        chrome: reply.chrome(None),
        title: "Revoke token".into(),
        question: format!("Revoke {what}? Every machine that uses it is refused from now on. This cannot be undone."),
        action_url,
        button: "Revoke token".into(),
        cancel_url,
    })
}

async fn confirm_revoke_cache_token(req: HttpRequest, (services, settings, _): Deps, path: web::Path<(String, String)>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let reply = request.reply();
        let (name, id) = path.into_inner();
        let login = request.login()?;
        let cache = own_cache(&services, &request, login, &name).await?;
        Ok(match live_tokens(&services, &login.principal, |scope| *scope == TokenScope::Cache(cache.id)).await {
            Ok(tokens) => {
                let base = format!("/caches/{}/tokens", cache.name);
                revoke_confirmation(&reply, &tokens, &id, format!("{base}/{id}/revoke"), base)
            }
            Err(error) => reply.failure(error),
        })
    })
    .await
}

async fn revoke_cache_token(
    req: HttpRequest,
    (services, settings, _): Deps,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfOnly>,
) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let (name, id) = path.into_inner();
        let login = request.form_login(&form.csrf)?;
        let cache = own_cache(&services, &request, login, &name).await?;
        Ok(revoke(
            &request,
            &services,
            login,
            &id,
            |scope| *scope == TokenScope::Cache(cache.id),
            &format!("/caches/{}/tokens", cache.name),
        )
        .await)
    })
    .await
}

/// Revokes token `id` if it is one of the live tokens `keep` selects, then goes `back`.
async fn revoke(request: &Request, services: &Services, login: &Login, id: &str, keep: impl Fn(&TokenScope) -> bool, back: &str) -> Page {
    answer(async {
        let tokens = live_tokens(services, &login.principal, keep).await.map_err(|error| request.reply().failure(error))?;
        if !tokens.iter().any(|t| t.id.as_str() == id) {
            return Ok(request.reply().not_found());
        }
        Ok(match services.revoke_own_token(&login.principal, &TokenId::from_presented(id)).await {
            Ok(()) => redirect(&format!("{back}?done=token-revoked")),
            Err(error) => request.reply().failure(error),
        })
    })
    .await
}

// ---- keys --------------------------------------------------------------------------------

async fn keys_page(req: HttpRequest, (services, settings, _): Deps, name: web::Path<String>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    show_keys(&request, &services, &name, flash(&req), views::Field::default(), None).await
}

async fn show_keys(
    request: &Request,
    services: &Services,
    name: &str,
    flash: Option<String>,
    public_key: views::Field,
    error: Option<String>,
) -> Page {
    answer(async {
        let reply = request.reply();
        let login = request.login()?;
        let cache = own_cache(services, request, login, name).await?;
        let loaded = async {
            let keys = services.list_keys(Some(&login.principal), &cache.name).await?;
            let usage = services.usage(Some(&login.principal), &cache.name).await?;
            Ok::<_, ServiceError>((keys, usage.paths))
        };
        let (keys, paths) = loaded.await.map_err(|error| request.reply().failure(error))?;
        let client_signing = cache.signing_mode == domain::SigningMode::Client;
        // Only the keys of the current mode: a client-held cache's retired server key (made
        // when the cache was) is none of its owner's business.
        let rows: Vec<views::KeyRow> = keys
            .iter()
            .filter(|k| k.secret.is_none() == client_signing)
            .map(|k| views::KeyRow {
                name: k.name().to_owned(),
                public_key: k.public_key.to_nix_string(),
                active: k.active,
                created: views::timestamp(k.created_at),
            })
            .collect();
        let status = if error.is_some() || public_key.error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
        let page = views::KeysPage {
            chrome: reply.chrome(flash),
            header: cache_header(&cache, views::CacheTab::Keys),
            client_signing,
            active_count: rows.iter().filter(|k| k.active).count(),
            keys: rows,
            paths,
            public_key,
            form_error: error,
        };
        Ok(reply.page(status, &page))
    })
    .await
}

/// Runs a key action for the form's sender on their cache; on success goes back to the
/// keys page with `done`, on a refusal shows it there.
async fn key_action<F, Fut>(
    req: &HttpRequest,
    services: &Services,
    settings: &DashboardSettings,
    name: &str,
    csrf: &str,
    done: &str,
    action: F,
) -> Page
where
    F: FnOnce(Principal, CacheName) -> Fut,
    Fut: std::future::Future<Output = Result<(), ServiceError>>,
{
    let request = Request::open(req, services, settings).await;
    answer(async {
        let login = request.form_login(csrf)?;
        let cache = own_cache(services, &request, login, name).await?;
        Ok(match action(login.principal.clone(), cache.name.clone()).await {
            Ok(()) => redirect(&format!("/caches/{}/keys?done={done}", cache.name)),
            Err(ServiceError::BadRequest(message) | ServiceError::Conflict(message)) => {
                show_keys(&request, services, name, None, views::Field::default(), Some(message)).await
            }
            Err(error) => request.reply().failure(error),
        })
    })
    .await
}

async fn rotate_key(req: HttpRequest, (services, settings, _): Deps, name: web::Path<String>, form: web::Form<CsrfOnly>) -> Page {
    let services_for_action = services.clone();
    key_action(&req, &services, &settings, &name, &form.csrf, "key-rotated", |principal, cache| async move {
        services_for_action.add_key(&principal, &cache).await.map(|_| ())
    })
    .await
}

async fn retire_key(req: HttpRequest, (services, settings, _): Deps, path: web::Path<(String, String)>, form: web::Form<CsrfOnly>) -> Page {
    let (name, key) = path.into_inner();
    let services_for_action = services.clone();
    key_action(&req, &services, &settings, &name, &form.csrf, "key-retired", |principal, cache| async move {
        services_for_action.retire_key(&principal, &cache, &key).await
    })
    .await
}

#[derive(Deserialize)]
struct PublicKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    public_key: String,
}

async fn register_key(req: HttpRequest, (services, settings, _): Deps, name: web::Path<String>, form: web::Form<PublicKeyForm>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let login = request.form_login(&form.csrf)?;
        let cache = own_cache(&services, &request, login, &name).await?;
        let typed = form.public_key.trim();
        Ok(match services.register_public_key(&login.principal, &cache.name, typed).await {
            Ok(_) => redirect(&format!("/caches/{}/keys?done=key-registered", cache.name)),
            Err(ServiceError::BadRequest(message) | ServiceError::Conflict(message)) => {
                show_keys(&request, &services, &name, None, views::Field::with_error(typed, message), None).await
            }
            Err(error) => request.reply().failure(error),
        })
    })
    .await
}

#[derive(Deserialize)]
struct SigningModeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    drop_paths: Option<String>,
}

async fn switch_signing_mode(
    req: HttpRequest,
    (services, settings, _): Deps,
    name: web::Path<String>,
    form: web::Form<SigningModeForm>,
) -> Page {
    let mode = match form.mode.as_str() {
        "client" => domain::SigningMode::Client,
        _ => domain::SigningMode::Server,
    };
    let drop_paths = form.drop_paths.is_some();
    let services_for_action = services.clone();
    key_action(&req, &services, &settings, &name, &form.csrf, "mode-switched", |principal, cache| async move {
        services_for_action.set_signing_mode(&principal, &cache, mode, drop_paths).await.map_err(|error| match error {
            ServiceError::Conflict(_) => ServiceError::Conflict(
                "The cache has paths signed by its server-held keys: tick “Delete the existing paths” to switch, then re-push them signed with your key.".into(),
            ),
            other => other,
        })
    })
    .await
}

// ---- settings ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct SettingsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    visibility: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    description: String,
    /// `zstd` or `none`; absent leaves it as it is.
    #[serde(default)]
    compression: String,
}

async fn settings_page(req: HttpRequest, (services, settings, _): Deps, name: web::Path<String>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let reply = request.reply();
        let login = request.login()?;
        let cache = own_cache(&services, &request, login, &name).await?;
        Ok(reply.ok(&views::SettingsPage {
            chrome: reply.chrome(flash(&req)),
            header: cache_header(&cache, views::CacheTab::Settings),
            public: cache.public,
            compressed: cache.compression == NarEncoding::Zstd,
            priority: views::Field::new(cache.priority.to_string()),
            description: views::Field::new(cache.description.clone()),
            form_error: None,
            confirm: Default::default(),
        }))
    })
    .await
}

async fn save_settings(req: HttpRequest, (services, settings, _): Deps, name: web::Path<String>, form: web::Form<SettingsForm>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let reply = request.reply();
        let login = request.form_login(&form.csrf)?;
        let cache = own_cache(&services, &request, login, &name).await?;
        let public = form.visibility == "public";
        let compression = NarEncoding::parse(form.compression.trim());
        let mut priority = views::Field::new(form.priority.trim());
        let mut form_error = None;
        match parse_priority(&priority.value) {
            Err(message) => priority.error = Some(message),
            Ok(parsed) => {
                let changes = CacheChanges {
                    public: Some(public),
                    priority: parsed,
                    description: Some(form.description.trim().to_owned()),
                    compression,
                };
                match services.update_cache(&login.principal, &cache.name, changes).await {
                    Ok(cache) => return Ok(redirect(&format!("/caches/{}/settings?done=settings-saved", cache.name))),
                    Err(ServiceError::BadRequest(message)) => form_error = Some(message),
                    Err(error) => return Ok(reply.failure(error)),
                }
            }
        }
        let page = views::SettingsPage {
            chrome: reply.chrome(None),
            header: cache_header(&cache, views::CacheTab::Settings),
            public,
            compressed: compression.unwrap_or(cache.compression) == NarEncoding::Zstd,
            priority,
            description: views::Field::new(form.description.trim()),
            form_error,
            confirm: Default::default(),
        };
        Ok(reply.page(StatusCode::UNPROCESSABLE_ENTITY, &page))
    })
    .await
}

#[derive(Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

async fn delete_cache(req: HttpRequest, (services, settings, _): Deps, name: web::Path<String>, form: web::Form<ConfirmForm>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let reply = request.reply();
        let login = request.form_login(&form.csrf)?;
        let cache = own_cache(&services, &request, login, &name).await?;
        let typed = form.confirm.trim();
        if typed != cache.name.as_str() {
            let page = views::SettingsPage {
                chrome: reply.chrome(None),
                header: cache_header(&cache, views::CacheTab::Settings),
                public: cache.public,
                compressed: cache.compression == NarEncoding::Zstd,
                priority: views::Field::new(cache.priority.to_string()),
                description: views::Field::new(cache.description.clone()),
                form_error: None,
                confirm: views::Field::with_error(typed, format!("type “{}” to delete this cache", cache.name)),
            };
            return Ok(reply.page(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
        Ok(match services.delete_cache(&login.principal, &cache.name, typed).await {
            Ok(()) => redirect("/caches?done=cache-deleted"),
            Err(error) => reply.failure(error),
        })
    })
    .await
}

// ---- account -----------------------------------------------------------------------------

fn is_personal(scope: &TokenScope) -> bool {
    matches!(scope, TokenScope::Personal { .. })
}

struct AccountView {
    current_password_error: Option<String>,
    new_password_error: Option<String>,
    new_token: Option<String>,
    form: views::TokenForm,
    confirm: views::Field,
    status: StatusCode,
}

impl Default for AccountView {
    fn default() -> Self {
        Self {
            current_password_error: None,
            new_password_error: None,
            new_token: None,
            form: Default::default(),
            confirm: Default::default(),
            status: StatusCode::OK,
        }
    }
}

async fn account_page(req: HttpRequest, (services, settings, _): Deps) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    show_account(&request, &services, flash(&req), AccountView::default()).await
}

async fn show_account(request: &Request, services: &Services, flash: Option<String>, view: AccountView) -> Page {
    answer(async {
        let reply = request.reply();
        let login = request.login()?;
        let loaded = async {
            let account = services.account(&login.principal).await?;
            let caches = services.my_caches(&login.principal).await?;
            let tokens = live_tokens(services, &login.principal, is_personal).await?;
            Ok::<_, ServiceError>((account, caches, tokens))
        };
        let (account, caches, tokens) = loaded.await.map_err(|error| request.reply().failure(error))?;
        let reach = |scope: &TokenScope| match scope {
            TokenScope::Personal { caches: domain::CacheLimit::Only(ids), .. } => {
                let names: Vec<&str> = caches.iter().filter(|c| ids.contains(&c.id)).map(|c| c.name.as_str()).collect();
                Some(if names.is_empty() { "none".to_owned() } else { names.join(", ") })
            }
            _ => None,
        };
        let rows = tokens.iter().map(|t| token_row(t, format!("/account/tokens/{}/revoke", t.id), reach(&t.scope))).collect();
        let page = views::AccountPage {
            chrome: reply.chrome(flash),
            username: account.username.as_str().to_owned(),
            email: account.email.as_str().to_owned(),
            current_password_error: view.current_password_error,
            new_password_error: view.new_password_error,
            password_hint: password_hint(),
            tokens: rows,
            new_token: view.new_token.map(|secret| views::NewToken { secret, netrc: None, push: None }),
            form: view.form,
            confirm: view.confirm,
        };
        Ok(reply.page(view.status, &page))
    })
    .await
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

async fn change_password(req: HttpRequest, (services, settings, _): Deps, form: web::Form<PasswordForm>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let login = request.form_login(&form.csrf)?;
        if let Err(message) = NewPassword::parse(&form.new_password, &login.username) {
            let view = AccountView { new_password_error: Some(message), status: StatusCode::UNPROCESSABLE_ENTITY, ..Default::default() };
            return Ok(show_account(&request, &services, None, view).await);
        }
        Ok(match services.change_password(&login.principal, &form.current_password, &form.new_password).await {
            Ok(()) => redirect("/account?done=password-changed"),
            Err(ServiceError::Unauthorized(_) | ServiceError::Forbidden { .. }) => {
                let view = AccountView {
                    current_password_error: Some("This is not your current password.".into()),
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    ..Default::default()
                };
                show_account(&request, &services, None, view).await
            }
            // The new password passed its rule above: what is left is the current one.
            Err(ServiceError::BadRequest(message)) => {
                let view =
                    AccountView { current_password_error: Some(message), status: StatusCode::UNPROCESSABLE_ENTITY, ..Default::default() };
                show_account(&request, &services, None, view).await
            }
            Err(error) => request.reply().failure(error),
        })
    })
    .await
}

async fn create_personal_token(req: HttpRequest, (services, settings, _): Deps, form: web::Form<TokenFormData>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let login = request.form_login(&form.csrf)?;
        let (permission, expires_in) = match form.parse() {
            Ok(parsed) => parsed,
            Err(shown) => {
                let view = AccountView { form: shown, status: StatusCode::UNPROCESSABLE_ENTITY, ..Default::default() };
                return Ok(show_account(&request, &services, None, view).await);
            }
        };
        let token_request = TokenRequest {
            target: TokenTarget::Personal(Vec::new()),
            permission,
            expires_in,
            description: form.description.trim().to_owned(),
        };
        Ok(match services.create_token_for(&login.principal, token_request).await {
            Ok(created) => {
                show_account(&request, &services, None, AccountView { new_token: Some(created.secret), ..Default::default() }).await
            }
            Err(ServiceError::BadRequest(message)) => {
                let view =
                    AccountView { form: form.redisplay(Some(message)), status: StatusCode::UNPROCESSABLE_ENTITY, ..Default::default() };
                show_account(&request, &services, None, view).await
            }
            Err(error) => request.reply().failure(error),
        })
    })
    .await
}

async fn confirm_revoke_personal_token(req: HttpRequest, (services, settings, _): Deps, id: web::Path<String>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let reply = request.reply();
        let login = request.login()?;
        Ok(match live_tokens(&services, &login.principal, is_personal).await {
            Ok(tokens) => revoke_confirmation(&reply, &tokens, &id, format!("/account/tokens/{id}/revoke"), "/account".into()),
            Err(error) => reply.failure(error),
        })
    })
    .await
}

async fn revoke_personal_token(req: HttpRequest, (services, settings, _): Deps, id: web::Path<String>, form: web::Form<CsrfOnly>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let login = request.form_login(&form.csrf)?;
        Ok(revoke(&request, &services, login, &id, is_personal, "/account").await)
    })
    .await
}

async fn delete_account(req: HttpRequest, (services, settings, _): Deps, form: web::Form<ConfirmForm>) -> Page {
    let request = Request::open(&req, &services, &settings).await;
    answer(async {
        let login = request.form_login(&form.csrf)?;
        let typed = form.confirm.trim();
        if typed != login.username {
            let view = AccountView {
                confirm: views::Field::with_error(typed, format!("type “{}” to delete your account", login.username)),
                status: StatusCode::UNPROCESSABLE_ENTITY,
                ..Default::default()
            };
            return Ok(show_account(&request, &services, None, view).await);
        }
        Ok(match services.delete_account(&login.principal, typed).await {
            Ok(()) => {
                let mut response = redirect("/");
                let _ = response.add_cookie(&settings.cookies.removal(SESSION_COOKIE));
                response
            }
            Err(error) => request.reply().failure(error),
        })
    })
    .await
}
