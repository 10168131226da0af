//! Password hashing: argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane),
//! run on the blocking pool so that a burst of logins never stalls request handling.

use std::sync::LazyLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash to verify against when the account does not exist, so that an unknown username
/// costs as much time as a wrong password and answers the same.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hasher().hash_password(b"larder: no such account", &SaltString::generate(&mut OsRng)).expect("hashing the dummy password").to_string()
});

/// Computes the dummy hash now, so that the first login of an unknown user does not take
/// longer than the others and tell.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        hasher()
            .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await?
}

/// Whether `password` matches `stored` (a PHC string); with `None`, checks against the
/// dummy hash and answers false, taking the same time.
pub async fn verify(password: String, stored: Option<String>) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let parsed = PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("stored password hash is corrupt: {e}"))?;
        // The comparison inside verify_password is constant-time.
        Ok(hasher().verify_password(password.as_bytes(), &parsed).is_ok() && exists)
    })
    .await?
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_with_argon2id_and_verifies() {
        let stored = super::hash("correct horse battery".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(super::verify("correct horse battery".into(), Some(stored.clone())).await.unwrap());
        assert!(!super::verify("wrong horse battery".into(), Some(stored)).await.unwrap());
        assert!(!super::verify("larder: no such account".into(), None).await.unwrap(), "the dummy never logs in");
    }
}
