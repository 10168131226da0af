//! The Nix binary cache protocol, with no I/O.
//!
//! Everything a cache server needs to speak to the real `nix` client:
//! nix32 and typed hashes, store paths, `.narinfo` parsing and rendering,
//! ed25519 signatures in Nix's key format, and a streaming NAR validator that
//! also produces the `.ls` listing. The server adds HTTP, storage and a
//! database on top; nothing here knows about any of those.
//!
//! Behaviour is pinned to Nix 2.8.0: the tests run against fixtures written
//! by the real client (see `tests/fixtures/make-fixtures.sh`).

pub mod binary_cache;
pub mod compression;
mod error;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod nix32;
pub mod realisation;
pub mod signing;
pub mod store_path;

pub use error::Error;
