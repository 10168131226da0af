//! Garbage collection's queries: the reference graph of a cache, deleting paths without
//! ever breaking a closure, reclaiming NARs no cache holds, the durable queue of storage
//! deletes, pins, last uses and usage.
//!
//! Every deleting transaction starts with its write (SQLite then holds the write lock for
//! the whole transaction) and re-checks, after deleting, that no remaining path refers to
//! what it deleted; a push commits its path and then checks its references the same way,
//! locking them on Postgres (`FOR SHARE`). Whichever of the two commits second sees the
//! other's change and gives up, so no path is ever published, or left, without a reference.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use larder_protocol::store_path::StorePath;
use sqlx::{AnyConnection, FromRow};

use super::{Backend, Database, MAX_BINDS_PER_QUERY};
use crate::domain::{CacheId, NarId, PathId, PinRevision};

/// A path as garbage collection sees it.
pub struct GcPath {
    pub id: PathId,
    pub hash_part: String,
    pub store_path: String,
    pub nar: NarId,
    pub file_size: u64,
    pub nar_size: u64,
    pub last_used_at: i64,
}

#[derive(FromRow)]
struct GcPathRow {
    id: i64,
    hash_part: String,
    store_path: String,
    nar_id: i64,
    file_size: i64,
    nar_size: i64,
    last_used_at: i64,
}

/// A cache's paths and the references between them.
pub struct CacheGraph {
    pub paths: Vec<GcPath>,
    /// (referrer, hash part of the path it refers to).
    pub edges: Vec<(PathId, String)>,
}

/// What deleting a batch of paths did.
pub enum BatchOutcome {
    /// Deleted: the store path of each.
    Deleted(Vec<String>),
    /// Nothing deleted: a remaining path refers to one of them (pushed since the plan was
    /// made, or used since and so kept, with the paths it refers to).
    StillReferenced,
}

/// A storage object due for deletion.
pub struct QueuedDelete {
    pub id: i64,
    pub storage_key: String,
    pub attempts: i64,
}

/// A path that refers to another.
pub struct Referrer {
    pub id: PathId,
    pub hash_part: String,
    pub store_path: String,
}

#[derive(FromRow)]
struct PinRow {
    id: i64,
    name: String,
    store_path: String,
    keep_revisions: Option<i64>,
    keep_days: Option<i64>,
    pinned_at: i64,
}

impl PinRow {
    fn into_revision(self) -> anyhow::Result<(i64, PinRevision)> {
        let corrupt = |what: &str| anyhow::anyhow!("pin row {} has a bad {what}", self.id);
        let revision = PinRevision {
            store_path: StorePath::parse(&self.store_path).map_err(|_| corrupt("store path"))?,
            keep_revisions: self.keep_revisions.map(u32::try_from).transpose().map_err(|_| corrupt("keep_revisions"))?,
            keep_days: self.keep_days.map(u32::try_from).transpose().map_err(|_| corrupt("keep_days"))?,
            pinned_at: self.pinned_at,
            name: self.name,
        };
        Ok((self.id, revision))
    }
}

/// Usage counters of one cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheUsage {
    pub paths: u64,
    pub stored_bytes: u64,
    pub served_bytes_24h: u64,
    pub served_bytes_30d: u64,
    pub last_push_at: Option<i64>,
    pub last_use_at: Option<i64>,
}

/// `$first, $first+1, …` for `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn to_u64(value: i64, what: &str) -> anyhow::Result<u64> {
    u64::try_from(value).map_err(|_| anyhow::anyhow!("negative {what} in the database"))
}

