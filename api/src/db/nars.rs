//! NARs (content-addressed, shared), each cache's possession of them, its published paths
//! and its build logs.

use sqlx::FromRow;

use super::{now, Database};

#[derive(Clone, Debug, FromRow)]
pub struct NarRow {
    pub id: i64,
    pub file_hash: String,
    pub file_size: i64,
    pub compression: String,
    pub nar_hash: String,
    pub nar_size: i64,
    pub storage_key: String,
    pub listing_key: String,
    pub created_at: i64,
}

pub struct NewNar<'a> {
    pub file_hash: &'a str,
    pub file_size: u64,
    pub compression: &'a str,
    pub nar_hash: &'a str,
    pub nar_size: u64,
    pub storage_key: &'a str,
    pub listing_key: &'a str,
}

/// A published path joined with its NAR: everything a narinfo is rendered from.
#[derive(Clone, Debug, FromRow)]
pub struct PathRow {
    pub path_id: i64,
    pub store_path: String,
    pub refs: String,
    pub deriver: Option<String>,
    pub ca: Option<String>,
    pub sigs: String,
    #[sqlx(flatten)]
    pub nar: NarRow,
}

pub struct NewPath<'a> {
    pub cache_id: i64,
    pub hash_part: &'a str,
    pub store_path: &'a str,
    pub nar_id: i64,
    pub refs: &'a str,
    pub deriver: Option<&'a str>,
    pub ca: Option<&'a str>,
    pub sigs: &'a str,
}

const NAR_COLUMNS: &str = "n.id, n.file_hash, n.file_size, n.compression, n.nar_hash, n.nar_size, n.storage_key, n.listing_key, n.created_at";

impl Database {
    pub async fn nar_by_file_hash(&self, file_hash: &str) -> anyhow::Result<Option<NarRow>> {
        Ok(sqlx::query_as(&format!("SELECT {NAR_COLUMNS} FROM nars n WHERE n.file_hash = $1"))
            .bind(file_hash)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records a stored NAR (once: a concurrent or earlier upload of the same bytes wins)
    /// and gives `cache_id` possession of it.
    pub async fn record_nar_upload(&self, cache_id: i64, nar: NewNar<'_>) -> anyhow::Result<NarRow> {
        sqlx::query(
            "INSERT INTO nars (file_hash, file_size, compression, nar_hash, nar_size, storage_key, listing_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (file_hash) DO NOTHING",
        )
        .bind(nar.file_hash)
        .bind(nar.file_size as i64)
        .bind(nar.compression)
        .bind(nar.nar_hash)
        .bind(nar.nar_size as i64)
        .bind(nar.storage_key)
        .bind(nar.listing_key)
        .bind(now())
        .execute(&self.pool)
        .await?;
        let row = self
            .nar_by_file_hash(nar.file_hash)
            .await?
            .ok_or_else(|| anyhow::anyhow!("NAR {} vanished after insert", nar.file_hash))?;
        sqlx::query("INSERT INTO cache_nars (cache_id, nar_id, uploaded_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(cache_id)
            .bind(row.id)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(row)
    }

    /// The NAR, if bytes with this file hash were uploaded to this cache (committed or not).
    pub async fn uploaded_nar(&self, cache_id: i64, file_hash: &str) -> anyhow::Result<Option<NarRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {NAR_COLUMNS} FROM nars n JOIN cache_nars c ON c.nar_id = n.id WHERE c.cache_id = $1 AND n.file_hash = $2"
        ))
        .bind(cache_id)
        .bind(file_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The NAR, if a published path of this cache uses it.
    pub async fn published_nar(&self, cache_id: i64, file_hash: &str) -> anyhow::Result<Option<NarRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {NAR_COLUMNS} FROM nars n WHERE n.file_hash = $2 \
             AND EXISTS (SELECT 1 FROM paths p WHERE p.nar_id = n.id AND p.cache_id = $1)"
        ))
        .bind(cache_id)
        .bind(file_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn path(&self, cache_id: i64, hash_part: &str) -> anyhow::Result<Option<PathRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT p.id AS path_id, p.store_path, p.refs, p.deriver, p.ca, p.sigs, {NAR_COLUMNS} \
             FROM paths p JOIN nars n ON n.id = p.nar_id WHERE p.cache_id = $1 AND p.hash_part = $2"
        ))
        .bind(cache_id)
        .bind(hash_part)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A page of a cache's paths in id order, after `after_id` (for walking all of them).
    pub async fn paths_page(&self, cache_id: i64, after_id: i64, limit: i64) -> anyhow::Result<Vec<PathRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT p.id AS path_id, p.store_path, p.refs, p.deriver, p.ca, p.sigs, {NAR_COLUMNS} \
             FROM paths p JOIN nars n ON n.id = p.nar_id WHERE p.cache_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3"
        ))
        .bind(cache_id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn count_paths(&self, cache_id: i64) -> anyhow::Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM paths WHERE cache_id = $1").bind(cache_id).fetch_one(&self.pool).await?;
        Ok(n)
    }

    /// Withdraws every path of a cache (its NARs stay uploaded to it).
    pub async fn delete_paths(&self, cache_id: i64) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM paths WHERE cache_id = $1").bind(cache_id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn set_path_sigs(&self, path_id: i64, sigs: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE paths SET sigs = $2 WHERE id = $1").bind(path_id).bind(sigs).execute(&self.pool).await?;
        Ok(())
    }

    /// Which of these hash parts this cache has no published path for: one query per
    /// [`super::MAX_BINDS_PER_QUERY`] hash parts, never one per path.
    pub async fn missing_paths(&self, cache_id: i64, hash_parts: &[String]) -> anyhow::Result<Vec<String>> {
        let mut present = std::collections::HashSet::new();
        for chunk in hash_parts.chunks(super::MAX_BINDS_PER_QUERY) {
            let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!("SELECT hash_part FROM paths WHERE cache_id = $1 AND hash_part IN ({})", placeholders.join(", "));
            let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(cache_id);
            for hash_part in chunk {
                query = query.bind(hash_part);
            }
            present.extend(query.fetch_all(&self.pool).await?.into_iter().map(|(hash_part,)| hash_part));
        }
        Ok(hash_parts.iter().filter(|h| !present.contains(*h)).cloned().collect())
    }

    /// Publishes a path, or replaces what an earlier push published for it (idempotent).
    pub async fn upsert_path(&self, path: NewPath<'_>) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO paths (cache_id, hash_part, store_path, nar_id, refs, deriver, ca, sigs, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (cache_id, hash_part) DO UPDATE SET store_path = excluded.store_path, nar_id = excluded.nar_id, \
             refs = excluded.refs, deriver = excluded.deriver, ca = excluded.ca, sigs = excluded.sigs",
        )
        .bind(path.cache_id)
        .bind(path.hash_part)
        .bind(path.store_path)
        .bind(path.nar_id)
        .bind(path.refs)
        .bind(path.deriver)
        .bind(path.ca)
        .bind(path.sigs)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn upsert_build_log(&self, cache_id: i64, drv: &str, storage_key: &str, size: u64) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO build_logs (cache_id, drv, storage_key, size, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (cache_id, drv) DO UPDATE SET storage_key = excluded.storage_key, size = excluded.size, created_at = excluded.created_at",
        )
        .bind(cache_id)
        .bind(drv)
        .bind(storage_key)
        .bind(size as i64)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn build_log_key(&self, cache_id: i64, drv: &str) -> anyhow::Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT storage_key FROM build_logs WHERE cache_id = $1 AND drv = $2")
            .bind(cache_id)
            .bind(drv)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(key,)| key))
    }
}
