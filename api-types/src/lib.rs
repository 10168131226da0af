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
    /// How NARs pushed through upload sessions are stored.
    pub compression: Option<NarEncoding>,
}

/// How a NAR travels in an upload session, and how a cache stores those it compresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NarEncoding {
    None,
    Zstd,
}

/// `GET /api/v1/caches/{cache}`: what a client needs to configure itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheInfo {
    pub name: String,
    pub public: bool,
    pub priority: i64,
    /// How the cache stores NARs pushed through upload sessions: send them so, and the
    /// server stores the bytes as sent.
    pub compression: NarEncoding,
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

// ---- pushing ----------------------------------------------------------------------------

/// `POST /api/v1/caches/{cache}/missing-paths`: which of these the cache lacks.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingPathsQuery {
    /// Absolute store paths, at most 10,000.
    pub store_paths: Vec<String>,
}

/// The answer: the asked paths the cache has no path for, in the order asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingPaths {
    pub missing: Vec<String>,
}

/// `POST /api/v1/caches/{cache}/uploads`: one path to push, as `nix path-info` knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    /// Absolute store path.
    pub store_path: String,
    /// `sha256:` and the hash of the uncompressed NAR, nix32 or hex (as nix prints it).
    pub nar_hash: String,
    pub nar_size: u64,
    /// Absolute store paths; the path itself may be among them.
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub deriver: Option<String>,
    #[serde(default)]
    pub ca: Option<String>,
    /// `name:base64` signatures (kept for caches with client-held keys).
    #[serde(default)]
    pub signatures: Vec<String>,
    /// How the parts will arrive (default: none, the plain NAR).
    #[serde(default)]
    pub wire_compression: Option<NarEncoding>,
    /// The length of every part but the last; the server's default (and upper bound) when absent.
    #[serde(default)]
    pub part_size: Option<u64>,
}

/// The answer to a new upload: nothing to send, or a session to send the NAR into.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum UploadAnswer {
    /// The cache has this path already.
    Present { store_path: String },
    /// Send the parts, then complete.
    Open(UploadSession),
}

/// An upload session (`GET /api/v1/caches/{cache}/uploads/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadSession {
    pub id: String,
    pub store_path: String,
    pub wire_compression: NarEncoding,
    pub part_size: u64,
    /// Unix seconds; an abandoned session and its parts are reclaimed then.
    pub expires_at: i64,
    /// The parts the server holds, by number.
    pub parts: Vec<UploadedPart>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedPart {
    pub number: u32,
    pub size: u64,
}

/// `POST …/uploads/{id}/complete`: the path is published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompletedUpload {
    pub store_path: String,
    /// `nar/…`, as the narinfo's URL.
    pub url: String,
    pub file_size: u64,
    pub nar_size: u64,
}

// ---- garbage collection, pins, paths, usage --------------------------------------------

/// What a collection does when a cache's stored bytes exceed its quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaMode {
    /// Soft: least recently used paths are evicted until the cache fits.
    Evict,
    /// Hard: a push that would exceed the quota is refused (507) before bytes are stored.
    Refuse,
}

/// `GET` and `PUT /api/v1/caches/{cache}/gc`: the cache's retention policy and quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcPolicy {
    /// Paths not used (fetched or pushed) for this many days are collected; `null` keeps
    /// them for ever.
    pub keep_days: Option<u32>,
    /// Most bytes the cache may store (its own NARs, each counted once); `null` for none.
    pub quota_bytes: Option<u64>,
    pub quota_mode: QuotaMode,
}

/// Why a collection would remove a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectReason {
    /// Neither it nor any path referring to it was used within `keep_days`.
    Retention,
    /// Evicted, least recently used first, to bring the cache under its quota.
    Quota,
}

/// A path a collection would remove.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectablePath {
    pub store_path: String,
    pub file_size: u64,
    pub nar_size: u64,
    pub last_used_at: i64,
    pub reason: CollectReason,
}

/// `GET /api/v1/caches/{cache}/gc/preview`: what the policy would remove now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GcPreview {
    /// How many paths would be removed (`paths` lists at most the first 1000).
    pub path_count: u64,
    /// Stored bytes the cache would free (NARs no remaining path of the cache uses).
    pub bytes_freed: u64,
    pub paths: Vec<CollectablePath>,
}

/// `POST /api/v1/caches/{cache}/pins`. Pinning a name again moves it to the new path.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPin {
    pub name: String,
    /// A store path published in the cache (`/nix/store/…` or its base name).
    pub store_path: String,
    /// Also keep this many of the name's latest paths pinned (the current one included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_revisions: Option<u32>,
    /// Also keep the name's earlier paths pinned for this many days after they were replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
}

/// A path a pin held or holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinRevision {
    pub store_path: String,
    pub pinned_at: i64,
}

/// A pin: its closure, and those of its kept revisions, are never collected.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pin {
    pub name: String,
    pub store_path: String,
    pub pinned_at: i64,
    pub keep_revisions: Option<u32>,
    pub keep_days: Option<u32>,
    /// Earlier paths of this name still pinned, newest first.
    pub earlier: Vec<PinRevision>,
}

/// `DELETE /api/v1/caches/{cache}/paths/{hash}` (the body is optional).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletePath {
    /// Also delete every path of the cache that refers to it, directly or not.
    #[serde(default)]
    pub with_referrers: bool,
}

/// The answer to deleting a path: every path removed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeletedPaths {
    pub deleted: Vec<String>,
}

/// `GET /api/v1/caches/{cache}/usage`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub paths: u64,
    /// Bytes of the NARs the cache holds, each counted once however many paths or caches
    /// share it (uploads not yet published included).
    pub stored_bytes: u64,
    pub served_bytes_24h: u64,
    pub served_bytes_30d: u64,
    pub last_push_at: Option<i64>,
    pub last_use_at: Option<i64>,
}

/// One cache's usage in the account's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheUsage {
    pub cache: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// `GET /api/v1/account/usage`: each cache's usage and their sum.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountUsage {
    pub total: Usage,
    pub caches: Vec<CacheUsage>,
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
