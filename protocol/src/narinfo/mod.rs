//! `.narinfo` files: parsing as strictly as nix 2.8 does, rendering exactly
//! as it writes them, and the fingerprint that signatures cover.
//!
//! Nix's parser is fragile (it slices at fixed offsets), so a narinfo that
//! we accept must be one nix reads the same way. Hence the strict line rules:
//! `Key: value` with exactly one space, LF endings including the last line,
//! no CR, no blank lines.

use std::collections::BTreeSet;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::compression::Compression;
use crate::error::excerpt;
use crate::hash::Sha256Hash;
use crate::nix32;
use crate::signing::{PublicKey, SecretKey, Signature};
use crate::store_path::StorePath;

/// The largest narinfo accepted, in bytes. Nix writes no limit, but a real narinfo holds
/// a few hundred bytes plus about 60 per reference: even a NixOS system path with a few
/// thousand direct references stays far below this.
pub const MAX_NARINFO_SIZE: usize = 1 << 20;

/// The most references a narinfo may list (the largest real ones list a few thousand).
pub const MAX_REFERENCES: usize = 10_000;

/// The most `Sig` lines a narinfo may carry (nix writes one per signing key).
pub const MAX_SIGNATURES: usize = 64;

/// The metadata of one store path in a binary cache.
#[derive(Clone, Debug, PartialEq)]
pub struct NarInfo {
    pub store_path: StorePath,
    /// Where the (compressed) NAR is, relative to the cache root.
    pub url: String,
    pub compression: Compression,
    /// sha256 of the file at `url`. Informational: nix never checks it.
    pub file_hash: Option<Sha256Hash>,
    pub file_size: Option<u64>,
    /// sha256 of the uncompressed NAR; nix verifies it after download.
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    /// As written (nix writes them sorted); may include the path itself.
    pub references: Vec<StorePath>,
    /// `None` when absent or `unknown-deriver`.
    pub deriver: Option<StorePath>,
    pub system: Option<String>,
    /// In file order; each was written in canonical `name:base64` form.
    pub sigs: Vec<Signature>,
    /// Content address, e.g. `fixed:r:sha256:<nix32>` or `text:sha256:<nix32>`.
    pub ca: Option<String>,
}

/// Why a narinfo was rejected. Messages name the line (1-based) or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarInfoError {
    #[error("line {line}: carriage return found; lines must end with LF only")]
    CarriageReturn { line: usize },
    #[error("the last line does not end with a newline")]
    MissingFinalNewline,
    #[error("line {line}: blank lines are not allowed")]
    BlankLine { line: usize },
    #[error("line {line}: expected 'Key: value'")]
    Syntax { line: usize },
    #[error("line {line}: duplicate field {field}")]
    Duplicate { line: usize, field: &'static str },
    #[error("line {line}: invalid {field}: {reason}")]
    InvalidField { line: usize, field: &'static str, reason: String },
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("NarSize must be greater than 0")]
    ZeroNarSize,
    #[error("narinfo is {0} bytes: at most {MAX_NARINFO_SIZE} are accepted")]
    TooLarge(usize),
    #[error("more than {MAX_REFERENCES} references")]
    TooManyReferences,
    #[error("more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
}

/// Fields that may appear at most once. (`References` has nix's own rule;
/// `Sig` may repeat.)
const SINGLE_FIELDS: [&str; 10] =
    ["StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash", "NarSize", "Deriver", "System", "CA"];

impl NarInfo {
    /// Parses a narinfo. Unknown keys are ignored, as nix does.
    pub fn parse(text: &str) -> Result<Self, NarInfoError> {
        if text.len() > MAX_NARINFO_SIZE {
            return Err(NarInfoError::TooLarge(text.len()));
        }
        if let Some(pos) = text.find('\r') {
            let line = text[..pos].matches('\n').count() + 1;
            return Err(NarInfoError::CarriageReturn { line });
        }
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(NarInfoError::MissingFinalNewline);
        }

        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references: Vec<StorePath> = Vec::new();
        let mut deriver = None;
        let mut system = None;
        let mut sigs = Vec::new();
        let mut ca = None;
        let mut seen: BTreeSet<&'static str> = BTreeSet::new();

