//! The JSON bodies of Larder's `/api/v1` (contract: `openapi.yaml`), as plain serde types:
//! the server's routes answer with them and the `larder` CLI sends and reads them. Requests
//! refuse unknown fields; what combinations are valid is the server's to decide.

use serde::{Deserialize, Serialize};

/// Every error: a stable machine-readable code and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// What a token may do on a cache; each includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    Admin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Cache,
    Personal,
    Session,
}

/// Who holds a cache's secret keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningMode {
    Server,
    Client,
}

// ---- accounts and sessions -------------------------------------------------------------

/// `POST /api/v1/accounts`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    pub username: String,
    pub email: String,
    pub password: String,
}

/// `POST /api/v1/sessions`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogIn {
    pub username: String,
    pub password: String,
}

/// The answer to `POST /api/v1/sessions`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionCreated {
    /// The session token: shown once.
    pub token: String,
    pub expires_at: Option<i64>,
}

/// `GET /api/v1/account`, and the answer to signing up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub email: String,
    pub created_at: i64,
}

/// `PUT /api/v1/account/password`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// `DELETE /api/v1/account` and `DELETE /api/v1/caches/{cache}`: the name, typed again.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    pub confirm: String,
}

// ---- caches ------------------------------------------------------------------------------

/// A cache in listings and in the answers to creating and changing one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cache {
    pub name: String,
    pub public: bool,
    pub priority: i64,
    pub description: String,
    pub created_at: i64,
}

/// `POST /api/v1/caches`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCache {
    pub name: String,
    pub public: bool,
    pub priority: Option<i64>,
    #[serde(default)]
    pub description: String,
}

/// `PATCH /api/v1/caches/{cache}`: absent fields stay as they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheChanges {
    pub public: Option<bool>,
    pub priority: Option<i64>,
    pub description: Option<String>,
}

/// `GET /api/v1/caches/{cache}`: what a client needs to configure itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheInfo {
    pub name: String,
    pub public: bool,
    pub priority: i64,
    /// For `trusted-public-keys`, in Nix's `name:base64` form.
    pub public_keys: Vec<String>,
    /// What to put in `substituters` (and `nix copy --to`).
    pub substituter: String,
}

// ---- signing keys ------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Key {
    pub name: String,
    pub public_key: String,
    pub active: bool,
    pub created_at: i64,
}

/// `POST /api/v1/caches/{cache}/public-keys`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPublicKey {
    pub public_key: String,
}

/// `POST /api/v1/caches/{cache}/secret-key`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSecretKey {
    pub secret_key: String,
}

/// `PUT /api/v1/caches/{cache}/signing-mode`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSigningMode {
    pub mode: SigningMode,
    #[serde(default)]
    pub drop_paths: bool,
}

/// The answer to `PUT /api/v1/caches/{cache}/signing-mode`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SigningModeSet {
    pub mode: SigningMode,
}

// ---- tokens ------------------------------------------------------------------------------

/// `POST /api/v1/tokens`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// `cache` (with `cache`) or `personal` (optionally with `caches`).
    pub kind: TokenKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<String>,
    pub permission: Permission,
    /// Lifetime in seconds; absent for no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub description: String,
}

/// A token as listed (never its secret).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub kind: TokenKind,
    /// For cache tokens: the cache.
    pub cache: Option<String>,
    /// For personal tokens: true if it acts only on `caches` (which may have become empty
    /// when they were deleted: then it acts on nothing).
    pub limited: bool,
    pub caches: Vec<String>,
    pub permission: Permission,
    pub description: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// The answer to `POST /api/v1/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub token: Token,
    /// The token itself. Shown only in this response; Larder does not keep it.
    #[serde(rename = "token")]
    pub secret: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields_and_values() {
        let ok: NewToken = serde_json::from_str(r#"{"kind":"cache","cache":"demo","permission":"read"}"#).unwrap();
        assert_eq!((ok.kind, ok.permission, ok.caches.len()), (TokenKind::Cache, Permission::Read, 0));
        assert!(serde_json::from_str::<NewToken>(r#"{"kind":"cache","cache":"demo","permission":"owner"}"#).is_err());
        assert!(serde_json::from_str::<SignUp>(r#"{"username":"a","email":"b","password":"c","admin":true}"#).is_err());
    }

    #[test]
    fn a_created_token_is_a_token_plus_its_secret() {
        let token = Token {
            id: "id".into(),
            kind: TokenKind::Personal,
            cache: None,
            limited: true,
            caches: vec!["demo".into()],
            permission: Permission::Write,
            description: String::new(),
            created_at: 1,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        let json = serde_json::to_value(TokenCreated { token, secret: "s3cret".into() }).unwrap();
        assert_eq!(json["token"], "s3cret");
        assert_eq!(json["kind"], "personal");
        assert_eq!(json["caches"][0], "demo");
        let back: TokenCreated = serde_json::from_value(json).unwrap();
        assert_eq!(back.secret, "s3cret");
    }
}
