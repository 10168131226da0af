//! Ed25519 keys and signatures in Nix's text formats.
//!
//! - secret key: `name:base64(seed(32) || public(32))` (libsodium's layout)
//! - public key: `name:base64(public(32))`
//! - signature:  `name:base64(signature(64))`
//!
//! Nix finds the public key for a signature by name, so the name is part of
//! every value and [`PublicKey::verify`] checks it.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;

use crate::error::{excerpt, Error};

/// Splits `name:base64` and decodes the base64 part into exactly `N` bytes.
/// `make_err` builds the error variant for the kind of value being parsed.
fn parse_named<const N: usize>(s: &str, what: &str, make_err: fn(String) -> Error) -> Result<(String, [u8; N]), Error> {
    let s = s.trim();
    let (name, data) = s.split_once(':').ok_or_else(|| make_err(format!("{what} must be 'name:base64'")))?;
    check_key_name(name).map_err(make_err)?;
    let bytes = STANDARD.decode(data).map_err(|e| make_err(format!("{what} '{}' has invalid base64: {e}", excerpt(name))))?;
    let bytes: [u8; N] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| make_err(format!("{what} '{}' must decode to {N} bytes, not {}", excerpt(name), bytes.len())))?;
    Ok((name.to_string(), bytes))
}

/// A key name is what `trusted-public-keys` entries are matched by. It may
/// not contain ':' (the separator), and we also refuse whitespace and control
/// characters so a name can never break a narinfo line.
fn check_key_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("key name is empty".into());
    }
    if let Some(c) = name.chars().find(|c| *c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(format!("key name '{}' contains '{}'", excerpt(name), c.escape_default()));
    }
    Ok(())
}

