//! Caches and their signing keys.

use sqlx::FromRow;

use super::{now, Database};

#[derive(Clone, Debug, FromRow)]
pub struct CacheRow {
    pub id: i64,
    pub name: String,
    pub is_public: i64,
    pub priority: i64,
    pub signing_mode: String,
    pub created_at: i64,
    pub owner_id: Option<i64>,
    pub description: String,
}

impl CacheRow {
    pub fn is_public(&self) -> bool {
        self.is_public != 0
    }
}

#[derive(Clone, FromRow)]
pub struct SigningKeyRow {
    pub id: i64,
    pub cache_id: i64,
    pub key_name: String,
    pub public_key: String,
    pub encrypted_secret: Option<Vec<u8>>,
    pub master_key_id: Option<String>,
    pub active: i64,
    pub created_at: i64,
}

/// A cache to create together with its first server-held signing key.
pub struct NewCache<'a> {
    pub name: &'a str,
    pub owner_id: Option<i64>,
    pub description: &'a str,
    pub is_public: bool,
    pub priority: i64,
    pub key_name: &'a str,
    pub public_key: &'a str,
    pub encrypted_secret: &'a [u8],
    pub master_key_id: &'a str,
}

const KEY_COLUMNS: &str = "id, cache_id, key_name, public_key, encrypted_secret, master_key_id, active, created_at";

const CACHE_COLUMNS: &str = "id, name, is_public, priority, signing_mode, created_at, owner_id, description";

impl Database {
    /// Creates the cache and its key in one transaction; `None` if the name is taken.
    pub async fn create_cache(&self, new: NewCache<'_>) -> anyhow::Result<Option<CacheRow>> {
        let mut tx = self.pool.begin().await?;
        let created_at = now();
        let row: Option<CacheRow> = sqlx::query_as(&format!(
            "INSERT INTO caches (name, is_public, priority, signing_mode, created_at, owner_id, description) \
             VALUES ($1, $2, $3, 'server', $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING {CACHE_COLUMNS}"
        ))
        .bind(new.name)
        .bind(i64::from(new.is_public))
        .bind(new.priority)
        .bind(created_at)
        .bind(new.owner_id)
        .bind(new.description)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(cache) = row else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO signing_keys (cache_id, key_name, public_key, encrypted_secret, master_key_id, active, created_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6)",
        )
        .bind(cache.id)
        .bind(new.key_name)
        .bind(new.public_key)
        .bind(new.encrypted_secret.to_vec())
        .bind(new.master_key_id)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(cache))
    }

    pub async fn cache_by_name(&self, name: &str) -> anyhow::Result<Option<CacheRow>> {
        Ok(sqlx::query_as(&format!("SELECT {CACHE_COLUMNS} FROM caches WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn cache_by_id(&self, id: i64) -> anyhow::Result<Option<CacheRow>> {
        Ok(sqlx::query_as(&format!("SELECT {CACHE_COLUMNS} FROM caches WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn list_caches(&self) -> anyhow::Result<Vec<CacheRow>> {
        Ok(sqlx::query_as(&format!("SELECT {CACHE_COLUMNS} FROM caches ORDER BY name"))
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn caches_of(&self, owner_id: i64) -> anyhow::Result<Vec<CacheRow>> {
        Ok(sqlx::query_as(&format!("SELECT {CACHE_COLUMNS} FROM caches WHERE owner_id = $1 ORDER BY name"))
            .bind(owner_id)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn update_cache(&self, id: i64, is_public: bool, priority: i64, description: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE caches SET is_public = $2, priority = $3, description = $4 WHERE id = $1")
            .bind(id)
            .bind(i64::from(is_public))
            .bind(priority)
            .bind(description)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a cache with its paths, keys and tokens (cascade). Its NAR objects stay
    /// until garbage collection, since other caches may share them.
    pub async fn delete_cache(&self, id: i64) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM caches WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// All of the cache's keys, active or retired, oldest first.
    pub async fn signing_keys_of(&self, cache_id: i64) -> anyhow::Result<Vec<SigningKeyRow>> {
        Ok(sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM signing_keys WHERE cache_id = $1 ORDER BY id"))
        .bind(cache_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn add_signing_key(&self, cache_id: i64, key_name: &str, public_key: &str, sealed: &[u8], master_key_id: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO signing_keys (cache_id, key_name, public_key, encrypted_secret, master_key_id, active, created_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6)",
        )
        .bind(cache_id)
        .bind(key_name)
        .bind(public_key)
        .bind(sealed.to_vec())
        .bind(master_key_id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Registers a client-held public key (no secret).
    pub async fn add_public_key(&self, cache_id: i64, key_name: &str, public_key: &str) -> anyhow::Result<bool> {
        let result = sqlx::query(
            "INSERT INTO signing_keys (cache_id, key_name, public_key, active, created_at) VALUES ($1, $2, $3, 1, $4) \
             ON CONFLICT (cache_id, key_name) DO NOTHING",
        )
        .bind(cache_id)
        .bind(key_name)
        .bind(public_key)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Retires every active key of a cache but `keep`.
    pub async fn retire_keys_except(&self, cache_id: i64, keep: Option<&str>) -> anyhow::Result<()> {
        sqlx::query("UPDATE signing_keys SET active = 0 WHERE cache_id = $1 AND key_name <> COALESCE($2, '')")
            .bind(cache_id)
            .bind(keep)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_signing_mode(&self, cache_id: i64, mode: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE caches SET signing_mode = $2 WHERE id = $1").bind(cache_id).bind(mode).execute(&self.pool).await?;
        Ok(())
    }

    /// Retires an active key, unless it is the cache's last one; false if nothing changed.
    pub async fn retire_signing_key(&self, cache_id: i64, key_name: &str) -> anyhow::Result<bool> {
        let result = sqlx::query(
            "UPDATE signing_keys SET active = 0 WHERE cache_id = $1 AND key_name = $2 AND active = 1 \
             AND (SELECT COUNT(*) FROM signing_keys WHERE cache_id = $1 AND active = 1) > 1",
        )
        .bind(cache_id)
        .bind(key_name)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// The cache's active keys, oldest first.
    pub async fn active_signing_keys(&self, cache_id: i64) -> anyhow::Result<Vec<SigningKeyRow>> {
        Ok(sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM signing_keys WHERE cache_id = $1 AND active = 1 ORDER BY id"))
        .bind(cache_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
