//! Who is looking at a dashboard page, and the form token that proves a form came from one.
//!
//! A login is a session token (the same kind `POST /api/v1/sessions` issues) kept in an
//! HttpOnly cookie; logging in always issues a new one. Bearer and Basic credentials do
//! not count here: the dashboard is for people in a browser.
//!
//! Form tokens (CSRF) are derived, not stored: SHA-256 of a secret the browser holds in an
//! HttpOnly cookie (the session token, or before log-in a random pre-session value). A
//! page from another site can make the browser send the cookie but cannot read it, so it
//! cannot compute the token; comparisons are constant-time.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::services::{Principal, Services, SESSION_LIFETIME};

pub const SESSION_COOKIE: &str = "larder_session";
pub const PRESESSION_COOKIE: &str = "larder_presession";

/// How the dashboard's cookies are sent.
#[derive(Clone, Copy)]
pub struct CookiePolicy {
    /// `Secure`: when the public URL is https.
    pub secure: bool,
}

impl CookiePolicy {
    fn cookie<'a>(&self, name: &'a str, value: String, max_age: CookieDuration) -> Cookie<'a> {
        Cookie::build(name, value).path("/").http_only(true).same_site(SameSite::Lax).secure(self.secure).max_age(max_age).finish()
    }

    pub fn session(&self, secret: String) -> Cookie<'static> {
        let lifetime = CookieDuration::seconds(i64::try_from(SESSION_LIFETIME.as_secs()).unwrap_or(i64::MAX));
        self.cookie(SESSION_COOKIE, secret, lifetime)
    }

    fn presession(&self, value: String) -> Cookie<'static> {
        self.cookie(PRESESSION_COOKIE, value, CookieDuration::days(1))
    }

    /// A cookie that tells the browser to forget `name`.
    pub fn removal(&self, name: &'static str) -> Cookie<'static> {
        self.cookie(name, String::new(), CookieDuration::ZERO)
    }
}

/// A logged-in account holder.
pub struct Login {
    pub principal: Principal,
    pub username: String,
    /// The session token, as the cookie holds it.
    pub secret: String,
}

/// The person behind a request.
pub struct Visitor {
    pub login: Option<Login>,
    /// What form tokens are derived from: the session token, else the pre-session value.
    seed: String,
    /// A pre-session value made for this request, to be set as a cookie.
    new_presession: Option<String>,
    /// A session cookie that no longer works (expired, revoked), to be removed.
    stale_session: bool,
}

impl Visitor {
    pub async fn of(req: &HttpRequest, services: &Services) -> Self {
        let login = match req.cookie(SESSION_COOKIE) {
            Some(cookie) => login_of(services, cookie.value()).await,
            None => None,
        };
        let stale_session = req.cookie(SESSION_COOKIE).is_some() && login.is_none();
        let (seed, new_presession) = match (&login, req.cookie(PRESESSION_COOKIE)) {
            (Some(login), _) => (login.secret.clone(), None),
            (None, Some(cookie)) if !cookie.value().is_empty() => (cookie.value().to_owned(), None),
            (None, _) => {
                let value = random_hex();
                (value.clone(), Some(value))
            }
        };
        Self { login, seed, new_presession, stale_session }
    }

    /// The token this visitor's forms carry.
    pub fn csrf_token(&self) -> String {
        form_token(&self.seed)
    }

    /// True if `presented` is this visitor's form token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf_token().as_bytes().ct_eq(presented.as_bytes()))
    }

    /// Sets the cookies this visitor needs on a response.
    pub fn apply_cookies(&self, response: &mut HttpResponse, policy: CookiePolicy) {
        // Adding a cookie fails only for a value that is not a valid header; ours are hex.
        if let Some(value) = &self.new_presession {
            let _ = response.add_cookie(&policy.presession(value.clone()));
        }
        if self.stale_session {
            let _ = response.add_cookie(&policy.removal(SESSION_COOKIE));
        }
    }
}

async fn login_of(services: &Services, secret: &str) -> Option<Login> {
    let principal = services.authenticate(Some(secret)).await.ok().flatten()?;
    if !matches!(principal, Principal::Session { .. }) {
        return None;
    }
    let account = services.account(&principal).await.ok()?;
    Some(Login { principal, username: account.username.as_str().to_owned(), secret: secret.to_owned() })
}

fn form_token(seed: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"larder dashboard form token\0");
    hasher.update(seed.as_bytes());
    hex::encode(hasher.finalize())
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_tokens_depend_on_the_seed_only() {
        assert_eq!(form_token("a"), form_token("a"));
        assert_ne!(form_token("a"), form_token("b"));
        assert_eq!(form_token("a").len(), 64);
    }

    #[test]
    fn a_form_token_must_match_exactly() {
        let visitor = Visitor { login: None, seed: "seed".into(), new_presession: None, stale_session: false };
        let token = visitor.csrf_token();
        assert!(visitor.csrf_matches(&token));
        assert!(!visitor.csrf_matches(""));
        assert!(!visitor.csrf_matches(&token[..63]));
        assert!(!visitor.csrf_matches(&form_token("other")));
    }
}