impl Database {
    /// Row locks that keep what a transaction just checked from being deleted before it
    /// commits (Postgres; SQLite's write lock already serialises writers).
    fn share_lock(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR SHARE",
            Backend::Sqlite => "",
        }
    }

    /// Which of `hashes` this cache has published paths for, read on `conn` (inside a
    /// transaction on Postgres, locking them).
    pub(super) async fn present_hashes(
        &self,
        conn: &mut AnyConnection,
        cache: CacheId,
        hashes: &[&str],
        lock: bool,
    ) -> anyhow::Result<std::collections::HashSet<String>> {
        let mut present = std::collections::HashSet::new();
        let lock = if lock { self.share_lock() } else { "" };
        for chunk in hashes.chunks(MAX_BINDS_PER_QUERY) {
            let sql = format!("SELECT hash_part FROM paths WHERE cache_id = $1 AND hash_part IN ({}){lock}", placeholders(2, chunk.len()));
            let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(cache.0);
            for hash in chunk {
                query = query.bind(*hash);
            }
            present.extend(query.fetch_all(&mut *conn).await?.into_iter().map(|(hash,)| hash));
        }
        Ok(present)
    }

    /// A cache's paths and references, streamed from the database (never two copies of
    /// the rows in memory).
    pub async fn cache_graph(&self, cache: CacheId) -> anyhow::Result<CacheGraph> {
        let mut paths = Vec::new();
        let mut rows = sqlx::query_as::<_, GcPathRow>(
            "SELECT p.id, p.hash_part, p.store_path, p.nar_id, n.file_size, n.nar_size, p.last_used_at \
             FROM paths p JOIN nars n ON n.id = p.nar_id WHERE p.cache_id = $1",
        )
        .bind(cache.0)
        .fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            paths.push(GcPath {
                id: PathId(row.id),
                hash_part: row.hash_part,
                store_path: row.store_path,
                nar: NarId(row.nar_id),
                file_size: to_u64(row.file_size, "file size")?,
                nar_size: to_u64(row.nar_size, "NAR size")?,
                last_used_at: row.last_used_at,
            });
        }
        drop(rows);
        let mut edges = Vec::new();
        let mut rows = sqlx::query_as::<_, (i64, String)>("SELECT path_id, ref_hash FROM path_refs WHERE cache_id = $1")
            .bind(cache.0)
            .fetch(&self.pool);
        while let Some((path, hash)) = rows.try_next().await? {
            edges.push((PathId(path), hash));
        }
        Ok(CacheGraph { paths, edges })
    }

    /// Deletes these paths of a cache in one transaction, and releases the NARs no other
    /// path of the cache uses (unless uploaded again since `started`): they are still sent
    /// during the grace period, then let go by [`Database::let_go_of_nars`]. Pinned paths
    /// are never deleted, nor (with `unused_since`) paths used since then. If a remaining
    /// path refers to a deleted one, nothing is deleted.
    pub async fn delete_path_batch(
        &self,
        cache: CacheId,
        ids: &[PathId],
        unused_since: Option<i64>,
        started: i64,
    ) -> anyhow::Result<BatchOutcome> {
        assert!(ids.len() <= MAX_BINDS_PER_QUERY, "batches are at most MAX_BINDS_PER_QUERY paths");
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "DELETE FROM paths WHERE cache_id = $1 AND last_used_at < $2 AND id IN ({}) \
             AND hash_part NOT IN (SELECT hash_part FROM pins WHERE cache_id = $1) RETURNING hash_part, store_path, nar_id",
            placeholders(3, ids.len())
        );
        let mut query = sqlx::query_as::<_, (String, String, i64)>(&sql).bind(cache.0).bind(unused_since.unwrap_or(i64::MAX));
        for id in ids {
            query = query.bind(id.0);
        }
        let deleted = query.fetch_all(&mut *tx).await?;
        if deleted.is_empty() {
            tx.rollback().await?;
            return Ok(BatchOutcome::Deleted(Vec::new()));
        }
        let hashes: Vec<&str> = deleted.iter().map(|(hash, _, _)| hash.as_str()).collect();
        let sql = format!("SELECT COUNT(*) FROM path_refs WHERE cache_id = $1 AND ref_hash IN ({})", placeholders(2, hashes.len()));
        let mut query = sqlx::query_as::<_, (i64,)>(&sql).bind(cache.0);
        for hash in &hashes {
            query = query.bind(*hash);
        }
        let (referrers,) = query.fetch_one(&mut *tx).await?;
        if referrers > 0 {
            tx.rollback().await?;
            return Ok(BatchOutcome::StillReferenced);
        }
        let mut nars: Vec<i64> = deleted.iter().map(|(_, _, nar)| *nar).collect();
        nars.sort_unstable();
        nars.dedup();
        let sql = format!(
            "UPDATE cache_nars SET released_at = $2 WHERE cache_id = $1 AND uploaded_at < $2 AND released_at IS NULL AND nar_id IN ({}) \
             AND NOT EXISTS (SELECT 1 FROM paths p WHERE p.cache_id = $1 AND p.nar_id = cache_nars.nar_id)",
            placeholders(3, nars.len())
        );
        let mut query = sqlx::query(&sql).bind(cache.0).bind(started);
        for nar in &nars {
            query = query.bind(*nar);
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(BatchOutcome::Deleted(deleted.into_iter().map(|(_, path, _)| path).collect()))
    }

    /// The paths of a cache that refer to any of `hashes`.
    pub async fn referrers(&self, cache: CacheId, hashes: &[&str]) -> anyhow::Result<Vec<Referrer>> {
        let mut found = Vec::new();
        for chunk in hashes.chunks(MAX_BINDS_PER_QUERY) {
            let sql = format!(
                "SELECT DISTINCT p.id, p.hash_part, p.store_path FROM path_refs r JOIN paths p ON p.id = r.path_id \
                 WHERE r.cache_id = $1 AND r.ref_hash IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (i64, String, String)>(&sql).bind(cache.0);
            for hash in chunk {
                query = query.bind(*hash);
            }
            found.extend(query.fetch_all(&self.pool).await?.into_iter().map(|(id, hash_part, store_path)| Referrer {
                id: PathId(id),
                hash_part,
                store_path,
            }));
        }
        Ok(found)
    }

    /// The references (to other paths, by hash part) of these paths.
    pub async fn references_of(&self, paths: &[PathId]) -> anyhow::Result<Vec<(PathId, String)>> {
        let mut edges = Vec::new();
        for chunk in paths.chunks(MAX_BINDS_PER_QUERY) {
            let sql = format!("SELECT path_id, ref_hash FROM path_refs WHERE path_id IN ({})", placeholders(1, chunk.len()));
            let mut query = sqlx::query_as::<_, (i64, String)>(&sql);
            for id in chunk {
                query = query.bind(id.0);
            }
            edges.extend(query.fetch_all(&self.pool).await?.into_iter().map(|(id, hash)| (PathId(id), hash)));
        }
        Ok(edges)
    }

    /// Drops possession of NARs that no path of the cache uses: released before
    /// `released_before` (the grace period is over) or uploaded before `uploaded_before`
    /// and never published (abandoned pushes). Returns how many. A NAR released while a
    /// push published a path with it (possible on Postgres) is taken back instead.
    pub async fn let_go_of_nars(&self, released_before: i64, uploaded_before: i64) -> anyhow::Result<u64> {
        const USED: &str = "EXISTS (SELECT 1 FROM paths p WHERE p.cache_id = cache_nars.cache_id AND p.nar_id = cache_nars.nar_id)";
        sqlx::query(&format!("UPDATE cache_nars SET released_at = NULL WHERE released_at IS NOT NULL AND {USED}"))
            .execute(&self.pool)
            .await?;
        let result = sqlx::query(&format!(
            "DELETE FROM cache_nars WHERE (released_at < $1 OR (released_at IS NULL AND uploaded_at < $2)) AND NOT {USED}"
        ))
        .bind(released_before)
        .bind(uploaded_before)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Deletes NAR rows no cache holds and no path uses, queueing their objects (due at
    /// `due`) in the same transaction; returns how many.
    pub async fn reclaim_unheld_nars(&self, due: i64) -> anyhow::Result<u64> {
        const UNHELD: &str = "NOT EXISTS (SELECT 1 FROM cache_nars c WHERE c.nar_id = nars.id) \
                              AND NOT EXISTS (SELECT 1 FROM paths p WHERE p.nar_id = nars.id)";
        let mut reclaimed = 0;
        loop {
            let ids: Vec<(i64,)> =
                sqlx::query_as(&format!("SELECT id FROM nars WHERE {UNHELD} LIMIT {MAX_BINDS_PER_QUERY}")).fetch_all(&self.pool).await?;
            if ids.is_empty() {
                return Ok(reclaimed);
            }
            let mut tx = self.pool.begin().await?;
            let sql =
                format!("DELETE FROM nars WHERE id IN ({}) AND {UNHELD} RETURNING storage_key, listing_key", placeholders(1, ids.len()));
            let mut query = sqlx::query_as::<_, (String, String)>(&sql);
            for (id,) in &ids {
                query = query.bind(*id);
            }
            let keys = query.fetch_all(&mut *tx).await?;
            let objects: Vec<&str> = keys.iter().flat_map(|(nar, listing)| [nar.as_str(), listing.as_str()]).collect();
            queue(&mut tx, &objects, due).await?;
            tx.commit().await?;
            reclaimed += keys.len() as u64;
            if keys.is_empty() {
                // Every candidate was taken again meanwhile; the next sweep looks again.
                return Ok(reclaimed);
            }
        }
    }

    /// Queues objects for deletion at `due` (an upload's own object, before it is written).
    pub async fn queue_storage_deletes(&self, keys: &[&str], due: i64) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        queue(&mut conn, keys, due).await
    }

    pub async fn due_storage_deletes(&self, now: i64, limit: i64) -> anyhow::Result<Vec<QueuedDelete>> {
        let rows: Vec<(i64, String, i64)> =
            sqlx::query_as("SELECT id, storage_key, attempts FROM storage_deletes WHERE due_at <= $1 ORDER BY due_at, id LIMIT $2")
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id, storage_key, attempts)| QueuedDelete { id, storage_key, attempts }).collect())
    }

    /// Takes deleted objects off the queue.
    pub async fn finish_storage_deletes(&self, ids: &[i64]) -> anyhow::Result<()> {
        self.delete_by_id("storage_deletes", ids).await
    }

    pub async fn retry_storage_delete(&self, id: i64, due: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE storage_deletes SET attempts = attempts + 1, due_at = $2 WHERE id = $1")
            .bind(id)
            .bind(due)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn count_storage_deletes(&self) -> anyhow::Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM storage_deletes").fetch_one(&self.pool).await?;
        Ok(n)
    }

    /// Deletes rows of `table` by id, a few hundred per statement.
    async fn delete_by_id(&self, table: &'static str, ids: &[i64]) -> anyhow::Result<()> {
        for chunk in ids.chunks(MAX_BINDS_PER_QUERY) {
            let sql = format!("DELETE FROM {table} WHERE id IN ({})", placeholders(1, chunk.len()));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Writes last uses: each path id, and each path of a cache using a NAR, used at a time.
    pub async fn record_path_uses(
        &self,
        paths: &HashMap<i64, Vec<PathId>>,
        nars: &HashMap<(CacheId, i64), Vec<NarId>>,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for (at, ids) in paths {
            for chunk in ids.chunks(MAX_BINDS_PER_QUERY) {
                let sql =
                    format!("UPDATE paths SET last_used_at = $1 WHERE last_used_at < $1 AND id IN ({})", placeholders(2, chunk.len()));
                let mut query = sqlx::query(&sql).bind(*at);
                for id in chunk {
                    query = query.bind(id.0);
                }
                query.execute(&mut *tx).await?;
            }
        }
        for ((cache, at), ids) in nars {
            for chunk in ids.chunks(MAX_BINDS_PER_QUERY) {
                let sql = format!(
                    "UPDATE paths SET last_used_at = $2 WHERE cache_id = $1 AND last_used_at < $2 AND nar_id IN ({})",
                    placeholders(3, chunk.len())
                );
                let mut query = sqlx::query(&sql).bind(cache.0).bind(*at);
                for id in chunk {
                    query = query.bind(id.0);
                }
                query.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds NAR bytes served, per cache and hour.
    pub async fn add_served_bytes(&self, served: &HashMap<(CacheId, i64), u64>) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for ((cache, hour), bytes) in served {
            // A cache deleted meanwhile has no row to count for.
            sqlx::query(
                "INSERT INTO served_bytes (cache_id, hour, bytes) SELECT id, $2, $3 FROM caches WHERE id = $1 \
                 ON CONFLICT (cache_id, hour) DO UPDATE SET bytes = served_bytes.bytes + excluded.bytes",
            )
            .bind(cache.0)
            .bind(*hour)
            .bind(i64::try_from(*bytes)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn prune_served_bytes(&self, before_hour: i64) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM served_bytes WHERE hour < $1").bind(before_hour).execute(&self.pool).await?;
        Ok(())
    }

    /// Bytes of the NARs a cache holds (published or pending, not released), each counted once.
    pub async fn stored_bytes(&self, cache: CacheId) -> anyhow::Result<u64> {
        let (bytes,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(n.file_size), 0) AS BIGINT) FROM cache_nars c JOIN nars n ON n.id = c.nar_id \
             WHERE c.cache_id = $1 AND c.released_at IS NULL",
        )
        .bind(cache.0)
        .fetch_one(&self.pool)
        .await?;
        to_u64(bytes, "stored bytes")
    }

    pub async fn usage(&self, cache: CacheId, now: i64) -> anyhow::Result<CacheUsage> {
        let (paths, last_use): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MAX(last_used_at) FROM paths WHERE cache_id = $1").bind(cache.0).fetch_one(&self.pool).await?;
        let (last_push,): (Option<i64>,) =
            sqlx::query_as("SELECT last_push_at FROM caches WHERE id = $1").bind(cache.0).fetch_one(&self.pool).await?;
        let hour = now.div_euclid(3600);
        let (day, month): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(CASE WHEN hour > $2 THEN bytes ELSE 0 END), 0) AS BIGINT), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) \
             FROM served_bytes WHERE cache_id = $1 AND hour > $3",
        )
        .bind(cache.0)
        .bind(hour - 24)
        .bind(hour - 30 * 24)
        .fetch_one(&self.pool)
        .await?;
        Ok(CacheUsage {
            paths: to_u64(paths, "path count")?,
            stored_bytes: self.stored_bytes(cache).await?,
            served_bytes_24h: to_u64(day, "served bytes")?,
            served_bytes_30d: to_u64(month, "served bytes")?,
            last_push_at: last_push,
            last_use_at: last_use,
        })
    }

    // ---- pins ----------------------------------------------------------------------------

    /// Pins a published path under a name (write first, then the check that the path is
    /// there, locked: a collection cannot take it between the two). False if it is not.
    pub async fn pin(
        &self,
        cache: CacheId,
        name: &str,
        path: &StorePath,
        keep: (Option<u32>, Option<u32>),
        now: i64,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO pins (cache_id, name, hash_part, store_path, keep_revisions, keep_days, pinned_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(cache.0)
        .bind(name)
        .bind(path.hash_part())
        .bind(path.to_absolute())
        .bind(keep.0.map(i64::from))
        .bind(keep.1.map(i64::from))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if self.present_hashes(&mut tx, cache, &[path.hash_part()], true).await?.is_empty() {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Every pin revision of a cache (by name, newest first), with its row id.
    pub async fn pin_revisions(&self, cache: CacheId) -> anyhow::Result<Vec<(i64, PinRevision)>> {
        let rows: Vec<PinRow> = sqlx::query_as(
            "SELECT id, name, store_path, keep_revisions, keep_days, pinned_at FROM pins WHERE cache_id = $1 ORDER BY name, pinned_at DESC, id DESC",
        )
        .bind(cache.0)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(PinRow::into_revision).collect()
    }

    pub async fn delete_pin_revisions(&self, ids: &[i64]) -> anyhow::Result<()> {
        self.delete_by_id("pins", ids).await
    }

    /// Removes a pin with all its revisions; false if there was none.
    pub async fn unpin(&self, cache: CacheId, name: &str) -> anyhow::Result<bool> {
        let result = sqlx::query("DELETE FROM pins WHERE cache_id = $1 AND name = $2").bind(cache.0).bind(name).execute(&self.pool).await?;
        Ok(result.rows_affected() > 0)
    }

    // ---- one collector at a time ---------------------------------------------------------

    /// On Postgres, takes the collectors' advisory lock if it is free (`Some(None)` when
    /// another node holds it); `None` on SQLite, where the caller locks a file instead.
    pub async fn try_collector_lock(&self) -> anyhow::Result<Option<Option<CollectorLock>>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut conn = self.pool.acquire().await?;
        let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)").bind(COLLECTOR_LOCK_KEY).fetch_one(&mut *conn).await?;
        Ok(Some(taken.then(|| CollectorLock { conn: Some(conn) })))
    }
}

