//! What the database holds, as the rest of the server sees it: typed, validated values.
//! `db/` builds these from its rows (a row that does not convert is an internal error that
//! names it) and never hands out a row.

use larder_protocol::compression::Compression;
use larder_protocol::hash::Sha256Hash;
use larder_protocol::signing::{PublicKey, Signature};
use larder_protocol::store_path::StorePath;

use super::{AccountId, CacheId, CacheName, Email, NarId, PathId, Permission, TokenId, Username};

#[derive(Clone, Debug)]
pub struct Account {
    pub id: AccountId,
    pub username: Username,
    pub email: Email,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created_at: i64,
}

/// Who holds a cache's secret keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningMode {
    /// Larder holds the keys (encrypted) and signs at commit.
    Server,
    /// The owner signs; Larder knows public keys only and verifies every push.
    Client,
}

impl SigningMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningMode::Server => "server",
            SigningMode::Client => "client",
        }
    }

    pub fn parse(mode: &str) -> Option<Self> {
        match mode {
            "server" => Some(SigningMode::Server),
            "client" => Some(SigningMode::Client),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Cache {
    pub id: CacheId,
    pub name: CacheName,
    /// `None` for caches the operator made with the admin command.
    pub owner: Option<AccountId>,
    pub public: bool,
    pub priority: i64,
    pub signing_mode: SigningMode,
    pub description: String,
    pub created_at: i64,
    pub gc: GcPolicy,
    /// How NARs pushed through upload sessions are stored (the stock client chooses its own).
    pub compression: NarEncoding,
}

/// What a cache keeps: paths used within `keep_days` (all, for `None`) and at most
/// `quota_bytes` of NARs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GcPolicy {
    pub keep_days: Option<u32>,
    pub quota_bytes: Option<u64>,
    pub quota_mode: QuotaMode,
}

/// What happens when a cache would exceed its quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum QuotaMode {
    /// Collections evict least recently used paths until it fits.
    #[default]
    Evict,
    /// Pushes that would exceed it are refused before bytes are stored.
    Refuse,
}

impl GcPolicy {
    /// The quota that collections evict down to, if any.
    pub fn soft_quota(&self) -> Option<u64> {
        self.quota_bytes.filter(|_| self.quota_mode == QuotaMode::Evict)
    }

    /// The quota that pushes are refused beyond, if any.
    pub fn hard_quota(&self) -> Option<u64> {
        self.quota_bytes.filter(|_| self.quota_mode == QuotaMode::Refuse)
    }
}

impl QuotaMode {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaMode::Evict => "evict",
            QuotaMode::Refuse => "refuse",
        }
    }

    pub fn parse(mode: &str) -> Option<Self> {
        match mode {
            "evict" => Some(QuotaMode::Evict),
            "refuse" => Some(QuotaMode::Refuse),
            _ => None,
        }
    }
}

/// One path a named pin holds (the newest) or still keeps (earlier revisions).
#[derive(Clone, Debug)]
pub struct PinRevision {
    pub name: String,
    pub store_path: StorePath,
    pub keep_revisions: Option<u32>,
    pub keep_days: Option<u32>,
    pub pinned_at: i64,
}

/// A server-held secret key, sealed under the master key.
#[derive(Clone)]
pub struct SealedSecret {
    /// nonce || ciphertext.
    pub ciphertext: Vec<u8>,
    /// Which master key sealed it (absent on keys from before ids were recorded).
    pub master_key_id: Option<String>,
}

#[derive(Clone)]
pub struct SigningKey {
    pub public_key: PublicKey,
    /// `None` for client-held keys.
    pub secret: Option<SealedSecret>,
    pub active: bool,
    pub created_at: i64,
}

impl SigningKey {
    pub fn name(&self) -> &str {
        self.public_key.name()
    }
}

/// Which of its account's caches a personal token acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLimit {
    /// All of them, present and future.
    All,
    /// Only these (none, once they are all deleted: never widened to all).
    Only(Vec<CacheId>),
}

