//! NAR compression names and the `nar/<filehash>.nar<ext>` URL scheme.
//!
//! The narinfo `Compression:` field is the only source of truth for how a NAR
//! file is compressed: nix names gzip-compressed NARs `.nar` with no
//! extension, so the file name cannot be trusted for that.

use crate::error::{excerpt, Error};
use crate::hash::Sha256Hash;

/// The compression methods nix knows by name.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Compression {
    None,
    Xz,
    Bzip2,
    Zstd,
    Lzip,
    Lz4,
    Br,
    Gzip,
}

impl Compression {
    pub const ALL: [Compression; 8] = [Self::None, Self::Xz, Self::Bzip2, Self::Zstd, Self::Lzip, Self::Lz4, Self::Br, Self::Gzip];

    /// Parses the exact name nix uses. An empty or absent `Compression:`
    /// field means bzip2 to nix, but that is decided by the narinfo parser,
    /// not here.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Xz => "xz",
            Self::Bzip2 => "bzip2",
            Self::Zstd => "zstd",
            Self::Lzip => "lzip",
            Self::Lz4 => "lz4",
            Self::Br => "br",
            Self::Gzip => "gzip",
        }
    }

    /// The suffix nix appends after `.nar` when it uploads. `none` and
    /// `gzip` both get no suffix.
    pub fn extension(&self) -> &'static str {
        match self {
            Self::None | Self::Gzip => "",
            Self::Xz => ".xz",
            Self::Bzip2 => ".bz2",
            Self::Zstd => ".zst",
            Self::Lzip => ".lzip",
            Self::Lz4 => ".lz4",
            Self::Br => ".br",
        }
    }
}

/// The URL nix would give a NAR file: `nar/<nix32 file hash>.nar<ext>`.
pub fn nar_url(file_hash: &Sha256Hash, c: Compression) -> String {
    format!("nar/{}.nar{}", file_hash.to_nix32(), c.extension())
}

/// Every extension nix produces, for [`parse_nar_file_name`].
const EXTENSIONS: [&str; 7] = ["", ".xz", ".bz2", ".zst", ".lzip", ".lz4", ".br"];

/// Parses the file name after `nar/`: `<nix32 52>.nar[.ext]`, returning the
/// file hash and the extension (e.g. `".zst"`, or `""`). Only extensions
/// nix itself writes are accepted; the extension says nothing reliable about
/// the compression (see the module docs).
pub fn parse_nar_file_name(s: &str) -> Result<(Sha256Hash, &str), Error> {
    let err = |reason: &str| Error::NarFileName { input: excerpt(s), reason: reason.to_string() };
    let (hash, rest) = s.split_once('.').ok_or_else(|| err("expected '<hash>.nar[.ext]'"))?;
    let ext = rest.strip_prefix("nar").ok_or_else(|| err("expected '<hash>.nar[.ext]'"))?;
    if !EXTENSIONS.contains(&ext) {
        return Err(err("unknown extension after '.nar'"));
    }
    let hash = Sha256Hash::from_nix32(hash).map_err(|e| Error::NarFileName { input: excerpt(s), reason: e.to_string() })?;
    Ok((hash, ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "1hb9z2rpdsfi0p5r6pginj3cbxlfdsld0pvsnid7iav4bqvj1wvl";

    #[test]
    fn names_round_trip() {
        for c in Compression::ALL {
            assert_eq!(Compression::from_name(c.name()), Some(c));
        }
        assert_eq!(Compression::from_name(""), None);
        assert_eq!(Compression::from_name("XZ"), None);
        assert_eq!(Compression::from_name("zst"), None);
    }

    #[test]
    fn urls_follow_nix() {
        let h = Sha256Hash::from_nix32(H).unwrap();
        assert_eq!(nar_url(&h, Compression::Zstd), format!("nar/{H}.nar.zst"));
        assert_eq!(nar_url(&h, Compression::Xz), format!("nar/{H}.nar.xz"));
        assert_eq!(nar_url(&h, Compression::Bzip2), format!("nar/{H}.nar.bz2"));
        assert_eq!(nar_url(&h, Compression::None), format!("nar/{H}.nar"));
        assert_eq!(nar_url(&h, Compression::Gzip), format!("nar/{H}.nar"));
        for c in Compression::ALL {
            let url = nar_url(&h, c);
            let (parsed, ext) = parse_nar_file_name(url.strip_prefix("nar/").unwrap()).unwrap();
            assert_eq!(parsed, h);
            assert_eq!(ext, c.extension());
        }
    }

    #[test]
    fn rejects_bad_file_names() {
        for bad in [
            H.to_string(),
            format!("{H}.nar.gz"),
            format!("{H}.narx"),
            format!("{H}.tar"),
            format!("{H}.nar.xz/x"),
            format!("{H}.nar.xz.xz"),
            format!("{}.nar", &H[1..]),
            format!("e{}.nar", &H[1..]),
            ".nar".to_string(),
            format!("../{H}.nar"),
        ] {
            assert!(parse_nar_file_name(&bad).is_err(), "{bad}");
        }
    }
}
