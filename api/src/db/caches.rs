//! Caches and their signing keys.

use anyhow::Context;
use larder_protocol::signing::PublicKey;
use sqlx::FromRow;

use super::{now, Backend, Database};
use crate::domain::{AccountId, Cache, CacheId, CacheName, GcPolicy, NarEncoding, QuotaMode, SealedSecret, SigningKey, SigningMode};

#[derive(FromRow)]
struct CacheRow {
    id: i64,
    name: String,
    is_public: i64,
    priority: i64,
    signing_mode: String,
    created_at: i64,
    owner_id: Option<i64>,
    description: String,
    keep_days: Option<i64>,
    quota_bytes: Option<i64>,
    quota_mode: String,
    compression: String,
}

impl TryFrom<CacheRow> for Cache {
    type Error = anyhow::Error;

    fn try_from(row: CacheRow) -> anyhow::Result<Self> {
        let corrupt = |what: &str| anyhow::anyhow!("cache row {} has a bad {what}", row.id);
        Ok(Cache {
            id: CacheId(row.id),
            name: CacheName::parse(&row.name).map_err(|_| corrupt("name"))?,
            owner: row.owner_id.map(AccountId),
            public: flag(row.is_public).ok_or_else(|| corrupt("is_public"))?,
            priority: row.priority,
            signing_mode: SigningMode::parse(&row.signing_mode).ok_or_else(|| corrupt("signing_mode"))?,
            description: row.description,
            created_at: row.created_at,
            gc: GcPolicy {
                keep_days: row.keep_days.map(u32::try_from).transpose().map_err(|_| corrupt("keep_days"))?,
                quota_bytes: row.quota_bytes.map(u64::try_from).transpose().map_err(|_| corrupt("quota_bytes"))?,
                quota_mode: QuotaMode::parse(&row.quota_mode).ok_or_else(|| corrupt("quota_mode"))?,
            },
            compression: NarEncoding::parse(&row.compression).ok_or_else(|| corrupt("compression"))?,
        })
    }
}

#[derive(FromRow)]
struct SigningKeyRow {
    id: i64,
    key_name: String,
    public_key: String,
    encrypted_secret: Option<Vec<u8>>,
    master_key_id: Option<String>,
    active: i64,
    created_at: i64,
}

impl TryFrom<SigningKeyRow> for SigningKey {
    type Error = anyhow::Error;

    fn try_from(row: SigningKeyRow) -> anyhow::Result<Self> {
        let corrupt = |what: &str| anyhow::anyhow!("signing key row {} has a bad {what}", row.id);
        let public_key = PublicKey::parse(&row.public_key).map_err(|_| corrupt("public key"))?;
        if public_key.name() != row.key_name {
            return Err(corrupt("key name (it differs from its public key's)"));
        }
        Ok(SigningKey {
            public_key,
            secret: row.encrypted_secret.map(|ciphertext| SealedSecret { ciphertext, master_key_id: row.master_key_id }),
            active: flag(row.active).ok_or_else(|| corrupt("active flag"))?,
            created_at: row.created_at,
        })
    }
}

