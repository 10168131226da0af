//! NARs (content-addressed, shared), each cache's possession of them, its published paths
//! and its build logs.

use larder_protocol::compression::Compression;
use larder_protocol::hash::Sha256Hash;
use larder_protocol::signing::Signature;
use larder_protocol::store_path::{StorePath, StorePathHash};
use sqlx::FromRow;

use super::{now, Database, MAX_BINDS_PER_QUERY};
use crate::domain::{CacheId, Nar, NarId, NewNar, NewPath, PathId, PublishedPath};

#[derive(FromRow)]
struct NarRow {
    id: i64,
    file_hash: String,
    file_size: i64,
    compression: String,
    nar_hash: String,
    nar_size: i64,
    storage_key: String,
    listing_key: String,
}

impl TryFrom<NarRow> for Nar {
    type Error = anyhow::Error;

    fn try_from(row: NarRow) -> anyhow::Result<Self> {
        let corrupt = |what: &str| anyhow::anyhow!("NAR row {} has a bad {what}", row.id);
        Ok(Nar {
            id: NarId(row.id),
            file_hash: Sha256Hash::from_nix32(&row.file_hash).map_err(|_| corrupt("file hash"))?,
            file_size: u64::try_from(row.file_size).map_err(|_| corrupt("file size"))?,
            compression: Compression::from_name(&row.compression).ok_or_else(|| corrupt("compression"))?,
            nar_hash: Sha256Hash::from_nix32(&row.nar_hash).map_err(|_| corrupt("NAR hash"))?,
            nar_size: u64::try_from(row.nar_size).map_err(|_| corrupt("NAR size"))?,
            storage_key: row.storage_key,
            listing_key: row.listing_key,
        })
    }
}

#[derive(FromRow)]
struct PathRow {
    path_id: i64,
    store_path: String,
    /// Space-separated base names, as in a narinfo.
    refs: String,
    deriver: Option<String>,
    ca: Option<String>,
    /// Newline-separated `name:base64`.
    sigs: String,
    #[sqlx(flatten)]
    nar: NarRow,
}

impl TryFrom<PathRow> for PublishedPath {
    type Error = anyhow::Error;

    fn try_from(row: PathRow) -> anyhow::Result<Self> {
        let corrupt = |what: &str| anyhow::anyhow!("path row {} has a bad {what}", row.path_id);
        Ok(PublishedPath {
            id: PathId(row.path_id),
            store_path: StorePath::parse(&row.store_path).map_err(|_| corrupt("store path"))?,
            references: split_references(&row.refs).map_err(|_| corrupt("reference"))?,
            deriver: row.deriver.as_deref().map(StorePath::from_base_name).transpose().map_err(|_| corrupt("deriver"))?,
            ca: row.ca,
            signatures: split_signatures(&row.sigs).map_err(|_| corrupt("signature"))?,
            nar: row.nar.try_into()?,
        })
    }
}

/// Why a path was not published.
#[derive(Debug)]
pub enum PublishRefused {
    /// Hash parts of references the cache has no path for.
    MissingReferences(Vec<String>),
    /// The NAR's upload was reclaimed (expired or collected) before the commit.
    NarReclaimed,
}

/// Gives a cache possession of a NAR (again: the upload time moves, so that a collection
/// running now does not take it back); false if the NAR row is gone.
async fn attach(conn: &mut sqlx::AnyConnection, cache: CacheId, nar: NarId, now: i64) -> anyhow::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO cache_nars (cache_id, nar_id, uploaded_at) SELECT $1, id, $3 FROM nars WHERE id = $2 \
         ON CONFLICT (cache_id, nar_id) DO UPDATE SET uploaded_at = excluded.uploaded_at, released_at = NULL",
    )
    .bind(cache.0)
    .bind(nar.0)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// The `refs` column back into store paths.
pub(super) fn split_references(refs: &str) -> Result<Vec<StorePath>, larder_protocol::Error> {
    refs.split_whitespace().map(StorePath::from_base_name).collect()
}

