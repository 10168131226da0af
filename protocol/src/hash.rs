//! SHA-256 hashes in every textual form nix reads, and the one form it writes.
//!
//! Nix accepts `sha256:` followed by nix32, hex or base64, and SRI
//! (`sha256-<base64>`), but always writes `sha256:<nix32>`. Signatures are
//! computed over that canonical form, so the form a narinfo happens to use
//! never matters once parsed.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::Digest;

use crate::error::{excerpt, Error};
use crate::nix32;

const SIZE: usize = 32;
const NIX32_LEN: usize = 52;
const HEX_LEN: usize = 64;
const BASE64_LEN: usize = 44;

/// A SHA-256 digest. Only sha256 is supported because it is the only
/// algorithm nix uses for NarHash, FileHash and fingerprints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// Hashes `data` in one go.
    pub fn digest(data: &[u8]) -> Self {
        Self(sha2::Sha256::digest(data).into())
    }

    /// Parses a hash with its algorithm named, as found in narinfo files:
    /// `sha256:` + nix32 (52), hex (64) or base64 (44) chars, or SRI
    /// `sha256-<base64>`. Unlike nix's command line, a bare hash is rejected,
    /// because nix rejects it in narinfo files too.
    pub fn parse_typed(s: &str) -> Result<Self, Error> {
        let err = |reason: String| Error::Hash { input: excerpt(s), reason };
        // Nix looks for ':' first and only then for an SRI '-'.
        if let Some((algo, rest)) = s.split_once(':') {
            if algo != "sha256" {
                return Err(err(format!("unsupported hash type '{}'", excerpt(algo))));
            }
            match rest.len() {
                NIX32_LEN => Self::from_nix32(rest),
                HEX_LEN => Self::from_hex(rest).map_err(|_| err("invalid hex digest".into())),
                BASE64_LEN => Self::from_base64(rest).map_err(err),
                n => Err(err(format!(
                    "a sha256 digest has {NIX32_LEN} (nix32), {HEX_LEN} (hex) or {BASE64_LEN} (base64) characters, not {n}"
                ))),
            }
        } else if let Some((algo, rest)) = s.split_once('-') {
            if algo != "sha256" {
                return Err(err(format!("unsupported hash type '{}'", excerpt(algo))));
            }
            if rest.len() != BASE64_LEN {
                return Err(err(format!("an SRI sha256 digest has {BASE64_LEN} base64 characters, not {}", rest.len())));
            }
            Self::from_base64(rest).map_err(err)
        } else {
            Err(err("missing 'sha256:' prefix".into()))
        }
    }

    /// Parses a bare 52-character nix32 digest (as in NAR file names).
    pub fn from_nix32(s: &str) -> Result<Self, Error> {
        if s.len() != NIX32_LEN {
            return Err(Error::Hash {
                input: excerpt(s),
                reason: format!("a nix32 sha256 digest has {NIX32_LEN} characters, not {}", s.len()),
            });
        }
        let bytes = nix32::decode(s)?;
        to_array(&bytes).map(Self).map_err(|reason| Error::Hash { input: excerpt(s), reason })
    }

    /// Bare nix32, as used in NAR file names.
    pub fn to_nix32(&self) -> String {
        nix32::encode(&self.0)
    }

    /// `sha256:<nix32>`: what nix writes in narinfo files and fingerprints.
    pub fn to_typed_nix32(&self) -> String {
        format!("sha256:{}", self.to_nix32())
    }

    /// Lower-case hex without prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `sha256-<base64>`, the form newer nix prints by default.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", STANDARD.encode(self.0))
    }

    fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; SIZE];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Self(out))
    }

    fn from_base64(s: &str) -> Result<Self, String> {
        let bytes = STANDARD.decode(s).map_err(|e| format!("invalid base64: {e}"))?;
        to_array(&bytes).map(Self)
    }
}

fn to_array(bytes: &[u8]) -> Result<[u8; SIZE], String> {
    bytes.try_into().map_err(|_| format!("a sha256 digest is {SIZE} bytes, not {}", bytes.len()))
}

/// Displays as `sha256:<nix32>`, the canonical form.
impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_typed_nix32())
    }
}

impl FromStr for Sha256Hash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse_typed(s)
    }
}

/// Incremental SHA-256, for hashing streams (NARs, compressed uploads)
/// without holding them in memory.
#[derive(Default, Clone)]
pub struct Sha256Hasher(sha2::Sha256);

