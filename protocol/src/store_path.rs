//! Store paths: `/nix/store/<hash>-<name>`.
//!
//! The hash part is what a cache is keyed by (`<hash>.narinfo`), so it is a
//! type of its own. Validation follows nix's own checks, plus two stricter
//! rules noted on [`StorePath::from_base_name`].

use std::fmt;
use std::str::FromStr;

use crate::error::{excerpt, Error};
use crate::nix32;

/// The only store directory a cache serves; `nix-cache-info` says so.
pub const STORE_DIR: &str = "/nix/store";

/// Length of the hash part: nix32 of 20 bytes.
pub const HASH_LEN: usize = 32;

/// Longest name nix accepts.
pub const MAX_NAME_LEN: usize = 211;

/// The 32-character nix32 hash part of a store path.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct StorePathHash(String);

impl StorePathHash {
    /// Accepts exactly 32 characters of the nix32 alphabet (no `e o u t`).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let err = |reason: String| Error::StorePath { input: excerpt(s), reason };
        if s.len() != HASH_LEN {
            return Err(err(format!("hash part must be {HASH_LEN} characters, not {}", s.len())));
        }
        if let Some(c) = s.chars().find(|c| !is_nix32_char(*c)) {
            return Err(err(format!("hash part contains '{}', which is not a nix32 digit", c.escape_default())));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for StorePathHash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl AsRef<str> for StorePathHash {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn is_nix32_char(c: char) -> bool {
    c.is_ascii() && nix32::ALPHABET.contains(&(c as u8))
}

/// A store path under [`STORE_DIR`].
///
/// The derived ordering (hash, then name) is the same as ordering the
/// absolute paths as strings, which is how nix sorts references.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct StorePath {
    hash: StorePathHash,
    name: String,
}

impl StorePath {
    /// Parses an absolute path, `/nix/store/<hash>-<name>`, as in a
    /// narinfo's `StorePath:` line. Nothing may follow the name.
    pub fn parse(absolute: &str) -> Result<Self, Error> {
        let base = absolute
            .strip_prefix(STORE_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| Error::StorePath { input: excerpt(absolute), reason: format!("not in {STORE_DIR}") })?;
        Self::from_base_name(base).map_err(|e| match e {
            Error::StorePath { reason, .. } => Error::StorePath { input: excerpt(absolute), reason },
            other => other,
        })
    }

    /// Parses a base name, `<hash>-<name>`, as in `References:` and
    /// `Deriver:`.
    ///
    /// Stricter than nix 2.8 in two ways: the separator must be `-` (2.8
    /// skips whatever character is there), and the name may not start with
    /// `.` (later nix versions reject such names; nix 2.8 accepted them).
    pub fn from_base_name(base: &str) -> Result<Self, Error> {
        let err = |reason: String| Error::StorePath { input: excerpt(base), reason };
        if base.len() < HASH_LEN + 2 {
            return Err(err("too short to be a store path".into()));
        }
        let (hash, rest) = base.split_at_checked(HASH_LEN).ok_or_else(|| err("hash part must be ASCII".into()))?;
        let hash = StorePathHash::parse(hash).map_err(|e| match e {
            Error::StorePath { reason, .. } => err(reason),
            other => other,
        })?;
        let name = rest.strip_prefix('-').ok_or_else(|| err(format!("expected '-' after the {HASH_LEN}-character hash")))?;
        check_name(name).map_err(err)?;
        Ok(Self { hash, name: name.to_string() })
    }

    pub fn hash(&self) -> &StorePathHash {
        &self.hash
    }

    /// The 32-character hash, which names the path's `.narinfo` and `.ls`.
    pub fn hash_part(&self) -> &str {
        self.hash.as_str()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<hash>-<name>`, the form used in `References:` and `Deriver:`.
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.hash, self.name)
    }

    /// `/nix/store/<hash>-<name>`.
    pub fn to_absolute(&self) -> String {
        format!("{STORE_DIR}/{}-{}", self.hash, self.name)
    }
}

/// The name rules of nix's `checkName`, plus no leading dot.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name is {} characters long, more than {MAX_NAME_LEN}", name.len()));
    }
    if name.starts_with('.') {
        return Err("name starts with '.'".into());
    }
    if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(format!("name contains illegal character '{}'", c.escape_default()));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')
}

/// Displays the absolute path.
impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}-{}", self.hash, self.name)
    }
}

impl FromStr for StorePath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "7isza30lf8nmh888vlbr001s5r63llif";

    #[test]
    fn parses_and_prints() {
        let p = StorePath::parse("/nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg").unwrap();
        assert_eq!(p.hash().as_str(), HASH);
        assert_eq!(p.name(), "pkg");
        assert_eq!(p.base_name(), "7isza30lf8nmh888vlbr001s5r63llif-pkg");
        assert_eq!(p.to_absolute(), "/nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg");
        assert_eq!(p.to_string(), p.to_absolute());
        assert_eq!(StorePath::from_base_name(&p.base_name()).unwrap(), p);
    }

    #[test]
    fn accepts_every_allowed_name_character() {
        let name = "aZ09+-._?=-1.0";
        let p = StorePath::from_base_name(&format!("{HASH}-{name}")).unwrap();
        assert_eq!(p.name(), name);
        let long = "a".repeat(MAX_NAME_LEN);
        assert!(StorePath::from_base_name(&format!("{HASH}-{long}")).is_ok());
    }

    #[test]
    fn rejects_bad_hash_parts() {
        for c in ['e', 'o', 'u', 't', 'A', '-', 'é'] {
            let mut hash: String = HASH[..31].to_string();
            hash.push(c);
            assert!(StorePathHash::parse(&hash).is_err(), "{hash}");
            assert!(StorePath::from_base_name(&format!("{hash}-x")).is_err(), "{hash}");
        }
        assert!(StorePathHash::parse(&HASH[..31]).is_err());
        assert!(StorePathHash::parse(&format!("{HASH}0")).is_err());
        assert!(StorePathHash::parse(HASH).is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        for name in ["", ".hidden", ".", "..", "a b", "a/b", "a:b", "caf\u{e9}", "a\r", "a\n", "a*", &too_long] {
            let base = format!("{HASH}-{name}");
            assert!(StorePath::from_base_name(&base).is_err(), "{name:?}");
        }
        let e = StorePath::from_base_name(&format!("{HASH}-.x")).unwrap_err();
        assert!(e.to_string().contains("starts with '.'"), "{e}");
        let e = StorePath::from_base_name(&format!("{HASH}-a\r")).unwrap_err();
        assert!(e.to_string().contains("illegal character '\\r'"), "{e}");
    }

    #[test]
    fn rejects_bad_layout() {
        for bad in [
            "7isza30lf8nmh888vlbr001s5r63llif-pkg",
            "/nix/store/7isza30lf8nmh888vlbr001s5r63llif",
            "/nix/store/7isza30lf8nmh888vlbr001s5r63llif-",
            "/nix/store/7isza30lf8nmh888vlbr001s5r63llifXpkg",
            "/nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg/bin",
            "/nix/store//7isza30lf8nmh888vlbr001s5r63llif-pkg",
            "/nix/storex/7isza30lf8nmh888vlbr001s5r63llif-pkg",
            "/gnu/store/7isza30lf8nmh888vlbr001s5r63llif-pkg",
            "nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg",
            "/nix/store/",
            "",
        ] {
            assert!(StorePath::parse(bad).is_err(), "{bad}");
        }
        // Multi-byte characters where the hash ends must not panic.
        assert!(StorePath::from_base_name("7isza30lf8nmh888vlbr001s5r63lli\u{e9}-pkg").is_err());
    }

    #[test]
    fn ordering_matches_string_ordering() {
        let a = StorePath::from_base_name(&format!("{HASH}-a")).unwrap();
        let ab = StorePath::from_base_name(&format!("{HASH}-a-b")).unwrap();
        let other = StorePath::from_base_name("0isza30lf8nmh888vlbr001s5r63llif-zzz").unwrap();
        let mut paths = vec![ab.clone(), a.clone(), other.clone()];
        paths.sort();
        let mut strings: Vec<String> = paths.iter().map(|p| p.to_absolute()).collect();
        let sorted_paths = strings.clone();
        strings.sort();
        assert_eq!(strings, sorted_paths);
        assert_eq!(paths, vec![other, a, ab]);
    }
}