/// The `sigs` column back into signatures.
pub(super) fn split_signatures(sigs: &str) -> Result<Vec<Signature>, larder_protocol::Error> {
    sigs.lines().filter(|s| !s.is_empty()).map(Signature::parse).collect()
}

pub(super) fn joined_references(references: &[StorePath]) -> String {
    references.iter().map(StorePath::base_name).collect::<Vec<_>>().join(" ")
}

pub(super) fn joined_signatures(signatures: &[Signature]) -> String {
    signatures.iter().map(Signature::to_nix_string).collect::<Vec<_>>().join("\n")
}

const NAR_COLUMNS: &str = "n.id, n.file_hash, n.file_size, n.compression, n.nar_hash, n.nar_size, n.storage_key, n.listing_key";
const PATH_COLUMNS: &str = "p.id AS path_id, p.store_path, p.refs, p.deriver, p.ca, p.sigs";

impl Database {
    pub async fn nar_by_file_hash(&self, file_hash: &Sha256Hash) -> anyhow::Result<Option<Nar>> {
        let row: Option<NarRow> = sqlx::query_as(&format!("SELECT {NAR_COLUMNS} FROM nars n WHERE n.file_hash = $1"))
            .bind(file_hash.to_nix32())
            .fetch_optional(&self.pool)
            .await?;
        row.map(Nar::try_from).transpose()
    }