/// A signing key. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Parses the contents of a nix secret key file (surrounding whitespace
    /// is ignored). The embedded public half must match the seed.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let (name, bytes) = parse_named::<64>(s, "secret key", Error::Key)?;
        Self::from_keypair_bytes(&name, &bytes)
    }

    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, Error> {
        check_key_name(name).map_err(Error::Key)?;
        Ok(Self { name: name.to_string(), key: SigningKey::generate(&mut OsRng) })
    }

    /// Rebuilds a key from [`SecretKey::to_keypair_bytes`], e.g. after
    /// decrypting it from storage.
    pub fn from_keypair_bytes(name: &str, bytes: &[u8; 64]) -> Result<Self, Error> {
        check_key_name(name).map_err(Error::Key)?;
        let key = SigningKey::from_keypair_bytes(bytes)
            .map_err(|_| Error::Key(format!("secret key '{}': public half does not match the seed", excerpt(name))))?;
        Ok(Self { name: name.to_string(), key })
    }

    /// `seed || public`, the 64 bytes inside the nix key file.
    pub fn to_keypair_bytes(&self) -> [u8; 64] {
        self.key.to_keypair_bytes()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// Signs `msg` (for a narinfo: its fingerprint). Ed25519 is
    /// deterministic, so this equals what nix would produce.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature { key_name: self.name.clone(), bytes: self.key.sign(msg).to_bytes() }
    }

    /// The nix secret key file contents, without a trailing newline.
    pub fn to_nix_string(&self) -> String {
        format!("{}:{}", self.name, STANDARD.encode(self.to_keypair_bytes()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .field("public_key", &STANDARD.encode(self.key.verifying_key().as_bytes()))
            .finish_non_exhaustive()
    }
}

impl FromStr for SecretKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// A verifying key, as in `trusted-public-keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:base64(32 bytes)`; the bytes must be a valid curve point.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let (name, bytes) = parse_named::<32>(s, "public key", Error::Key)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| Error::Key(format!("public key '{}' is not a valid ed25519 point", excerpt(&name))))?;
        Ok(Self { name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn to_nix_string(&self) -> String {
        format!("{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }

    /// True only if the signature names this key and is valid for `msg`.
    /// Uses strict verification (no small-order keys, canonical `S`), which
    /// is closest to libsodium, the verifier nix uses.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        if sig.key_name != self.name {
            return false;
        }
        let sig = ed25519_dalek::Signature::from_bytes(&sig.bytes);
        self.key.verify_strict(msg, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_nix_string())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix_string())
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// A detached signature as in a narinfo `Sig:` line.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    key_name: String,
    bytes: [u8; 64],
}

impl Signature {
    /// Parses `name:base64`, which must decode to exactly 64 bytes: nix
    /// 2.8 aborts a whole substitution on a trusted-name signature of any
    /// other length, so such values must never reach a client.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let (key_name, bytes) = parse_named::<64>(s, "signature", Error::Signature)?;
        Ok(Self { key_name, bytes })
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        self.bytes
    }

    /// `name:base64`, the `Sig:` value.
    pub fn to_nix_string(&self) -> String {
        format!("{}:{}", self.key_name, STANDARD.encode(self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_nix_string())
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix_string())
    }
}

impl FromStr for Signature {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_sign_verify() {
        let sk = SecretKey::generate("cache.example.org-1").unwrap();
        let pk = sk.public_key();
        assert_eq!(pk.name(), "cache.example.org-1");
        let sig = sk.sign(b"1;/nix/store/x;sha256:y;1;");
        assert_eq!(sig.key_name(), "cache.example.org-1");
        assert!(pk.verify(b"1;/nix/store/x;sha256:y;1;", &sig));
        assert!(!pk.verify(b"1;/nix/store/x;sha256:y;2;", &sig));
    }

    #[test]
    fn text_forms_round_trip() {
        let sk = SecretKey::generate("k-1").unwrap();
        let text = sk.to_nix_string();
        assert!(text.starts_with("k-1:"));
        let again = SecretKey::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(again.to_keypair_bytes(), sk.to_keypair_bytes());
        let pk = PublicKey::parse(&format!("{}\n", sk.public_key().to_nix_string())).unwrap();
        assert_eq!(pk, sk.public_key());
        let sig = sk.sign(b"m");
        assert_eq!(Signature::parse(&sig.to_nix_string()).unwrap(), sig);
        let restored = SecretKey::from_keypair_bytes("k-1", &sk.to_keypair_bytes()).unwrap();
        assert_eq!(restored.sign(b"m"), sig);
    }

    #[test]
    fn names_must_match() {
        let sk = SecretKey::generate("a").unwrap();
        let sig = sk.sign(b"m");
        let renamed = Signature::parse(&format!("b:{}", STANDARD.encode(sig.to_bytes()))).unwrap();
        assert!(!sk.public_key().verify(b"m", &renamed));
        let other_pk = PublicKey::parse(&format!("b:{}", STANDARD.encode(sk.public_key().key.as_bytes()))).unwrap();
        assert!(!other_pk.verify(b"m", &sig));
        assert!(other_pk.verify(b"m", &renamed));
    }

    #[test]
    fn rejects_malformed_values() {
        let sk = SecretKey::generate("a").unwrap();
        let b64_64 = STANDARD.encode([7u8; 64]);
        let b64_32 = STANDARD.encode(sk.public_key().key.as_bytes());
        assert!(Signature::parse(&format!("a:{b64_64}")).is_ok());
        for bad in [
            String::new(),
            "a".into(),
            format!(":{b64_64}"),
            format!("a b:{b64_64}"),
            format!("a:{}", STANDARD.encode([7u8; 63])),
            format!("a:{}", STANDARD.encode([7u8; 65])),
            "a:!!!!".into(),
            "a:".into(),
        ] {
            assert!(Signature::parse(&bad).is_err(), "{bad:?}");
        }
        assert!(PublicKey::parse(&format!("a:{b64_32}")).is_ok());
        assert!(PublicKey::parse(&format!("a:{b64_64}")).is_err());
        assert!(PublicKey::parse(&format!(":{b64_32}")).is_err());
        // A 64-byte secret whose public half does not belong to the seed.
        let mut bytes = sk.to_keypair_bytes();
        bytes[40] ^= 1;
        assert!(SecretKey::parse(&format!("a:{}", STANDARD.encode(bytes))).is_err());
        assert!(SecretKey::parse(&format!("a:{b64_32}")).is_err());
        assert!(SecretKey::generate("").is_err());
        assert!(SecretKey::generate("a:b").is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let sk = SecretKey::generate("hidden").unwrap();
        let secret = STANDARD.encode(sk.to_keypair_bytes());
        let seed = STANDARD.encode(&sk.to_keypair_bytes()[..32]);
        let debug = format!("{sk:?}");
        assert!(debug.contains("hidden"));
        assert!(!debug.contains(&secret));
        assert!(!debug.contains(&seed[..20]));
    }
}