/// A 0/1 column.
pub(super) fn flag(value: i64) -> Option<bool> {
    match value {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// A cache to create together with its first server-held signing key.
pub struct NewCache<'a> {
    pub name: &'a CacheName,
    pub owner: Option<AccountId>,
    pub description: &'a str,
    pub public: bool,
    pub priority: i64,
    pub public_key: &'a PublicKey,
    pub secret: &'a SealedSecret,
    pub gc: GcPolicy,
}

const KEY_COLUMNS: &str = "id, key_name, public_key, encrypted_secret, master_key_id, active, created_at";

const CACHE_COLUMNS: &str =
    "id, name, is_public, priority, signing_mode, created_at, owner_id, description, keep_days, quota_bytes, quota_mode, compression";

fn caches(rows: Vec<CacheRow>) -> anyhow::Result<Vec<Cache>> {
    rows.into_iter().map(Cache::try_from).collect()
}

fn keys(rows: Vec<SigningKeyRow>) -> anyhow::Result<Vec<SigningKey>> {
    rows.into_iter().map(SigningKey::try_from).collect()
}

impl Database {
    /// Creates the cache and its key in one transaction; `None` if the name is taken.
    pub async fn create_cache(&self, new: NewCache<'_>) -> anyhow::Result<Option<Cache>> {
        let mut tx = self.pool.begin().await?;
        let created_at = now();
        let row: Option<CacheRow> = sqlx::query_as(&format!(
            "INSERT INTO caches (name, is_public, priority, signing_mode, created_at, owner_id, description, keep_days, quota_bytes, quota_mode) \
             VALUES ($1, $2, $3, 'server', $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING RETURNING {CACHE_COLUMNS}"
        ))
        .bind(new.name.as_str())
        .bind(i64::from(new.public))
        .bind(new.priority)
        .bind(created_at)
        .bind(new.owner.map(|a| a.0))
        .bind(new.description)
        .bind(new.gc.keep_days.map(i64::from))
        .bind(new.gc.quota_bytes.map(i64::try_from).transpose()?)
        .bind(new.gc.quota_mode.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(cache) = row else {
            return Ok(None);
        };
        insert_server_key(&mut tx, cache.id, new.public_key, new.secret, created_at).await?;
        tx.commit().await?;
        Ok(Some(cache.try_into()?))
    }

    pub async fn cache_by_name(&self, name: &CacheName) -> anyhow::Result<Option<Cache>> {
        let row: Option<CacheRow> = sqlx::query_as(&format!("SELECT {CACHE_COLUMNS} FROM caches WHERE name = $1"))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .context("reading a cache")?;
        row.map(Cache::try_from).transpose()
    }

    pub async fn cache_by_id(&self, id: CacheId) -> anyhow::Result<Option<Cache>> {
        let row: Option<CacheRow> = sqlx::query_as(&format!("SELECT {CACHE_COLUMNS} FROM caches WHERE id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .context("reading a cache")?;
        row.map(Cache::try_from).transpose()
    }

    pub async fn list_caches(&self) -> anyhow::Result<Vec<Cache>> {
        caches(sqlx::query_as(&format!("SELECT {CACHE_COLUMNS} FROM caches ORDER BY name")).fetch_all(&self.pool).await?)
    }

    pub async fn caches_of(&self, owner: AccountId) -> anyhow::Result<Vec<Cache>> {
        caches(
            sqlx::query_as(&format!("SELECT {CACHE_COLUMNS} FROM caches WHERE owner_id = $1 ORDER BY name"))
                .bind(owner.0)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Writes the settings a cache's admin may change (`PATCH /api/v1/caches/{cache}`).
    pub async fn update_cache(&self, cache: &Cache) -> anyhow::Result<()> {
        sqlx::query("UPDATE caches SET is_public = $2, priority = $3, description = $4, compression = $5 WHERE id = $1")
            .bind(cache.id.0)
            .bind(i64::from(cache.public))
            .bind(cache.priority)
            .bind(&cache.description)
            .bind(cache.compression.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_gc_policy(&self, id: CacheId, gc: GcPolicy) -> anyhow::Result<()> {
        sqlx::query("UPDATE caches SET keep_days = $2, quota_bytes = $3, quota_mode = $4 WHERE id = $1")
            .bind(id.0)
            .bind(gc.keep_days.map(i64::from))
            .bind(gc.quota_bytes.map(i64::try_from).transpose()?)
            .bind(gc.quota_mode.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a cache with its paths, keys, tokens, pins and possession of NARs (cascade),
    /// and queues its build logs' objects for deletion in the same transaction. Its NARs
    /// are reclaimed by the next sweep of unheld NARs (other caches may share them).
    pub async fn delete_cache(&self, id: CacheId, storage_delete_due: i64) -> anyhow::Result<()> {
        // The queue insert is a write, so SQLite takes its write lock at the first statement.
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO storage_deletes (storage_key, due_at) SELECT storage_key, $2 FROM build_logs WHERE cache_id = $1")
            .bind(id.0)
            .bind(storage_delete_due)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM caches WHERE id = $1").bind(id.0).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// All of the cache's keys, active or retired, oldest first.
    pub async fn signing_keys_of(&self, cache: CacheId) -> anyhow::Result<Vec<SigningKey>> {
        keys(
            sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM signing_keys WHERE cache_id = $1 ORDER BY id"))
                .bind(cache.0)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The cache's active keys, oldest first.
    pub async fn active_signing_keys(&self, cache: CacheId) -> anyhow::Result<Vec<SigningKey>> {
        keys(
            sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM signing_keys WHERE cache_id = $1 AND active = 1 ORDER BY id"))
                .bind(cache.0)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The names of the cache's active keys, oldest first: all that serving a narinfo
    /// needs (parsing the keys themselves would decompress curve points on the hot path).
    pub async fn active_key_names(&self, cache: CacheId) -> anyhow::Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT key_name FROM signing_keys WHERE cache_id = $1 AND active = 1 ORDER BY id")
            .bind(cache.0)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    pub async fn add_signing_key(&self, cache: CacheId, public_key: &PublicKey, secret: &SealedSecret) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_server_key(&mut tx, cache.0, public_key, secret, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Registers a client-held public key (no secret); false if the name is taken.
    pub async fn add_public_key(&self, cache: CacheId, public_key: &PublicKey) -> anyhow::Result<bool> {
        let result = sqlx::query(
            "INSERT INTO signing_keys (cache_id, key_name, public_key, active, created_at) VALUES ($1, $2, $3, 1, $4) \
             ON CONFLICT (cache_id, key_name) DO NOTHING",
        )
        .bind(cache.0)
        .bind(public_key.name())
        .bind(public_key.to_nix_string())
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Retires every active key of a cache but `keep`.
    pub async fn retire_keys_except(&self, cache: CacheId, keep: Option<&str>) -> anyhow::Result<()> {
        sqlx::query("UPDATE signing_keys SET active = 0 WHERE cache_id = $1 AND key_name <> COALESCE($2, '')")
            .bind(cache.0)
            .bind(keep)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_signing_mode(&self, cache: CacheId, mode: SigningMode) -> anyhow::Result<()> {
        sqlx::query("UPDATE caches SET signing_mode = $2 WHERE id = $1").bind(cache.0).bind(mode.as_str()).execute(&self.pool).await?;
        Ok(())
    }

    /// Retires an active key, unless it is the cache's last one; false if nothing changed.
    pub async fn retire_signing_key(&self, cache: CacheId, key_name: &str) -> anyhow::Result<bool> {
        let result = sqlx::query(
            "UPDATE signing_keys SET active = 0 WHERE cache_id = $1 AND key_name = $2 AND active = 1 \
             AND (SELECT COUNT(*) FROM signing_keys WHERE cache_id = $1 AND active = 1) > 1",
        )
        .bind(cache.0)
        .bind(key_name)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }
}

async fn insert_server_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    cache_id: i64,
    public_key: &PublicKey,
    secret: &SealedSecret,
    created_at: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO signing_keys (cache_id, key_name, public_key, encrypted_secret, master_key_id, active, created_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $6)",
    )
    .bind(cache_id)
    .bind(public_key.name())
    .bind(public_key.to_nix_string())
    .bind(secret.ciphertext.clone())
    .bind(secret.master_key_id.clone())
    .bind(created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Narinfo generations (migration 0007).
impl Database {
    /// The database's clock in whole seconds, as SQL: nodes compare times it wrote.
    fn clock_sql(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST(strftime('%s', 'now') AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)",
        }
    }

    /// Raises the generation of a cache's narinfos and answers the new one.
    pub async fn raise_narinfo_generation(&self, cache: CacheId) -> anyhow::Result<i64> {
        let now = self.clock_sql();
        let (generation,): (i64,) = sqlx::query_as(&format!(
            "INSERT INTO cache_changes (cache_id, generation, changed_at) VALUES ($1, 1, {now}) \
             ON CONFLICT (cache_id) DO UPDATE SET generation = cache_changes.generation + 1, changed_at = {now} \
             RETURNING generation"
        ))
        .bind(cache.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(generation)
    }

    /// The narinfo generations of the caches changed in the last `within_secs` seconds.
    pub async fn recent_narinfo_generations(&self, within_secs: i64) -> anyhow::Result<Vec<(CacheId, i64)>> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as(&format!("SELECT cache_id, generation FROM cache_changes WHERE changed_at >= {} - $1", self.clock_sql()))
                .bind(within_secs)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(cache, generation)| (CacheId(cache), generation)).collect())
    }
}
