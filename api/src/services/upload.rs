//! Pushes with the stock client: NAR uploads (verified while they stream) and narinfo
//! commits (which publish a path only when its NAR and references are in the cache).

use std::io;

use bytes::Bytes;
use futures_util::Stream;
use larder_protocol::binary_cache::{nar_url, parse_nar_file_name};
use larder_protocol::compression::Compression;
use larder_protocol::hash::Sha256Hash;
use larder_protocol::narinfo::NarInfo;
use larder_protocol::signing::Signature;
use larder_protocol::store_path::{StorePath, StorePathHash};

use super::limited_body::LimitedBody;
use super::nar_verifier::{UploadVerifier, VerifiedUpload};
use super::{ServiceError, ServiceResult, Services};
use crate::db::PublishRefused;
use crate::domain::{Cache, Nar, NewNar, NewPath, SigningMode};
use crate::storage::Upload;

/// Where one upload of a NAR keeps its bytes and listing: named by file hash, plus a
/// suffix of its own, so that an upload of bytes just reclaimed never shares an object
/// with the reclaimed copy's pending delete (clients find NARs by file hash, through the
/// database, never by key).
struct ObjectKeys {
    nar: String,
    listing: String,
}

impl ObjectKeys {
    fn new(file_hash: &Sha256Hash, compression: Compression) -> Self {
        let unique = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let url = nar_url(file_hash, compression);
        let (stem, extension) = url.split_once('.').expect("a NAR URL has an extension");
        Self { nar: format!("{stem}-{unique}.{extension}"), listing: format!("ls/{}-{unique}.ls", file_hash.to_nix32()) }
    }
}

/// An upload whose bytes hashed to the URL's file hash and formed a valid NAR.
impl VerifiedUpload {
    fn new_nar(&self, keys: ObjectKeys) -> NewNar {
        NewNar {
            file_hash: self.file_hash,
            file_size: self.file_size,
            compression: self.compression,
            nar_hash: self.summary.nar_hash,
            nar_size: self.summary.nar_size,
            storage_key: keys.nar,
            listing_key: keys.listing,
        }
    }
}

