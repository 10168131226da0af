//! Creating caches (with their first signing key), changing and deleting them, and
//! describing them to clients.

use larder_protocol::signing::{PublicKey, SecretKey};

use super::{Principal, ServiceError, ServiceResult, Services};
use crate::db::NewCache;
use crate::domain::{AccountId, Cache, CacheName, NarEncoding, Permission};

pub struct CreatedCache {
    pub cache: Cache,
    /// For `trusted-public-keys`.
    pub public_key: PublicKey,
}

/// Changes to a cache's settings; absent fields stay as they are.
#[derive(Debug, Default)]
pub struct CacheChanges {
    pub public: Option<bool>,
    pub priority: Option<i64>,
    pub description: Option<String>,
    pub compression: Option<NarEncoding>,
}

/// A cache to create for the caller's account.
pub struct NewOwnedCache {
    pub name: CacheName,
    pub public: bool,
    pub priority: Option<i64>,
    pub description: String,
}

const MAX_CACHE_DESCRIPTION: usize = 500;

impl Services {
    /// Creates a cache with its first server-held key; `owner` is `None` for caches the
    /// operator makes with the admin command.
    #[tracing::instrument(skip_all, fields(cache = %name))]
    pub async fn create_cache(
        &self,
        name: &CacheName,
        owner: Option<AccountId>,
        public: bool,
        priority: Option<i64>,
        description: &str,
    ) -> ServiceResult<CreatedCache> {
        let priority = priority.unwrap_or(self.limits().default_priority);
        check_priority(priority)?;
        check_description(description)?;
        let key = SecretKey::generate(&format!("{name}-1")).map_err(anyhow::Error::from)?;
        let public_key = key.public_key();
        let secret = self.seal(&key)?;
        let cache = self
            .db()
            .create_cache(NewCache {
                name,
                owner,
                description,
                public,
                priority,
                public_key: &public_key,
                secret: &secret,
                gc: self.gc_settings().default_policy,
            })
            .await?
            .ok_or_else(|| ServiceError::Conflict(format!("a cache named '{name}' already exists")))?;
        // This node may remember that no cache had the name.
        self.inner.memo.forget_cache(name);
        tracing::info!(public, priority, key = key.name(), "created cache");
        Ok(CreatedCache { cache, public_key })
    }

    /// Creates a cache owned by the caller's account.
    #[tracing::instrument(skip_all, fields(cache = %new.name))]
    pub async fn create_owned_cache(&self, principal: &Principal, new: NewOwnedCache) -> ServiceResult<Cache> {
        let account = principal.require_account_admin()?;
        let created = self.create_cache(&new.name, Some(account), new.public, new.priority, &new.description).await?;
        Ok(created.cache)
    }

    /// Every cache (the operator's listing).
    pub async fn all_caches(&self) -> ServiceResult<Vec<Cache>> {
        Ok(self.db().list_caches().await?)
    }

    /// The keys clients should trust for a cache: its active ones.
    pub async fn trusted_public_keys(&self, cache: &Cache) -> ServiceResult<Vec<PublicKey>> {
        Ok(self.db().active_signing_keys(cache.id).await?.into_iter().map(|k| k.public_key).collect())
    }

    /// The caches of the caller's account (a limited personal token sees only its caches).
    #[tracing::instrument(skip_all, fields(token = %principal.token_id()))]
    pub async fn my_caches(&self, principal: &Principal) -> ServiceResult<Vec<Cache>> {
        let account = principal.account()?;
        let caches = self.db().caches_of(account).await?;
        Ok(caches.into_iter().filter(|c| principal.permission_on(c).is_some()).collect())
    }

    #[tracing::instrument(skip_all, fields(cache = %name))]
    pub async fn update_cache(&self, principal: &Principal, name: &CacheName, changes: CacheChanges) -> ServiceResult<Cache> {
        let cache = self.authorize(name, Some(principal), Permission::Admin).await?;
        let changed = Cache {
            public: changes.public.unwrap_or(cache.public),
            priority: changes.priority.unwrap_or(cache.priority),
            description: changes.description.unwrap_or_else(|| cache.description.clone()),
            compression: changes.compression.unwrap_or(cache.compression),
            ..cache
        };
        check_priority(changed.priority)?;
        check_description(&changed.description)?;
        self.db().update_cache(&changed).await?;
        self.inner.memo.forget_cache(&changed.name);
        self.db().cache_by_id(changed.id).await?.ok_or(ServiceError::Unauthorized(super::NO_ACCESS))
    }

    /// Deletes a cache: its paths, keys and tokens at once; `confirm` must repeat its name.
    /// Its objects go through the deletion queue: build logs at once, NARs once no other
    /// cache holds them (the sweep that follows).
    #[tracing::instrument(skip_all, fields(cache = %name))]
    pub async fn delete_cache(&self, principal: &Principal, name: &CacheName, confirm: &str) -> ServiceResult<()> {
        let cache = self.authorize(name, Some(principal), Permission::Admin).await?;
        if confirm != cache.name.as_str() {
            return Err(ServiceError::BadRequest("to delete a cache, confirm with its name".into()));
        }
        self.db().delete_cache(cache.id, self.storage_delete_due()).await?;
        // Its tokens and paths went with it.
        self.inner.memo.forget_cache(&cache.name);
        self.inner.memo.forget_all_tokens();
        self.inner.memo.forget_narinfos();
        self.reclaim_soon();
        tracing::info!("deleted cache");
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