        for (index, line_text) in text.split_terminator('\n').enumerate() {
            let line = index + 1;
            if line_text.is_empty() {
                return Err(NarInfoError::BlankLine { line });
            }
            // Nix takes the key up to the first ':' and the value from two
            // characters after it, so the separator must be exactly ": ".
            let (key, value) = line_text
                .split_once(':')
                .and_then(|(k, rest)| Some((k, rest.strip_prefix(' ')?)))
                .filter(|(k, _)| !k.is_empty())
                .ok_or(NarInfoError::Syntax { line })?;
            let invalid = |field: &'static str, reason: String| NarInfoError::InvalidField { line, field, reason };
            if let Some(&field) = SINGLE_FIELDS.iter().find(|f| **f == key) {
                if !seen.insert(field) {
                    return Err(NarInfoError::Duplicate { line, field });
                }
            }
            match key {
                "StorePath" => {
                    store_path = Some(StorePath::parse(value).map_err(|e| invalid("StorePath", e.to_string()))?);
                }
                "URL" => {
                    if value.is_empty() {
                        return Err(invalid("URL", "must not be empty".into()));
                    }
                    url = Some(value.to_string());
                }
                "Compression" => {
                    // Empty means bzip2, as it does to nix.
                    compression = Some(if value.is_empty() {
                        Compression::Bzip2
                    } else {
                        Compression::from_name(value)
                            .ok_or_else(|| invalid("Compression", format!("unknown method '{}'", excerpt(value))))?
                    });
                }
                "FileHash" => {
                    file_hash = Some(Sha256Hash::parse_typed(value).map_err(|e| invalid("FileHash", e.to_string()))?);
                }
                "FileSize" => file_size = Some(parse_u64(value).map_err(|r| invalid("FileSize", r))?),
                "NarHash" => {
                    nar_hash = Some(Sha256Hash::parse_typed(value).map_err(|e| invalid("NarHash", e.to_string()))?);
                }
                "NarSize" => nar_size = Some(parse_u64(value).map_err(|r| invalid("NarSize", r))?),
                "References" => {
                    // Nix's rule: a References line after one with content is
                    // corrupt; an empty one may be followed by another.
                    if !references.is_empty() {
                        return Err(invalid("References", "given twice (a second References line after one with paths)".into()));
                    }
                    for base in value.split(' ').filter(|s| !s.is_empty()) {
                        if references.len() == MAX_REFERENCES {
                            return Err(NarInfoError::TooManyReferences);
                        }
                        references.push(StorePath::from_base_name(base).map_err(|e| invalid("References", e.to_string()))?);
                    }
                }
                // "unknown-deriver" means none, as does an empty System or CA.
                "Deriver" if value == "unknown-deriver" => {}
                "System" | "CA" if value.is_empty() => {}
                "Deriver" => {
                    deriver = Some(StorePath::from_base_name(value).map_err(|e| invalid("Deriver", e.to_string()))?);
                }
                "System" => system = Some(value.to_string()),
                "Sig" if sigs.len() == MAX_SIGNATURES => {
                    return Err(NarInfoError::TooManySignatures);
                }
                "Sig" => {
                    // Nix 2.8 aborts on a malformed signature under a trusted
                    // name and newer nix rejects the narinfo, so never keep one.
                    let sig = Signature::parse(value).map_err(|e| invalid("Sig", e.to_string()))?;
                    if sig.to_nix_string() != value {
                        return Err(invalid("Sig", "not in canonical 'name:base64' form".into()));
                    }
                    sigs.push(sig);
                }
                "CA" => {
                    check_content_address(value).map_err(|r| invalid("CA", r))?;
                    ca = Some(value.to_string());
                }
                _ => {}
            }
        }

