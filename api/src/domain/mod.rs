//! Parse-don't-validate newtypes: once a value exists, it is valid.

mod cache_name;
mod permission;

pub use cache_name::CacheName;
pub use permission::Permission;
