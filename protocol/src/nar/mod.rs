//! NAR (Nix ARchive) validation.
//!
//! A cache must not trust the `NarHash`/`NarSize` a client claims (nix 2.8
//! uploads them from its local database without re-checking), so the server
//! runs every uploaded NAR through [`NarParser`]. One pass validates the
//! structure, hashes it and builds the `.ls` listing, without ever holding
//! file contents in memory.
//!
//! Format (all integers u64 little-endian, strings zero-padded to 8 bytes):
//!
//! ```text
//! nar   = str("nix-archive-1") node
//! node  = str("(") str("type") body str(")")
//! body  = str("regular") [str("executable") str("")] str("contents") str(<data>)
//!       | str("symlink") str("target") str(<target>)
//!       | str("directory") { str("entry") str("(") str("name") str(<name>)
//!                                str("node") node str(")") }*
//! ```

mod error;
mod listing;
mod parser;
pub mod writer;

pub use error::NarError;
pub use parser::{NarParser, NarSummary};

/// Longest directory entry name (the usual file system limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target (Linux's PATH_MAX minus the NUL).
pub const MAX_TARGET_LEN: usize = 4095;
/// Deepest directory nesting accepted; real store paths are far shallower.
pub const MAX_DEPTH: usize = 256;
/// Largest `.ls` listing kept by default: about 60 bytes per file plus its name, so room
/// for a couple of hundred thousand files, more than any real store path holds.
pub const DEFAULT_MAX_LISTING_SIZE: usize = 16 << 20;

#[cfg(test)]
mod tests;
