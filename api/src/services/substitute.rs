//! Substitution: narinfos rendered from our own rows, NARs, listings and build logs.

use bytes::Bytes;
use larder_protocol::binary_cache::nar_url;
use larder_protocol::compression::Compression;
use larder_protocol::hash::Sha256Hash;
use larder_protocol::narinfo::NarInfo;
use larder_protocol::store_path::StorePathHash;

use std::sync::Arc;

use super::memo::RenderedNarinfo;
use super::{ServiceResult, Services};
use crate::domain::{Cache, CacheId, Nar, NarId, PublishedPath};
use crate::storage::{ByteRange, Object};

/// A NAR that may be sent: its size, and where its bytes are.
#[derive(Clone)]
pub struct NarDownload {
    pub size: u64,
    storage_key: String,
    compression: Compression,
    cache: CacheId,
    nar: NarId,
}

impl NarDownload {
    fn of(cache: &Cache, nar: Nar) -> Self {
        Self { size: nar.file_size, storage_key: nar.storage_key, compression: nar.compression, cache: cache.id, nar: nar.id }
    }
}

impl Services {
    /// The narinfo of a published path, signed; `None` if this cache has no such path.
    /// Asking for it is a use of the path (garbage collection keeps used paths).
    #[tracing::instrument(level = "debug", skip_all, fields(cache = %cache.name, path = %hash))]
    pub async fn narinfo(&self, cache: &Cache, hash: &StorePathHash) -> ServiceResult<Option<Bytes>> {
        let rendered = match self.inner.memo.narinfo(cache.id, hash) {
            Some(remembered) => remembered,
            None => {
                // Read before the rows: a change committed meanwhile raises it past this.
                let generation = self.inner.memo.narinfo_generation(cache.id);
                let rendered = match self.db().path(cache.id, hash).await? {
                    Some(path) => {
                        let id = path.id;
                        let mut info = narinfo_of(path);
                        // Only active keys' signatures are served: retiring a key withdraws them.
                        let active = self.active_key_names(cache).await?;
                        let active: Vec<&str> = active.iter().map(String::as_str).collect();
                        info.retain_signatures_by(&active);
                        Some(RenderedNarinfo { path: id, text: Bytes::from(info.render()) })
                    }
                    None => None,
                };
                self.inner.memo.remember_narinfo(cache.id, hash.clone(), generation, rendered.clone());
                rendered
            }
        };
        Ok(rendered.map(|narinfo| {
            self.inner.memo.record_path_use(narinfo.path, self.clock().now());
            narinfo.text
        }))
    }

    /// The names of a cache's active keys, remembered for a while (see `memo`).
    pub(super) async fn active_key_names(&self, cache: &Cache) -> ServiceResult<Arc<Vec<String>>> {
        if let Some(names) = self.inner.memo.active_keys(cache.id) {
            return Ok(names);
        }
        let generation = self.inner.memo.narinfo_generation(cache.id);
        let names: Arc<Vec<String>> = Arc::new(self.db().active_key_names(cache.id).await?);
        self.inner.memo.remember_active_keys(cache.id, generation, Arc::clone(&names));
        Ok(names)
    }

    /// A published NAR of this cache (never a pending upload, never another cache's).
    /// A pusher may also see its pending uploads (`include_pending`), so that `nix copy`
    /// skips re-sending them.
    #[tracing::instrument(level = "debug", skip_all, fields(cache = %cache.name, file_hash = %file_hash.to_nix32()))]
    pub async fn nar(
        &self,
        cache: &Cache,
        file_hash: &Sha256Hash,
        extension: &str,
        include_pending: bool,
    ) -> ServiceResult<Option<NarDownload>> {
        let download = if include_pending {
            self.db().uploaded_nar(cache.id, file_hash).await?.map(|nar| NarDownload::of(cache, nar))
        } else if let Some(remembered) = self.inner.memo.nar(cache.id, file_hash) {
            Some(remembered)
        } else {
            let generation = self.inner.memo.narinfo_generation(cache.id);
            let download = self.db().published_nar(cache.id, file_hash).await?.map(|nar| NarDownload::of(cache, nar));
            if let Some(download) = &download {
                self.inner.memo.remember_nar(cache.id, *file_hash, generation, download.clone());
            }
            download
        };
        Ok(download.filter(|download| download.compression.extension() == extension))
    }

    /// Where the client may fetch a whole NAR itself, if the storage hands out such URLs
    /// (S3 with `s3_redirect_downloads`): a use of the cache's paths, as a download is.
    pub async fn nar_redirect(&self, nar: &NarDownload) -> ServiceResult<Option<String>> {
        let Some(url) = self.storage().download_url(&nar.storage_key).await? else {
            return Ok(None);
        };
        self.inner.memo.record_nar_use(nar.cache, nar.nar, nar.size, self.clock().now());
        Ok(Some(url))
    }

    /// Opens a NAR to send it (or a range of it): a use of the cache's paths with it.
    pub async fn open_nar(&self, nar: &NarDownload, range: Option<ByteRange>) -> ServiceResult<Object> {
        let object = self
            .storage()
            .get(&nar.storage_key, range)
            .await?
            .ok_or_else(|| anyhow::anyhow!("NAR {} is recorded but missing from storage", nar.storage_key))?;
        let sent = range.map_or(nar.size, |r| r.len());
        self.inner.memo.record_nar_use(nar.cache, nar.nar, sent, self.clock().now());
        Ok(object)
    }

    /// The `.ls` listing of a published path's NAR (none if it was too large to keep).
    #[tracing::instrument(level = "debug", skip_all, fields(cache = %cache.name, path = %hash))]
    pub async fn listing(&self, cache: &Cache, hash: &StorePathHash) -> ServiceResult<Option<Object>> {
        let Some(path) = self.db().path(cache.id, hash).await? else {
            return Ok(None);
        };
        Ok(self.storage().get(&path.nar.listing_key, None).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(cache = %cache.name, drv))]
    pub async fn build_log(&self, cache: &Cache, drv: &str) -> ServiceResult<Option<Object>> {
        let Some(key) = self.db().build_log_key(cache.id, drv).await? else {
            return Ok(None);
        };
        Ok(self.storage().get(&key, None).await?)
    }
}

/// The narinfo a published path is served as (with every stored signature).
pub(super) fn narinfo_of(path: PublishedPath) -> NarInfo {
    let PublishedPath { store_path, references, deriver, ca, signatures, nar, .. } = path;
    NarInfo {
        store_path,
        url: nar_url(&nar.file_hash, nar.compression),
        compression: nar.compression,
        file_hash: Some(nar.file_hash),
        file_size: Some(nar.file_size),
        nar_hash: nar.nar_hash,
        nar_size: nar.nar_size,
        references,
        deriver,
        system: None,
        sigs: signatures,
        ca,
    }
}
