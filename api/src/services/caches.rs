//! Creating caches (with their first signing key) and describing them to clients.

use larder_protocol::signing::{PublicKey, SecretKey};

use super::{Principal, ServiceError, ServiceResult, Services};
use crate::db::{CacheRow, NewCache};
use crate::domain::{CacheName, Permission};

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
    /// Creates a cache with its first server-held key; `owner` is `None` for caches the
    /// operator makes with the admin command.
    pub async fn create_cache(&self, name: &str, owner: Option<i64>, public: bool, priority: Option<i64>) -> ServiceResult<CreatedCache> {
        let name = CacheName::parse(name).map_err(ServiceError::BadRequest)?;
        let priority = priority.unwrap_or(self.limits().default_priority);
        check_priority(priority)?;
        let key = SecretKey::generate(&format!("{name}-1")).map_err(anyhow::Error::from)?;
        let public_key = key.public_key().to_nix_string();
        let sealed = self.inner.master_key.seal(&key)?;
        let cache = self
            .db()
            .create_cache(NewCache {
                name: name.as_str(),
                owner_id: owner,
                description: "",
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

/// Changes to a cache's settings; absent fields stay as they are.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheChanges {
    pub public: Option<bool>,
    pub priority: Option<i64>,
    pub description: Option<String>,
}

const MAX_CACHE_DESCRIPTION: usize = 500;

impl Services {
    /// Creates a cache owned by the caller's account.
    pub async fn create_owned_cache(
        &self,
        principal: &Principal,
        name: &str,
        public: bool,
        priority: Option<i64>,
        description: &str,
    ) -> ServiceResult<CacheRow> {
        let account_id = principal.whole_account_admin()?;
        check_description(description)?;
        let created = self.create_cache(name, Some(account_id), public, priority).await?;
        if !description.is_empty() {
            let cache = &created.cache;
            self.db().update_cache(cache.id, cache.is_public(), cache.priority, description).await?;
        }
        Ok(self.db().cache_by_id(created.cache.id).await?.ok_or_else(|| anyhow::anyhow!("cache vanished after creation"))?)
    }

    /// The caches of the caller's account (a limited personal token sees only its caches).
    pub async fn my_caches(&self, principal: &Principal) -> ServiceResult<Vec<CacheRow>> {
        let account_id = principal.account()?;
        let caches = self.db().caches_of(account_id).await?;
        Ok(caches.into_iter().filter(|c| principal.permission_on(c).is_some()).collect())
    }

    pub async fn update_cache(&self, principal: &Principal, name: &str, changes: CacheChanges) -> ServiceResult<CacheRow> {
        let cache = self.authorize(name, Some(principal), Permission::Admin).await?;
        let priority = changes.priority.unwrap_or(cache.priority);
        check_priority(priority)?;
        let description = changes.description.unwrap_or_else(|| cache.description.clone());
        check_description(&description)?;
        self.db().update_cache(cache.id, changes.public.unwrap_or(cache.is_public()), priority, &description).await?;
        self.db().cache_by_id(cache.id).await?.ok_or(ServiceError::Unauthorized(super::NO_ACCESS))
    }

    /// Deletes a cache: its paths, keys and tokens at once; `confirm` must repeat its name.
    pub async fn delete_cache(&self, principal: &Principal, name: &str, confirm: &str) -> ServiceResult<()> {
        let cache = self.authorize(name, Some(principal), Permission::Admin).await?;
        if confirm != cache.name {
            return Err(ServiceError::BadRequest("to delete a cache, confirm with its name".into()));
        }
        self.db().delete_cache(cache.id).await?;
        tracing::info!(cache = %cache.name, "deleted cache");
        Ok(())
    }
}

fn check_priority(priority: i64) -> ServiceResult<()> {
    if (0..=10_000).contains(&priority) {
        Ok(())
    } else {
        Err(ServiceError::BadRequest("priority must be between 0 and 10000".into()))
    }
}

fn check_description(description: &str) -> ServiceResult<()> {
    if description.len() > MAX_CACHE_DESCRIPTION || description.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ServiceError::BadRequest(format!("description must be at most {MAX_CACHE_DESCRIPTION} bytes of text")));
    }
    Ok(())
}
