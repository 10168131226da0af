//! Creating caches (with their first signing key) and describing them to clients.

use larder_protocol::signing::{PublicKey, SecretKey};

use super::{ServiceError, ServiceResult, Services};
use crate::db::{CacheRow, NewCache};
use crate::domain::CacheName;

pub struct CreatedCache {
    pub cache: CacheRow,
    /// The public key in Nix's `name:base64` form, for `trusted-public-keys`.
    pub public_key: String,
}

/// What a client needs to configure itself for a cache.
#[derive(Debug, serde::Serialize)]
pub struct CacheInfo {
    pub name: String,
    pub public: bool,
    pub priority: i64,
    pub public_keys: Vec<String>,
}

impl Services {
    pub async fn create_cache(&self, name: &str, public: bool, priority: Option<i64>) -> ServiceResult<CreatedCache> {
        let name = CacheName::parse(name).map_err(ServiceError::BadRequest)?;
        let priority = priority.unwrap_or(self.limits().default_priority);
        if !(0..=10_000).contains(&priority) {
            return Err(ServiceError::BadRequest("priority must be between 0 and 10000".into()));
        }
        let key = SecretKey::generate(&format!("{name}-1")).map_err(anyhow::Error::from)?;
        let public_key = key.public_key().to_nix_string();
        let sealed = self.inner.master_key.seal(&key)?;
        let cache = self
            .db()
            .create_cache(NewCache {
                name: name.as_str(),
                is_public: public,
                priority,
                key_name: key.name(),
                public_key: &public_key,
                encrypted_secret: &sealed,
                master_key_id: self.inner.master_key.id(),
            })
            .await?
            .ok_or_else(|| ServiceError::Conflict(format!("a cache named '{name}' already exists")))?;
        tracing::info!(cache = %name, public, priority, key = key.name(), "created cache");
        Ok(CreatedCache { cache, public_key })
    }

    pub async fn cache_info(&self, cache: &CacheRow) -> ServiceResult<CacheInfo> {
        let public_keys = self.db().active_signing_keys(cache.id).await?.into_iter().map(|k| k.public_key).collect();
        Ok(CacheInfo { name: cache.name.clone(), public: cache.is_public(), priority: cache.priority, public_keys })
    }

    /// The secret keys that sign this cache's new paths (server-held keys).
    pub(super) async fn signing_keys(&self, cache: &CacheRow) -> ServiceResult<Vec<SecretKey>> {
        let rows = self.db().active_signing_keys(cache.id).await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(sealed) = row.encrypted_secret else { continue };
            let key = self.inner.master_key.open(&row.key_name, &sealed, row.master_key_id.as_deref())?;
            // A stored public key that disagrees with its secret would make nix reject us.
            let stored = PublicKey::parse(&row.public_key).map_err(anyhow::Error::from)?;
            if stored.to_nix_string() != key.public_key().to_nix_string() {
                return Err(anyhow::anyhow!("signing key {} does not match its public key", row.key_name).into());
            }
            keys.push(key);
        }
        Ok(keys)
    }
}
