//! Tokens: JWTs signed with the server's secret, carrying their id (`jti`), the cache they
//! act on and their permission. The database holds only the id and metadata, so a token
//! can be revoked or expire; the secret string is shown once and never stored.

pub mod password;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::{Token, TokenScope};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub jti: String,
    /// The cache a cache token acts on, by id (names may be reused after deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<i64>,
    /// The account a personal token or a session acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<i64>,
    pub perm: String,
    pub iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

impl Claims {
    /// The claims of a token: its id and scope, as its record says.
    pub fn for_token(token: &Token) -> Self {
        let (cache, account) = scope_ids(&token.scope);
        Claims {
            jti: token.id.as_str().to_owned(),
            cache,
            account,
            perm: token.permission.as_str().to_owned(),
            iat: token.created_at,
            exp: token.expires_at,
        }
    }

    /// True if the claims name what the record says the token acts on.
    pub fn matches(&self, scope: &TokenScope) -> bool {
        (self.cache, self.account) == scope_ids(scope)
    }
}

/// The (cache, account) ids a token's claims carry for its scope.
fn scope_ids(scope: &TokenScope) -> (Option<i64>, Option<i64>) {
    match scope {
        TokenScope::Cache(cache) => (Some(cache.get()), None),
        TokenScope::Personal { account, .. } | TokenScope::Session(account) => (None, Some(account.get())),
    }
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &[u8; 32]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is optional; when present the library checks it, and the database too.
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.leeway = 0;
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    pub fn issue(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)?)
    }

    /// Checks the signature (constant-time HMAC comparison) and expiry.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok().map(|data| data.claims)
    }
}

/// The token a request carries: `Authorization: Bearer <token>`, or Basic auth with the
/// token as the password (what nix sends from a netrc file; the login is ignored).
pub fn token_from_authorization(header: &str) -> Option<String> {
    let (scheme, value) = header.trim().split_once(' ')?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.to_owned()).filter(|t| !t.is_empty());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(value).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_login, password) = decoded.split_once(':')?;
        return Some(password.to_owned()).filter(|t| !t.is_empty());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: Option<i64>) -> Claims {
        Claims { jti: "id".into(), cache: Some(1), account: None, perm: "read".into(), iat: 0, exp }
    }

    #[test]
    fn verifies_own_tokens_only() {
        let keys = TokenKeys::new(&[1; 32]);
        let token = keys.issue(&claims(None)).unwrap();
        assert_eq!(keys.verify(&token).unwrap().jti, "id");
        assert!(TokenKeys::new(&[2; 32]).verify(&token).is_none());
        let mut tampered = token.clone();
        tampered.pop();
        assert!(keys.verify(&tampered).is_none());
        assert!(keys.verify(&keys.issue(&claims(Some(1))).unwrap()).is_none(), "expired");
    }

    #[test]
    fn reads_bearer_and_basic() {
        assert_eq!(token_from_authorization("Bearer abc").as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:tok:en");
        assert_eq!(token_from_authorization(&format!("Basic {basic}")).as_deref(), Some("tok:en"));
        assert_eq!(token_from_authorization("Basic !!!"), None);
        assert_eq!(token_from_authorization("Digest x"), None);
        let empty = base64::engine::general_purpose::STANDARD.encode("user:");
        assert_eq!(token_from_authorization(&format!("Basic {empty}")), None);
    }
}