impl CacheLimit {
    pub fn includes(&self, cache: CacheId) -> bool {
        match self {
            CacheLimit::All => true,
            CacheLimit::Only(caches) => caches.contains(&cache),
        }
    }

    /// True if every cache `other` reaches, this one reaches too.
    pub fn covers(&self, other: &CacheLimit) -> bool {
        match (self, other) {
            (CacheLimit::All, _) => true,
            (CacheLimit::Only(_), CacheLimit::All) => false,
            (CacheLimit::Only(mine), CacheLimit::Only(theirs)) => theirs.iter().all(|c| mine.contains(c)),
        }
    }
}

/// What a token acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenScope {
    /// One cache.
    Cache(CacheId),
    /// An account's caches, all of them or some.
    Personal { account: AccountId, caches: CacheLimit },
    /// A login: acts for the account as its holder.
    Session(AccountId),
}

impl TokenScope {
    pub fn kind(&self) -> TokenKind {
        match self {
            TokenScope::Cache(_) => TokenKind::Cache,
            TokenScope::Personal { .. } => TokenKind::Personal,
            TokenScope::Session(_) => TokenKind::Session,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Cache,
    Personal,
    Session,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Cache => "cache",
            TokenKind::Personal => "personal",
            TokenKind::Session => "session",
        }
    }
}

/// A token's record: never the token itself, which only its holder has.
#[derive(Clone, Debug)]
pub struct Token {
    pub id: TokenId,
    pub scope: TokenScope,
    pub permission: Permission,
    pub description: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A stored NAR, shared by every cache that uploaded it.
#[derive(Clone, Debug)]
pub struct Nar {
    pub id: NarId,
    /// sha256 of the stored (compressed) bytes.
    pub file_hash: Sha256Hash,
    pub file_size: u64,
    pub compression: Compression,
    /// sha256 of the uncompressed NAR.
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    pub storage_key: String,
    /// Where its `.ls` listing is (nothing is there when it was too large to keep).
    pub listing_key: String,
}

/// A NAR to record after it was stored and verified.
pub struct NewNar {
    pub file_hash: Sha256Hash,
    pub file_size: u64,
    pub compression: Compression,
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    pub storage_key: String,
    pub listing_key: String,
}

/// A path a cache serves, with its NAR: everything its narinfo is rendered from.
#[derive(Clone, Debug)]
pub struct PublishedPath {
    pub id: PathId,
    pub store_path: StorePath,
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    pub ca: Option<String>,
    pub signatures: Vec<Signature>,
    pub nar: Nar,
}

/// A path to publish in a cache.
pub struct NewPath<'a> {
    pub cache: CacheId,
    pub store_path: &'a StorePath,
    pub nar: NarId,
    pub references: &'a [StorePath],
    pub deriver: Option<&'a StorePath>,
    pub ca: Option<&'a str>,
    pub signatures: &'a [Signature],
}

/// How an upload session's NAR travels, and how a cache stores NARs it compresses itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NarEncoding {
    None,
    Zstd,
}

impl NarEncoding {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "none" => Some(NarEncoding::None),
            "zstd" => Some(NarEncoding::Zstd),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NarEncoding::None => "none",
            NarEncoding::Zstd => "zstd",
        }
    }

    pub fn compression(self) -> Compression {
        match self {
            NarEncoding::None => Compression::None,
            NarEncoding::Zstd => Compression::Zstd,
        }
    }
}

/// One path's NAR on its way in, part by part (`POST …/uploads`).
#[derive(Clone, Debug)]
pub struct UploadSession {
    pub id: String,
    pub cache: CacheId,
    pub store_path: StorePath,
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    pub ca: Option<String>,
    pub signatures: Vec<Signature>,
    pub wire: NarEncoding,
    /// Every part but the last is exactly this long.
    pub part_size: u64,
    pub storage_key: String,
    pub storage_assembly: String,
    pub expires_at: i64,
}

/// A part the server holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadPart {
    pub number: u32,
    pub size: u64,
    pub tag: String,
}
