//! Parse-don't-validate newtypes: once a value exists, it is valid.

mod account;
mod cache_name;
mod permission;

pub use account::{Email, NewPassword, Username, MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};
pub use cache_name::CacheName;
pub use permission::Permission;
