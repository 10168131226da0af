//! Upload sessions and the parts each holds.

use larder_protocol::hash::Sha256Hash;
use larder_protocol::store_path::StorePath;
use sqlx::FromRow;

use super::Database;
use crate::domain::{CacheId, NarEncoding, UploadPart, UploadSession};

#[derive(FromRow)]
struct SessionRow {
    id: String,
    cache_id: i64,
    store_path: String,
    nar_hash: String,
    nar_size: i64,
    refs: String,
    deriver: Option<String>,
    ca: Option<String>,
    sigs: String,
    wire_compression: String,
    part_size: i64,
    storage_key: String,
    storage_upload: String,
    expires_at: i64,
}

impl TryFrom<SessionRow> for UploadSession {
    type Error = anyhow::Error;

    fn try_from(row: SessionRow) -> anyhow::Result<Self> {
        let corrupt = |what: &str| anyhow::anyhow!("upload session {} has a bad {what}", row.id);
        Ok(UploadSession {
            cache: CacheId(row.cache_id),
            store_path: StorePath::parse(&row.store_path).map_err(|_| corrupt("store path"))?,
            nar_hash: Sha256Hash::from_nix32(&row.nar_hash).map_err(|_| corrupt("NAR hash"))?,
            nar_size: u64::try_from(row.nar_size).map_err(|_| corrupt("NAR size"))?,
            references: super::nars::split_references(&row.refs).map_err(|_| corrupt("reference"))?,
            deriver: row.deriver.as_deref().map(StorePath::from_base_name).transpose().map_err(|_| corrupt("deriver"))?,
            ca: row.ca,
            signatures: super::nars::split_signatures(&row.sigs).map_err(|_| corrupt("signature"))?,
            wire: NarEncoding::parse(&row.wire_compression).ok_or_else(|| corrupt("wire compression"))?,
            part_size: u64::try_from(row.part_size).map_err(|_| corrupt("part size"))?,
            storage_key: row.storage_key,
            storage_assembly: row.storage_upload,
            expires_at: row.expires_at,
            id: row.id,
        })
    }
}

#[derive(FromRow)]
struct PartRow {
    number: i64,
    size: i64,
    etag: String,
}

const SESSION_COLUMNS: &str = "id, cache_id, store_path, nar_hash, nar_size, refs, deriver, ca, sigs, wire_compression, part_size, \
                               storage_key, storage_upload, expires_at";

impl Database {
    pub async fn create_upload_session(&self, session: &UploadSession, now: i64) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO upload_sessions (id, cache_id, store_path, nar_hash, nar_size, refs, deriver, ca, sigs, wire_compression, \
             part_size, storage_key, storage_upload, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&session.id)
        .bind(session.cache.0)
        .bind(session.store_path.to_absolute())
        .bind(session.nar_hash.to_nix32())
        .bind(i64::try_from(session.nar_size)?)
        .bind(super::nars::joined_references(&session.references))
        .bind(session.deriver.as_ref().map(StorePath::base_name))
        .bind(session.ca.as_deref())
        .bind(super::nars::joined_signatures(&session.signatures))
        .bind(session.wire.as_str())
        .bind(i64::try_from(session.part_size)?)
        .bind(&session.storage_key)
        .bind(&session.storage_assembly)
        .bind(now)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The cache's session `id`, unless it expired.
    pub async fn upload_session(&self, cache: CacheId, id: &str, now: i64) -> anyhow::Result<Option<UploadSession>> {
        let row: Option<SessionRow> =
            sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM upload_sessions WHERE id = $1 AND cache_id = $2 AND expires_at > $3"))
                .bind(id)
                .bind(cache.0)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        row.map(UploadSession::try_from).transpose()
    }

    /// Open sessions of the cache for this store path, newest first (a pusher that lost
    /// its session id picks up where it was).
    pub async fn upload_sessions_for(&self, cache: CacheId, store_path: &StorePath, now: i64) -> anyhow::Result<Vec<UploadSession>> {
        let rows: Vec<SessionRow> = sqlx::query_as(&format!(
            "SELECT {SESSION_COLUMNS} FROM upload_sessions WHERE cache_id = $1 AND store_path = $2 AND expires_at > $3 \
             ORDER BY created_at DESC"
        ))
        .bind(cache.0)
        .bind(store_path.to_absolute())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(UploadSession::try_from).collect()
    }

    /// Records part `number` as held, replacing an earlier copy's record.
    pub async fn record_upload_part(&self, session: &str, part: &UploadPart) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO upload_parts (session_id, number, size, etag) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (session_id, number) DO UPDATE SET size = excluded.size, etag = excluded.etag",
        )
        .bind(session)
        .bind(i64::from(part.number))
        .bind(i64::try_from(part.size)?)
        .bind(&part.tag)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The parts held, by number.
    pub async fn upload_parts(&self, session: &str) -> anyhow::Result<Vec<UploadPart>> {
        let rows: Vec<PartRow> = sqlx::query_as("SELECT number, size, etag FROM upload_parts WHERE session_id = $1 ORDER BY number")
            .bind(session)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(UploadPart {
                    number: u32::try_from(row.number).map_err(|_| anyhow::anyhow!("upload part of {session} has a bad number"))?,
                    size: u64::try_from(row.size).map_err(|_| anyhow::anyhow!("upload part of {session} has a bad size"))?,
                    tag: row.etag,
                })
            })
            .collect()
    }

    /// Forgets a session and its parts' records (its storage is the caller's to release).
    pub async fn delete_upload_session(&self, session: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM upload_sessions WHERE id = $1").bind(session).execute(&self.pool).await?;
        Ok(())
    }

    /// Sessions that expired by `now`, at most `limit`, oldest first.
    pub async fn expired_upload_sessions(&self, now: i64, limit: i64) -> anyhow::Result<Vec<UploadSession>> {
        let rows: Vec<SessionRow> =
            sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM upload_sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2"))
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(UploadSession::try_from).collect()
    }
}
