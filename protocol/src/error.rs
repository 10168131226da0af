//! The crate-level error for values that come in as text: hashes, store
//! paths, keys and signatures. NAR and narinfo parsing have their own errors,
//! because their callers want to know the line or byte offset.

/// A value failed validation. The message names the value and the reason, and
/// is short enough to send back to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid nix32 string: {0}")]
    Nix32(String),
    #[error("invalid hash '{input}': {reason}")]
    Hash { input: String, reason: String },
    #[error("invalid store path '{input}': {reason}")]
    StorePath { input: String, reason: String },
    #[error("invalid key: {0}")]
    Key(String),
    #[error("invalid signature: {0}")]
    Signature(String),
    #[error("invalid NAR file name '{input}': {reason}")]
    NarFileName { input: String, reason: String },
}

/// Untrusted input is echoed in messages; cap it so a 1 MB header cannot
/// become a 1 MB log line.
pub(crate) fn excerpt(s: &str) -> String {
    const MAX: usize = 100;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

/// Same as [`excerpt`] for byte strings that may not be UTF-8.
pub(crate) fn excerpt_bytes(b: &[u8]) -> String {
    excerpt(&String::from_utf8_lossy(b))
}
