//! Parse-don't-validate newtypes: once a value exists, it is valid.

mod account;
mod cache_name;
mod ids;
mod permission;
mod records;

pub use account::{Email, NewPassword, Username, MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};
pub use cache_name::CacheName;
pub use ids::{AccountId, CacheId, NarId, PathId, RealisationId, TokenId};
pub use permission::Permission;
pub use records::{
    Account, Cache, CacheLimit, GcPolicy, Nar, NarEncoding, NewNar, NewPath, PinRevision, PublishedPath, QuotaMode, SealedSecret,
    SigningKey, SigningMode, Token, TokenKind, TokenScope, UploadPart, UploadSession,
};
