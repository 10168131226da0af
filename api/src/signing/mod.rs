//! Per-cache signing keys. Server-held secrets are encrypted at rest under the master key
//! with XChaCha20-Poly1305 (random 24-byte nonces are safe at any volume); the key's name is
//! the associated data, so a ciphertext moved to another key row fails to decrypt. Each
//! ciphertext records which master key sealed it, so the master key can be rotated later.

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};
use larder_protocol::signing::SecretKey;
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 24;

pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl MasterKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        // The id names the key without revealing it: a domain-separated digest.
        let id = hex::encode(&Sha256::new_with_prefix(b"larder master key id\0").chain_update(bytes).finalize()[..8]);
        Self { cipher: XChaCha20Poly1305::new(&bytes.into()), id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals a Nix secret key: `nonce || ciphertext`.
    pub fn seal(&self, key: &SecretKey) -> anyhow::Result<Vec<u8>> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let plaintext = key.to_keypair_bytes();
        let ciphertext = self
            .cipher
            .encrypt(&nonce, Payload { msg: &plaintext, aad: key.name().as_bytes() })
            .map_err(|_| anyhow::anyhow!("encrypting a signing key failed"))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    pub fn open(&self, key_name: &str, sealed: &[u8], sealed_by: Option<&str>) -> anyhow::Result<SecretKey> {
        if sealed_by.is_some_and(|id| id != self.id) {
            anyhow::bail!("signing key {key_name} was sealed by master key {}, not the configured one", sealed_by.unwrap_or(""));
        }
        if sealed.len() <= NONCE_LEN {
            anyhow::bail!("signing key {key_name}: sealed secret too short");
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: key_name.as_bytes() })
            .map_err(|_| anyhow::anyhow!("signing key {key_name} does not decrypt under the configured master key"))?;
        let bytes: [u8; 64] = plaintext.as_slice().try_into().context("sealed signing key has the wrong length")?;
        SecretKey::from_keypair_bytes(key_name, &bytes).context("sealed signing key is not valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_binds_the_key_name() {
        let master = MasterKey::new([7; 32]);
        let key = SecretKey::generate("demo-1").unwrap();
        let sealed = master.seal(&key).unwrap();
        assert!(!sealed.windows(32).any(|w| w == &key.to_keypair_bytes()[..32]), "secret must not appear in clear");
        let opened = master.open("demo-1", &sealed, Some(master.id())).unwrap();
        assert_eq!(opened.to_nix_string(), key.to_nix_string());
        assert!(master.open("other-1", &sealed, None).is_err(), "moved ciphertext must not open");
        assert!(MasterKey::new([8; 32]).open("demo-1", &sealed, None).is_err(), "wrong master key must fail");
        assert!(master.open("demo-1", &sealed, Some("0000")).is_err(), "foreign master key id must fail");
    }
}