impl Sha256Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> Sha256Hash {
        Sha256Hash(self.0.finalize().into())
    }
}

impl fmt::Debug for Sha256Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha256Hasher")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 128-byte NAR of a file containing "hello world\n" (doc §4.1).
    const HELLO_NAR_HASH: &str = "sha256:00zns3gj9hwz2a4b0i07y7nmxybq59lh24bl3xsxblcl6333mjil";
    const HELLO_NAR_HEX: &str = "34ca3ac63094d1d5751f741101692a78f95eedf10744b088129fc324dfd0f603";
    const HELLO_NAR_SRI: &str = "sha256-NMo6xjCU0dV1H3QRAWkqePle7fEHRLCIEp/DJN/Q9gM=";

    #[test]
    fn all_forms_agree() {
        let h = Sha256Hash::parse_typed(HELLO_NAR_HASH).unwrap();
        assert_eq!(h.to_hex(), HELLO_NAR_HEX);
        assert_eq!(h.to_sri(), HELLO_NAR_SRI);
        assert_eq!(h.to_typed_nix32(), HELLO_NAR_HASH);
        assert_eq!(h.to_string(), HELLO_NAR_HASH);
        assert_eq!(Sha256Hash::parse_typed(&format!("sha256:{HELLO_NAR_HEX}")).unwrap(), h);
        assert_eq!(Sha256Hash::parse_typed(&format!("sha256:{}", HELLO_NAR_HEX.to_uppercase())).unwrap(), h);
        assert_eq!(Sha256Hash::parse_typed(HELLO_NAR_SRI).unwrap(), h);
        let b64 = HELLO_NAR_SRI.strip_prefix("sha256-").unwrap();
        assert_eq!(Sha256Hash::parse_typed(&format!("sha256:{b64}")).unwrap(), h);
        assert_eq!(Sha256Hash::from_nix32(&h.to_nix32()).unwrap(), h);
        assert_eq!(HELLO_NAR_HASH.parse::<Sha256Hash>().unwrap(), h);
    }

    #[test]
    fn rejects_missing_or_wrong_prefix() {
        let bare = HELLO_NAR_HASH.strip_prefix("sha256:").unwrap();
        let e = Sha256Hash::parse_typed(bare).unwrap_err();
        assert!(e.to_string().contains("missing 'sha256:' prefix"), "{e}");
        assert!(Sha256Hash::parse_typed(HELLO_NAR_HEX).is_err());
        assert!(Sha256Hash::parse_typed(&format!("sha512:{bare}")).is_err());
        assert!(Sha256Hash::parse_typed(&format!("SHA256:{bare}")).is_err());
        assert!(Sha256Hash::parse_typed(&format!("sha1-{bare}")).is_err());
        assert!(Sha256Hash::parse_typed("").is_err());
    }

    #[test]
    fn rejects_malformed_digests() {
        // Wrong lengths.
        assert!(Sha256Hash::parse_typed("sha256:00zns3gj").is_err());
        assert!(Sha256Hash::parse_typed(&format!("{HELLO_NAR_HASH}0")).is_err());
        // 'e' is not a nix32 digit.
        let bad = format!("sha256:e{}", &HELLO_NAR_HASH[8..]);
        assert!(Sha256Hash::parse_typed(&bad).is_err());
        // Overflow bits in the first digit: 52 digits carry 260 bits.
        let overflow = format!("sha256:z{}", &HELLO_NAR_HASH[8..]);
        assert!(Sha256Hash::parse_typed(&overflow).is_err());
        // Bad hex and bad base64 of the right lengths.
        assert!(Sha256Hash::parse_typed(&format!("sha256:{}", "g".repeat(64))).is_err());
        assert!(Sha256Hash::parse_typed(&format!("sha256-{}", "!".repeat(44))).is_err());
        // SRI with a length that is not 44.
        assert!(Sha256Hash::parse_typed("sha256-NMo6xjCU0dV1H3QRAWkqePle7fEHRLCIEp/DJN/Q9gM").is_err());
        assert!(Sha256Hash::from_nix32("abc").is_err());
    }

    #[test]
    fn digest_and_incremental_agree() {
        let data = b"the quick brown fox jumps over the lazy dog";
        let mut hasher = Sha256Hasher::new();
        for chunk in data.chunks(5) {
            hasher.update(chunk);
        }
        assert_eq!(hasher.finish(), Sha256Hash::digest(data));
        assert_eq!(Sha256Hash::digest(b"").to_nix32(), "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
    }
}
