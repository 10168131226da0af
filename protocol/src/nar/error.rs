//! Why a NAR was rejected.

/// A NAR failed validation. Offsets are byte positions in the uncompressed
/// NAR, which helps when comparing against a hexdump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarError {
    #[error("not a NAR (bad magic)")]
    BadMagic,
    #[error("at byte {offset}: expected {expected}, found {found}")]
    Unexpected { offset: u64, expected: &'static str, found: String },
    #[error("non-zero padding at byte {offset}")]
    NonZeroPadding { offset: u64 },
    #[error("directory entries not sorted: '{name}' after '{previous}'")]
    Unsorted { previous: String, name: String },
    #[error("duplicate directory entry '{name}'")]
    DuplicateEntry { name: String },
    #[error("invalid directory entry name '{name}': {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("name too long ({len} bytes, at most {max})", max = super::MAX_NAME_LEN)]
    NameTooLong { len: u64 },
    #[error("symlink target is empty")]
    EmptyTarget,
    #[error("symlink target too long ({len} bytes, at most {max})", max = super::MAX_TARGET_LEN)]
    TargetTooLong { len: u64 },
    #[error("symlink target contains a NUL byte")]
    TargetHasNul,
    #[error("executable marker has a non-empty value")]
    ExecutableNotEmpty,
    #[error("directories nested more than {max} deep", max = super::MAX_DEPTH)]
    TooDeep,
    #[error("trailing bytes after the archive (at byte {offset})")]
    TrailingBytes { offset: u64 },
    #[error("NAR is incomplete: it ends at byte {offset}, before {expected}")]
    Truncated { offset: u64, expected: &'static str },
    #[error("the NAR parser already failed; start a new one")]
    AlreadyFailed,
}