impl Services {
    /// Receives `nar/<file hash>.nar<extension>` for a cache: streams it into storage
    /// while hashing the file and parsing the decompressed NAR, and keeps it only if the
    /// bytes match the file hash in the URL, form a valid NAR and arrived in full.
    #[tracing::instrument(skip_all, fields(cache = %cache.name, file_hash = %file_hash.to_nix32()))]
    pub async fn receive_nar<S>(
        &self,
        cache: &Cache,
        file_hash: Sha256Hash,
        extension: &str,
        content_length: Option<u64>,
        body: S,
    ) -> ServiceResult<()>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let body = LimitedBody::new(body, self.limits().max_nar_size, content_length)?;
        // Bytes already stored (pushed to any cache) need not be stored again, but this
        // cache must still prove it has them, so they are hashed and parsed all the same.
        let already_stored = self.db().nar_by_file_hash(&file_hash).await?;
        // Bytes this cache holds already add nothing to its quota.
        if cache.gc.hard_quota().is_some() && self.db().uploaded_nar(cache.id, &file_hash).await?.is_none() {
            self.check_hard_quota(cache, content_length).await?;
        }
        // Begun at the first chunk, once the bytes have told the compression (and so the key).
        let mut upload: Option<(Box<dyn Upload>, ObjectKeys)> = None;
        let store = already_stored.is_none();
        let mut verified = match self.stream_and_verify(body, file_hash, extension, store, &mut upload).await {
            Ok(verified) => verified,
            Err(error) => {
                // Explicitly, not only on drop: a rejected upload must leave nothing behind.
                if let Some((upload, _)) = upload {
                    if let Err(error) = upload.abort().await {
                        tracing::warn!(%error, "could not discard a rejected upload");
                    }
                }
                return Err(error);
            }
        };
        let now = self.clock().now();
        match already_stored {
            Some(stored) => {
                check_same_content(&stored, &verified)?;
                if !self.db().attach_nar(cache.id, stored.id, now).await? {
                    return Err(ServiceError::Conflict(format!(
                        "{} was being garbage-collected while it was uploaded: upload it again",
                        nar_url(&file_hash, verified.compression)
                    )));
                }
            }
            None => {
                let (upload, keys) = upload.ok_or_else(|| ServiceError::BadRequest("empty body: not a NAR".into()))?;
                if let Err(error) = self.check_hard_quota(cache, Some(verified.file_size)).await {
                    upload.abort().await?;
                    return Err(error);
                }
                self.keep_verified_nar(&mut verified, upload, &keys).await?;
                self.db().record_new_nar(cache.id, &verified.new_nar(keys), now).await?;
            }
        }
        tracing::info!(size = verified.file_size, "received NAR");
        Ok(())
    }

    /// Streams the body into `upload` (begun once the compression is known, if `store`)
    /// while hashing and parsing it; returns the verified NAR only if the body is complete,
    /// matches `expected_hash` and is a valid NAR.
    async fn stream_and_verify<S>(
        &self,
        mut body: LimitedBody<S>,
        expected_hash: Sha256Hash,
        extension: &str,
        store: bool,
        upload: &mut Option<(Box<dyn Upload>, ObjectKeys)>,
    ) -> ServiceResult<VerifiedUpload>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let mut verifier = UploadVerifier::new(extension, self.limits().max_nar_size, self.limits().max_listing_size)?;
        while let Some(chunk) = body.next_chunk().await? {
            verifier.write(&chunk).await?;
            if upload.is_none() && store {
                let keys = ObjectKeys::new(&expected_hash, verifier.compression());
                // Queued for deletion before a byte is written, taken off the queue when
                // the NAR is recorded: an upload cut short by a crash is reclaimed a day
                // later (the pending-upload expiry), not leaked.
                let expiry = super::clock::whole_secs(self.gc_settings().pending_upload_expiry);
                self.db().queue_storage_deletes(&[&keys.nar, &keys.listing], self.clock().now().saturating_add(expiry)).await?;
                *upload = Some((self.storage().begin_upload(&keys.nar).await?, keys));
            }
            if let Some((upload, _)) = upload.as_mut() {
                upload.write(chunk).await?;
            }
        }
        let verified = verifier.finish().await?;
        if verified.file_hash != expected_hash {
            return Err(ServiceError::BadRequest(format!(
                "NAR bytes hash to {} but the URL says {}: nothing stored",
                verified.file_hash.to_nix32(),
                expected_hash.to_nix32()
            )));
        }
        Ok(verified)
    }

    /// Makes a verified upload's object (and its listing, when not too large) visible.
    /// The listing is moved out (it may be 16 MiB: never copied).
    async fn keep_verified_nar(&self, verified: &mut VerifiedUpload, upload: Box<dyn Upload>, keys: &ObjectKeys) -> ServiceResult<()> {
        match verified.summary.listing.take() {
            Some(listing) => self.storage().put_bytes(&keys.listing, Bytes::from(listing)).await?,
            // The NAR is fine; only its `.ls` (which nix never needs to substitute) is too
            // large to keep: that key stays empty and `.ls` answers 404.
            None => tracing::info!(limit = self.limits().max_listing_size, "NAR listing larger than max_listing_size: not kept"),
        }
        upload.commit().await?;
        Ok(())
    }

    /// Commits `<hash>.narinfo`: the path is published only if its NAR was uploaded to this
    /// cache and matches what the narinfo claims, and all its references are published.
    #[tracing::instrument(skip_all, fields(cache = %cache.name, path = %hash))]
    pub async fn commit_narinfo(&self, cache: &Cache, hash: &StorePathHash, text: &str) -> ServiceResult<()> {
        let info = NarInfo::parse(text).map_err(|e| ServiceError::BadRequest(format!("malformed narinfo: {e}")))?;
        if info.store_path.hash() != hash {
            return Err(ServiceError::BadRequest(format!("narinfo is for {} but was uploaded as {hash}.narinfo", info.store_path)));
        }
        let nar = self.uploaded_nar_of(cache, &info).await?;
        self.publish(cache, &info, &nar).await
    }

    /// Publishes a path whose NAR the cache holds, as `info` describes it: only if `info`
    /// matches the NAR, every reference is published, and the signatures follow the
    /// cache's signing mode. What every push ends in, whichever way the bytes came.
    pub(super) async fn publish(&self, cache: &Cache, info: &NarInfo, nar: &Nar) -> ServiceResult<()> {
        let hash = info.store_path.hash();
        check_matches_nar(info, nar)?;
        self.check_references_present(cache, info).await?;
        let signatures = self.signatures_for(cache, info).await?;
        // Replacing a published path changes what every node serves for it; a new path
        // only ends misses, which no node keeps for longer than the staleness bound.
        let replacing = self.db().missing_paths(cache.id, &[hash]).await?.is_empty();
        // Checked again in the transaction that publishes the path: a collection may be
        // deleting them right now.
        let published = self
            .db()
            .publish_path(
                NewPath {
                    cache: cache.id,
                    store_path: &info.store_path,
                    nar: nar.id,
                    references: &info.references,
                    deriver: info.deriver.as_ref(),
                    ca: info.ca.as_deref(),
                    signatures: &signatures,
                },
                self.clock().now(),
            )
            .await?;
        match published {
            Ok(()) => {}
            Err(PublishRefused::MissingReferences(missing)) => {
                return Err(ServiceError::BadRequest(missing_references_message(&info.references, &missing)));
            }
            Err(PublishRefused::NarReclaimed) => {
                return Err(ServiceError::BadRequest(format!("{} is no longer in this cache (expired): upload the NAR again", info.url)));
            }
        }
        self.inner.memo.forget_narinfo(cache.id, hash);
        if replacing {
            self.narinfos_changed(cache.id).await?;
        }
        self.enforce_soft_quota_soon(cache);
        tracing::info!("published path");
        Ok(())
    }

    /// The NAR a narinfo's URL names, if it was uploaded to this cache.
    async fn uploaded_nar_of(&self, cache: &Cache, info: &NarInfo) -> ServiceResult<Nar> {
        let bad_url = |reason: String| ServiceError::BadRequest(format!("bad narinfo URL '{}': {reason}", info.url));
        let file_name = info.url.strip_prefix("nar/").ok_or_else(|| bad_url("it must point into nar/".into()))?;
        let (file_hash, extension) = parse_nar_file_name(file_name).map_err(|e| bad_url(e.to_string()))?;
        let nar = self
            .db()
            .uploaded_nar(cache.id, &file_hash)
            .await?
            .ok_or_else(|| ServiceError::BadRequest(format!("{} was never uploaded to this cache: upload the NAR first", info.url)))?;
        if nar.compression.extension() != extension {
            return Err(ServiceError::BadRequest(format!("narinfo Compression does not match the uploaded NAR {}", info.url)));
        }
        Ok(nar)
    }

    /// Every reference but the path itself must be published in this cache already.
    pub(super) async fn check_references_present(&self, cache: &Cache, info: &NarInfo) -> ServiceResult<()> {
        let others: Vec<&StorePathHash> = info.references.iter().map(StorePath::hash).filter(|h| *h != info.store_path.hash()).collect();
        let missing = self.db().missing_paths(cache.id, &others).await?;
        if missing.is_empty() {
            Ok(())
        } else {
            let missing: Vec<String> = missing.iter().map(|h| h.as_str().to_owned()).collect();
            Err(ServiceError::BadRequest(missing_references_message(&info.references, &missing)))
        }
    }

    /// The signatures a path is published with, per the cache's signing mode.
    async fn signatures_for(&self, cache: &Cache, info: &NarInfo) -> ServiceResult<Vec<Signature>> {
        match cache.signing_mode {
            // Server-held: the cache's keys sign the fingerprint now, once.
            SigningMode::Server => {
                let mut signed = NarInfo { sigs: Vec::new(), ..info.clone() };
                for key in self.secret_keys(cache).await? {
                    signed.sign(&key);
                }
                Ok(signed.sigs)
            }
            // Client-held: only the owner's own, verified signatures are kept and served.
            SigningMode::Client => self.verified_client_signatures(cache, info).await,
        }
    }

    /// Stores a build log (`log/<drv>`), replacing an earlier one.
    #[tracing::instrument(skip_all, fields(cache = %cache.name, drv))]
    pub async fn receive_build_log<S>(&self, cache: &Cache, drv: &str, body: S) -> ServiceResult<()>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let drv_path = StorePath::from_base_name(drv)
            .ok()
            .filter(|p| p.name().ends_with(".drv"))
            .ok_or_else(|| ServiceError::BadRequest(format!("'{drv}' is not a derivation's file name")))?;
        let key = format!("log/{}/{}", cache.id, drv_path.base_name());
        let mut body = LimitedBody::new(body, self.limits().max_small_upload, None)?;
        let mut upload = self.storage().begin_upload(&key).await?;
        loop {
            match body.next_chunk().await {
                Ok(Some(chunk)) => upload.write(chunk).await?,
                Ok(None) => break,
                Err(error) => {
                    upload.abort().await?;
                    return Err(error);
                }
            }
        }
        upload.commit().await?;
        self.db().upsert_build_log(cache.id, &drv_path, &key, body.received()).await?;
        Ok(())
    }
}