        let store_path = store_path.ok_or(NarInfoError::Missing("StorePath"))?;
        let url = url.ok_or(NarInfoError::Missing("URL"))?;
        let nar_hash = nar_hash.ok_or(NarInfoError::Missing("NarHash"))?;
        let nar_size = nar_size.ok_or(NarInfoError::Missing("NarSize"))?;
        if nar_size == 0 {
            return Err(NarInfoError::ZeroNarSize);
        }
        Ok(Self {
            store_path,
            url,
            compression: compression.unwrap_or(Compression::Bzip2),
            file_hash,
            file_size,
            nar_hash,
            nar_size,
            references,
            deriver,
            system,
            sigs,
            ca,
        })
    }

    /// Renders the narinfo as nix writes it: its field order, `References:`
    /// always present (with a trailing space when empty), hashes as
    /// `sha256:<nix32>`, LF line endings and a final newline.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(512);
        let mut field = |key: &str, value: &str| {
            out.push_str(key);
            out.push_str(": ");
            out.push_str(value);
            out.push('\n');
        };
        field("StorePath", &self.store_path.to_absolute());
        field("URL", &self.url);
        field("Compression", self.compression.name());
        if let Some(h) = &self.file_hash {
            field("FileHash", &h.to_typed_nix32());
        }
        if let Some(size) = self.file_size {
            field("FileSize", &size.to_string());
        }
        field("NarHash", &self.nar_hash.to_typed_nix32());
        field("NarSize", &self.nar_size.to_string());
        let refs: Vec<String> = self.references.iter().map(StorePath::base_name).collect();
        field("References", &refs.join(" "));
        if let Some(d) = &self.deriver {
            field("Deriver", &d.base_name());
        }
        if let Some(s) = self.system.as_deref().filter(|s| !s.is_empty()) {
            field("System", s);
        }
        for sig in &self.sigs {
            field("Sig", &sig.to_nix_string());
        }
        if let Some(ca) = &self.ca {
            field("CA", ca);
        }
        out
    }

    /// What a signature covers:
    /// `1;<path>;sha256:<nix32>;<narsize>;<sorted absolute refs, comma-joined>`.
    /// URL, compression, file hash/size, deriver and CA are not covered, so
    /// a NAR can be recompressed without re-signing.
    pub fn fingerprint(&self) -> String {
        let refs: BTreeSet<String> = self.references.iter().map(StorePath::to_absolute).collect();
        format!(
            "1;{};{};{};{}",
            self.store_path.to_absolute(),
            self.nar_hash.to_typed_nix32(),
            self.nar_size,
            refs.into_iter().collect::<Vec<_>>().join(",")
        )
    }

    /// Adds a signature by `key`, replacing any earlier one under the same
    /// key name (so re-signing after a key rotation does not pile up sigs).
    pub fn sign(&mut self, key: &SecretKey) {
        let sig = key.sign(self.fingerprint().as_bytes());
        self.sigs.retain(|old| old.key_name() != key.name());
        self.sigs.push(sig);
    }

    /// True if one of the `Sig` values is a valid signature by `key`.
    pub fn is_signed_by(&self, key: &PublicKey) -> bool {
        let fingerprint = self.fingerprint();
        self.sigs.iter().any(|sig| key.verify(fingerprint.as_bytes(), sig))
    }

    /// Keeps only the signatures by keys named in `key_names`.
    pub fn retain_signatures_by(&mut self, key_names: &[&str]) {
        self.sigs.retain(|sig| key_names.contains(&sig.key_name()));
    }
}

/// Decimal digits only: nix never writes a sign, spaces or anything else.
fn parse_u64(value: &str) -> Result<u64, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{}' is not a decimal number", excerpt(value)));
    }
    value.parse().map_err(|_| format!("'{}' is too large", excerpt(value)))
}

/// Checks a content address the way nix 2.8 parses one:
/// `text:sha256:<digest>`, `fixed:r:<algo>:<digest>` or `fixed:<algo>:<digest>`,
/// with the digest in nix32, hex or base64 (no SRI, no type prefix inside).
fn check_content_address(value: &str) -> Result<(), String> {
    let bad = || format!("'{}' is not a content address", excerpt(value));
    let (algo, digest) = if let Some(rest) = value.strip_prefix("text:") {
        let digest = rest.strip_prefix("sha256:").ok_or_else(bad)?;
        ("sha256", digest)
    } else if let Some(rest) = value.strip_prefix("fixed:") {
        let rest = rest.strip_prefix("r:").unwrap_or(rest);
        rest.split_once(':').ok_or_else(bad)?
    } else {
        return Err(bad());
    };
    let size = match algo {
        "md5" => 16,
        "sha1" => 20,
        "sha256" => 32,
        "sha512" => 64,
        _ => return Err(format!("unsupported hash type '{}'", excerpt(algo))),
    };
    let decoded = if digest.len() == nix32::encoded_len(size) {
        nix32::decode(digest).ok()
    } else if digest.len() == size * 2 {
        hex::decode(digest).ok()
    } else if digest.len() == size.div_ceil(3) * 4 {
        STANDARD.decode(digest).ok()
    } else {
        None
    };
    match decoded {
        Some(bytes) if bytes.len() == size => Ok(()),
        _ => Err(format!("invalid {algo} digest in '{}'", excerpt(value))),
    }
}

#[cfg(test)]
mod tests;