    /// Records a NAR whose bytes this upload stored, and gives `cache` possession of it,
    /// in one transaction; takes the upload's objects off the deletion queue (where they
    /// waited in case the upload never finished). If the same bytes were recorded
    /// meanwhile, that record wins and this upload's objects stay queued (redundant).
    pub async fn record_new_nar(&self, cache: CacheId, nar: &NewNar, now: i64) -> anyhow::Result<Nar> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO nars (file_hash, file_size, compression, nar_hash, nar_size, storage_key, listing_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (file_hash) DO NOTHING",
        )
        .bind(nar.file_hash.to_nix32())
        .bind(i64::try_from(nar.file_size)?)
        .bind(nar.compression.name())
        .bind(nar.nar_hash.to_nix32())
        .bind(i64::try_from(nar.nar_size)?)
        .bind(&nar.storage_key)
        .bind(&nar.listing_key)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted > 0 {
            sqlx::query("DELETE FROM storage_deletes WHERE storage_key IN ($1, $2)")
                .bind(&nar.storage_key)
                .bind(&nar.listing_key)
                .execute(&mut *tx)
                .await?;
        }
        let stored: NarRow = sqlx::query_as(&format!("SELECT {NAR_COLUMNS} FROM nars n WHERE n.file_hash = $1"))
            .bind(nar.file_hash.to_nix32())
            .fetch_one(&mut *tx)
            .await?;
        attach(&mut tx, cache, NarId(stored.id), now).await?;
        tx.commit().await?;
        stored.try_into()
    }

    /// Gives `cache` possession of a NAR already stored; false if that NAR was reclaimed
    /// meanwhile (its bytes are gone: the upload must be sent again).
    pub async fn attach_nar(&self, cache: CacheId, nar: NarId, now: i64) -> anyhow::Result<bool> {
        let mut conn = self.pool.acquire().await?;
        attach(&mut conn, cache, nar, now).await
    }

    /// The NAR, if bytes with this file hash were uploaded to this cache (committed or not).
    pub async fn uploaded_nar(&self, cache: CacheId, file_hash: &Sha256Hash) -> anyhow::Result<Option<Nar>> {
        let row: Option<NarRow> = sqlx::query_as(&format!(
            "SELECT {NAR_COLUMNS} FROM nars n JOIN cache_nars c ON c.nar_id = n.id WHERE c.cache_id = $1 AND n.file_hash = $2"
        ))
        .bind(cache.0)
        .bind(file_hash.to_nix32())
        .fetch_optional(&self.pool)
        .await?;
        row.map(Nar::try_from).transpose()
    }

    /// The NAR, if a published path of this cache uses it, or did until a moment ago (a
    /// client may have read the narinfo just before the path was deleted).
    pub async fn published_nar(&self, cache: CacheId, file_hash: &Sha256Hash) -> anyhow::Result<Option<Nar>> {
        let row: Option<NarRow> = sqlx::query_as(&format!(
            "SELECT {NAR_COLUMNS} FROM nars n WHERE n.file_hash = $2 \
             AND (EXISTS (SELECT 1 FROM paths p WHERE p.nar_id = n.id AND p.cache_id = $1) \
             OR EXISTS (SELECT 1 FROM cache_nars c WHERE c.nar_id = n.id AND c.cache_id = $1 AND c.released_at IS NOT NULL))"
        ))
        .bind(cache.0)
        .bind(file_hash.to_nix32())
        .fetch_optional(&self.pool)
        .await?;
        row.map(Nar::try_from).transpose()
    }

    pub async fn path(&self, cache: CacheId, hash: &StorePathHash) -> anyhow::Result<Option<PublishedPath>> {
        let row: Option<PathRow> = sqlx::query_as(&format!(
            "SELECT {PATH_COLUMNS}, {NAR_COLUMNS} FROM paths p JOIN nars n ON n.id = p.nar_id WHERE p.cache_id = $1 AND p.hash_part = $2"
        ))
        .bind(cache.0)
        .bind(hash.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(PublishedPath::try_from).transpose()
    }

    /// A page of a cache's paths in id order, after `after` (for walking all of them).
    pub async fn paths_page(&self, cache: CacheId, after: Option<PathId>, limit: i64) -> anyhow::Result<Vec<PublishedPath>> {
        let rows: Vec<PathRow> = sqlx::query_as(&format!(
            "SELECT {PATH_COLUMNS}, {NAR_COLUMNS} FROM paths p JOIN nars n ON n.id = p.nar_id \
             WHERE p.cache_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3"
        ))
        .bind(cache.0)
        .bind(after.map_or(0, |p| p.0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(PublishedPath::try_from).collect()
    }

    /// A page of a cache's paths, newest push first, with when each was pushed; only those
    /// whose store path contains `search` (case-insensitive) when it is given.
    pub async fn search_paths(
        &self,
        cache: CacheId,
        search: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<(PublishedPath, i64)>> {
        #[derive(FromRow)]
        struct ListedRow {
            #[sqlx(flatten)]
            path: PathRow,
            created_at: i64,
        }
        // LIKE's own wildcards in the search text match themselves.
        let pattern = search.map(|s| format!("%{}%", s.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
        let rows: Vec<ListedRow> = sqlx::query_as(&format!(
            "SELECT {PATH_COLUMNS}, {NAR_COLUMNS}, p.created_at FROM paths p JOIN nars n ON n.id = p.nar_id \
             WHERE p.cache_id = $1 AND ($2 IS NULL OR LOWER(p.store_path) LIKE $2 ESCAPE '\\') \
             ORDER BY p.created_at DESC, p.id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(cache.0)
        .bind(pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|row| Ok((PublishedPath::try_from(row.path)?, row.created_at))).collect()
    }

    pub async fn path_pushed_at(&self, path: PathId) -> anyhow::Result<Option<i64>> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT created_at FROM paths WHERE id = $1").bind(path.0).fetch_optional(&self.pool).await?;
        Ok(row.map(|(t,)| t))
    }

    pub async fn count_paths(&self, cache: CacheId) -> anyhow::Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM paths WHERE cache_id = $1").bind(cache.0).fetch_one(&self.pool).await?;
        Ok(n)
    }

    /// Withdraws every path of a cache, and its pins (its NARs stay uploaded to it, as
    /// pending uploads that expire).
    pub async fn delete_paths(&self, cache: CacheId) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM paths WHERE cache_id = $1").bind(cache.0).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM pins WHERE cache_id = $1").bind(cache.0).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_path_signatures(&self, path: PathId, signatures: &[Signature]) -> anyhow::Result<()> {
        sqlx::query("UPDATE paths SET sigs = $2 WHERE id = $1")
            .bind(path.0)
            .bind(joined_signatures(signatures))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Which of these hashes this cache has no published path for: one query per
    /// [`MAX_BINDS_PER_QUERY`] hashes, never one per path.
    pub async fn missing_paths<'a>(&self, cache: CacheId, hashes: &[&'a StorePathHash]) -> anyhow::Result<Vec<&'a StorePathHash>> {
        let mut conn = self.pool.acquire().await?;
        let asked: Vec<&str> = hashes.iter().map(|h| h.as_str()).collect();
        let present = self.present_hashes(&mut conn, cache, &asked, false).await?;
        Ok(hashes.iter().filter(|h| !present.contains(h.as_str())).copied().collect())
    }

    /// Publishes a path, or replaces what an earlier push published for it (idempotent),
    /// unless a reference (or the NAR's possession) is missing once the path is written:
    /// then nothing is published and the missing references are returned. Written first,
    /// checked second, with the checked rows locked on Postgres (see `gc`): a collection
    /// running at the same time either sees this path or is seen by it.
    pub async fn publish_path(&self, path: NewPath<'_>, now: i64) -> anyhow::Result<Result<(), PublishRefused>> {
        let mut tx = self.pool.begin().await?;
        let (path_id,): (i64,) = sqlx::query_as(
            "INSERT INTO paths (cache_id, hash_part, store_path, nar_id, refs, deriver, ca, sigs, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (cache_id, hash_part) DO UPDATE SET store_path = excluded.store_path, nar_id = excluded.nar_id, \
             refs = excluded.refs, deriver = excluded.deriver, ca = excluded.ca, sigs = excluded.sigs, last_used_at = excluded.last_used_at \
             RETURNING id",
        )
        .bind(path.cache.0)
        .bind(path.store_path.hash_part())
        .bind(path.store_path.to_absolute())
        .bind(path.nar.0)
        .bind(joined_references(path.references))
        .bind(path.deriver.map(StorePath::base_name))
        .bind(path.ca)
        .bind(joined_signatures(path.signatures))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM path_refs WHERE path_id = $1").bind(path_id).execute(&mut *tx).await?;
        let own = path.store_path.hash_part();
        let mut others: Vec<&str> = path.references.iter().map(StorePath::hash_part).filter(|h| *h != own).collect();
        others.sort_unstable();
        others.dedup();
        for chunk in others.chunks(MAX_BINDS_PER_QUERY / 2) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, $2, ${})", i + 3)).collect();
            let sql = format!("INSERT INTO path_refs (path_id, cache_id, ref_hash) VALUES {}", values.join(", "));
            let mut query = sqlx::query(&sql).bind(path_id).bind(path.cache.0);
            for hash in chunk {
                query = query.bind(*hash);
            }
            query.execute(&mut *tx).await?;
        }
        let present = self.present_hashes(&mut tx, path.cache, &others, true).await?;
        let missing: Vec<String> = others.iter().filter(|h| !present.contains(**h)).map(|h| (*h).to_owned()).collect();
        // Held (and no longer released, if a collection had just let it go): the row is
        // written, so locked until this commits.
        let nar_held = sqlx::query("UPDATE cache_nars SET released_at = NULL WHERE cache_id = $1 AND nar_id = $2")
            .bind(path.cache.0)
            .bind(path.nar.0)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if !missing.is_empty() || !nar_held {
            tx.rollback().await?;
            return Ok(Err(if missing.is_empty() { PublishRefused::NarReclaimed } else { PublishRefused::MissingReferences(missing) }));
        }
        sqlx::query("UPDATE caches SET last_push_at = $2 WHERE id = $1").bind(path.cache.0).bind(now).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    pub async fn upsert_build_log(&self, cache: CacheId, drv: &StorePath, storage_key: &str, size: u64) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO build_logs (cache_id, drv, storage_key, size, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (cache_id, drv) DO UPDATE SET storage_key = excluded.storage_key, size = excluded.size, created_at = excluded.created_at",
        )
        .bind(cache.0)
        .bind(drv.base_name())
        .bind(storage_key)
        .bind(i64::try_from(size)?)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn build_log_key(&self, cache: CacheId, drv: &str) -> anyhow::Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT storage_key FROM build_logs WHERE cache_id = $1 AND drv = $2")
            .bind(cache.0)
            .bind(drv)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(key,)| key))
    }
}