/// Queues objects for deletion at `due`, a few hundred per statement.
async fn queue(conn: &mut AnyConnection, keys: &[&str], due: i64) -> anyhow::Result<()> {
    for chunk in keys.chunks(MAX_BINDS_PER_QUERY - 1) {
        let values: Vec<String> = (0..chunk.len()).map(|i| format!("(${}, $1)", i + 2)).collect();
        let sql = format!("INSERT INTO storage_deletes (storage_key, due_at) VALUES {}", values.join(", "));
        let mut query = sqlx::query(&sql).bind(due);
        for key in chunk {
            query = query.bind(*key);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The advisory lock's key: any constant all nodes agree on ("larder gc").
const COLLECTOR_LOCK_KEY: i64 = 0x6c61_7264_6572_6763;

/// Holds the collectors' advisory lock (a session lock, so it lives on one connection).
pub struct CollectorLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
}

impl CollectorLock {
    pub async fn release(mut self) -> anyhow::Result<()> {
        if let Some(mut conn) = self.conn.take() {
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(COLLECTOR_LOCK_KEY).execute(&mut *conn).await?;
        }
        Ok(())
    }
}

impl Drop for CollectorLock {
    /// Not released (an error or a panic on the way): close the connection rather than
    /// return it to the pool still holding the lock; the server then releases it.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}