/// Same file hash, different content: impossible short of a sha256 collision.
fn check_same_content(stored: &Nar, verified: &VerifiedUpload) -> ServiceResult<()> {
    if stored.nar_hash == verified.summary.nar_hash {
        Ok(())
    } else {
        Err(anyhow::anyhow!("stored NAR {} disagrees with its upload", stored.file_hash.to_nix32()).into())
    }
}

/// What a narinfo says of its NAR must be what the server found in it.
fn check_matches_nar(info: &NarInfo, nar: &Nar) -> ServiceResult<()> {
    let mismatch = |field: &str| ServiceError::BadRequest(format!("narinfo {field} does not match the uploaded NAR {}", info.url));
    if info.compression != nar.compression {
        return Err(mismatch("Compression"));
    }
    if info.file_hash.is_some_and(|h| h != nar.file_hash) {
        return Err(mismatch("FileHash"));
    }
    if info.file_size.is_some_and(|s| s != nar.file_size) {
        return Err(mismatch("FileSize"));
    }
    if info.nar_hash != nar.nar_hash {
        return Err(mismatch("NarHash"));
    }
    if info.nar_size != nar.nar_size {
        return Err(mismatch("NarSize"));
    }
    Ok(())
}

/// "references not in this cache", naming at most a few of them (a narinfo may list
/// thousands, and nix prints the whole body to the user).
fn missing_references_message(references: &[StorePath], missing: &[String]) -> String {
    const NAMED: usize = 5;
    let missing: std::collections::HashSet<&str> = missing.iter().map(String::as_str).collect();
    let named: Vec<String> = references.iter().filter(|r| missing.contains(r.hash_part())).take(NAMED).map(StorePath::base_name).collect();
    let more = missing.len().saturating_sub(named.len());
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    format!("references not in this cache (push them first): {}{more}", named.join(" "))
}
