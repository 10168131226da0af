//! One struct per page; the template of each is named next to it.

use askama::Template;

use crate::snippets::SetupSnippets;

/// What every page's frame shows: who is logged in, the form token, a one-time notice.
#[derive(Default)]
pub struct Chrome {
    /// The logged-in username; `None` on anonymous pages.
    pub user: Option<String>,
    /// The CSRF token every form of the page posts back.
    pub csrf: String,
    /// A notice about what the last action did ("Token revoked.").
    pub flash: Option<String>,
}

/// A text input as last submitted, with what was wrong with it.
#[derive(Default)]
pub struct Field {
    pub value: String,
    pub error: Option<String>,
}

impl Field {
    pub fn new(value: impl Into<String>) -> Self {
        Self { value: value.into(), error: None }
    }

    pub fn with_error(value: impl Into<String>, error: impl Into<String>) -> Self {
        Self { value: value.into(), error: Some(error.into()) }
    }
}

#[derive(Template)]
#[template(path = "landing.html")]
pub struct LandingPage {
    pub chrome: Chrome,
}

#[derive(Template)]
#[template(path = "signup.html")]
pub struct SignUpPage {
    pub chrome: Chrome,
    pub username: Field,
    pub email: Field,
    /// Only the error: a password is never sent back.
    pub password_error: Option<String>,
    pub form_error: Option<String>,
    /// The password rules, in words.
    pub password_hint: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LogInPage {
    pub chrome: Chrome,
    pub username: Field,
    pub form_error: Option<String>,
}

pub struct CacheRow {
    pub name: String,
    pub public: bool,
    pub paths: u64,
    pub stored: String,
    pub last_push: String,
}

#[derive(Template)]
#[template(path = "caches.html")]
pub struct CacheListPage {
    pub chrome: Chrome,
    pub caches: Vec<CacheRow>,
}

#[derive(Template)]
#[template(path = "new_cache.html")]
pub struct NewCachePage {
    pub chrome: Chrome,
    pub name: Field,
    pub public: bool,
    pub client_signing: bool,
    pub priority: Field,
    pub description: Field,
    pub form_error: Option<String>,
    /// The rules a name must follow, shown next to the field.
    pub name_rules: &'static str,
}

/// Which tab of a cache's pages is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CacheTab {
    Overview,
    Paths,
    Tokens,
    Keys,
    Settings,
}

/// The heading and tabs every page of a cache shares.
pub struct CacheHeader {
    pub name: String,
    pub public: bool,
    pub tab: CacheTab,
}

impl CacheHeader {
    /// The URL of one of the cache's pages, e.g. `url("tokens")`.
    pub fn url(&self, page: &str) -> String {
        format!("/caches/{}/{page}", self.name)
    }

    /// The tabs as (label, URL, current?).
    pub fn tabs(&self) -> Vec<(&'static str, String, bool)> {
        let base = format!("/caches/{}", self.name);
        [
            ("Overview", base.clone(), CacheTab::Overview),
            ("Paths", format!("{base}/paths"), CacheTab::Paths),
            ("Tokens", format!("{base}/tokens"), CacheTab::Tokens),
            ("Keys", format!("{base}/keys"), CacheTab::Keys),
            ("Settings", format!("{base}/settings"), CacheTab::Settings),
        ]
        .into_iter()
        .map(|(label, url, tab)| (label, url, tab == self.tab))
        .collect()
    }
}

/// A path in a list: its base name, hash (for its URL), size and when it was pushed.
pub struct PathRow {
    pub hash: String,
    pub base_name: String,
    pub nar_size: String,
    pub pushed: String,
}

#[derive(Template)]
#[template(path = "cache.html")]
pub struct CachePage {
    pub chrome: Chrome,
    pub header: CacheHeader,
    pub description: String,
    pub substituter: String,
    pub public_keys: Vec<String>,
    pub client_signing: bool,
    pub snippets: SetupSnippets,
    pub paths: u64,
    pub stored: String,
    pub last_push: String,
    pub recent: Vec<PathRow>,
}

#[derive(Template)]
#[template(path = "paths.html")]
pub struct PathListPage {
    pub chrome: Chrome,
    pub header: CacheHeader,
    pub query: String,
    pub rows: Vec<PathRow>,
    /// 1-based.
    pub page: u32,
    pub previous_url: Option<String>,
    pub next_url: Option<String>,
    pub push_hint: String,
}

/// A reference of a path: its base name and, when this cache holds it, its page.
pub struct Reference {
    pub base_name: String,
    pub url: Option<String>,
}

#[derive(Template)]
#[template(path = "path.html")]
pub struct PathPage {
    pub chrome: Chrome,
    pub header: CacheHeader,
    pub hash: String,
    pub store_path: String,
    pub nar_hash: String,
    pub nar_size: String,
    pub file_size: String,
    pub compression: String,
    pub deriver: Option<String>,
    pub ca: Option<String>,
    pub references: Vec<Reference>,
    pub signatures: Vec<String>,
    pub pushed: String,
    pub form_error: Option<String>,
}

pub struct TokenRow {
    pub id: String,
    pub description: String,
    pub permission: String,
    /// For personal tokens: the caches it is limited to, in words.
    pub reach: Option<String>,
    pub created: String,
    pub expires: String,
    pub last_used: String,
    pub revoke_url: String,
}

/// A token just created: the only time its secret is shown.
pub struct NewToken {
    pub secret: String,
    pub netrc: Option<String>,
    pub push: Option<String>,
}

/// The token-creation form, as last submitted.
pub struct TokenForm {
    pub permission: String,
    pub description: Field,
    pub expires: String,
    pub form_error: Option<String>,
}

impl Default for TokenForm {
    fn default() -> Self {
        Self { permission: "read".into(), description: Field::default(), expires: "never".into(), form_error: None }
    }
}

/// The expiry choices of the token form, as (value, label).
pub const TOKEN_EXPIRIES: [(&str, &str); 5] =
    [("never", "never"), ("1d", "1 day"), ("30d", "30 days"), ("90d", "90 days"), ("365d", "1 year")];

#[derive(Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    pub chrome: Chrome,
    pub header: CacheHeader,
    pub tokens: Vec<TokenRow>,
    pub new_token: Option<NewToken>,
    pub form: TokenForm,
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub title: String,
    pub question: String,
    pub action_url: String,
    pub button: String,
    pub cancel_url: String,
}

pub struct KeyRow {
    pub name: String,
    pub public_key: String,
    pub active: bool,
    pub created: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
pub struct KeysPage {
    pub chrome: Chrome,
    pub header: CacheHeader,
    pub client_signing: bool,
    pub keys: Vec<KeyRow>,
    pub active_count: usize,
    pub paths: u64,
    pub public_key: Field,
    pub form_error: Option<String>,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    pub chrome: Chrome,
    pub header: CacheHeader,
    pub public: bool,
    /// NARs pushed with `larder push` are stored zstd-compressed (else uncompressed).
    pub compressed: bool,
    pub priority: Field,
    pub description: Field,
    pub form_error: Option<String>,
    pub confirm: Field,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub chrome: Chrome,
    pub username: String,
    pub email: String,
    pub current_password_error: Option<String>,
    pub new_password_error: Option<String>,
    pub password_hint: String,
    pub tokens: Vec<TokenRow>,
    pub new_token: Option<NewToken>,
    pub form: TokenForm,
    pub confirm: Field,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub title: String,
    pub message: String,
}
