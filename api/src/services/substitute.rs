//! Substitution: narinfos rendered from our own rows, NARs, listings and build logs.

use larder_protocol::compression::{self, Compression};
use larder_protocol::hash::Sha256Hash;
use larder_protocol::narinfo::NarInfo;
use larder_protocol::store_path::{StorePath, StorePathHash};

use super::{ServiceError, ServiceResult, Services};
use crate::db::{CacheRow, PathRow};
use crate::storage::{ByteRange, Object};

/// A NAR that may be sent: its size, and where its bytes are.
pub struct NarDownload {
    pub size: u64,
    storage_key: String,
}

impl Services {
    /// The narinfo of a published path, signed; `None` if this cache has no such path.
    pub async fn narinfo(&self, cache: &CacheRow, hash_part: &str) -> ServiceResult<Option<String>> {
        if StorePathHash::parse(hash_part).is_err() {
            return Ok(None);
        }
        let Some(row) = self.db().path(cache.id, hash_part).await? else {
            return Ok(None);
        };
        let mut info = render_narinfo(&row)?;
        // Only active keys' signatures are served: retiring a key withdraws them.
        let active: Vec<String> = self.db().active_signing_keys(cache.id).await?.into_iter().map(|k| k.key_name).collect();
        info.sigs.retain(|sig| sig.split(':').next().is_some_and(|name| active.iter().any(|a| a == name)));
        Ok(Some(info.render()))
    }

    /// A published NAR of this cache (never a pending upload, never another cache's).
    /// A pusher may also see its pending uploads (`include_pending`), so that `nix copy`
    /// skips re-sending them.
    pub async fn nar(&self, cache: &CacheRow, file_name: &str, include_pending: bool) -> ServiceResult<Option<NarDownload>> {
        let Ok((file_hash, extension)) = compression::parse_nar_file_name(file_name) else {
            return Ok(None);
        };
        let file_hash = file_hash.to_nix32();
        let nar = if include_pending {
            self.db().uploaded_nar(cache.id, &file_hash).await?
        } else {
            self.db().published_nar(cache.id, &file_hash).await?
        };
        let Some(nar) = nar.filter(|nar| Compression::from_name(&nar.compression).is_some_and(|c| c.extension() == extension))
        else {
            return Ok(None);
        };
        Ok(Some(NarDownload { size: nar.file_size as u64, storage_key: nar.storage_key }))
    }

    pub async fn open_nar(&self, nar: &NarDownload, range: Option<ByteRange>) -> ServiceResult<Object> {
        Ok(self
            .storage()
            .get(&nar.storage_key, range)
            .await?
            .ok_or_else(|| anyhow::anyhow!("NAR {} is recorded but missing from storage", nar.storage_key))?)
    }

    /// The `.ls` listing of a published path's NAR.
    pub async fn listing(&self, cache: &CacheRow, hash_part: &str) -> ServiceResult<Option<Object>> {
        if StorePathHash::parse(hash_part).is_err() {
            return Ok(None);
        }
        let Some(row) = self.db().path(cache.id, hash_part).await? else {
            return Ok(None);
        };
        Ok(self.storage().get(&row.nar.listing_key, None).await?)
    }

    pub async fn build_log(&self, cache: &CacheRow, drv: &str) -> ServiceResult<Option<Object>> {
        let Some(key) = self.db().build_log_key(cache.id, drv).await? else {
            return Ok(None);
        };
        Ok(self.storage().get(&key, None).await?)
    }
}

pub(super) fn render_narinfo(row: &PathRow) -> ServiceResult<NarInfo> {
    let corrupt = |what: &str| ServiceError::Internal(anyhow::anyhow!("stored path {} has a bad {what}", row.store_path));
    let file_hash = Sha256Hash::from_nix32(&row.nar.file_hash).map_err(|_| corrupt("file hash"))?;
    let compression = Compression::from_name(&row.nar.compression).ok_or_else(|| corrupt("compression"))?;
    let references = row
        .refs
        .split_whitespace()
        .map(StorePath::from_base_name)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| corrupt("reference"))?;
    Ok(NarInfo {
        store_path: StorePath::parse(&row.store_path).map_err(|_| corrupt("store path"))?,
        url: compression::nar_url(&file_hash, compression),
        compression,
        file_hash: Some(file_hash),
        file_size: Some(row.nar.file_size as u64),
        nar_hash: Sha256Hash::from_nix32(&row.nar.nar_hash).map_err(|_| corrupt("NAR hash"))?,
        nar_size: row.nar.nar_size as u64,
        references,
        deriver: row.deriver.as_deref().map(StorePath::from_base_name).transpose().map_err(|_| corrupt("deriver"))?,
        system: None,
        sigs: row.sigs.lines().filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        ca: row.ca.clone(),
    })
}
