//! Pushes in parts: an upload session holds one path's NAR while it arrives in numbered
//! parts (any order, each re-sendable, none larger than a proxy's body limit need be), and
//! its completion verifies the whole, stores it in the cache's compression and publishes
//! the path under the rules every push follows ([`Services::publish`]).
//!
//! Parts live in the storage's own multipart mechanism (S3 multipart parts, or files under
//! the storage directory), never in memory; completion assembles them into one object,
//! reads it back once to check NarHash and NarSize and parse the NAR, and keeps it as is
//! when it already is in the cache's compression.

use std::collections::HashSet;
use std::io;
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use larder_protocol::compression::{nar_url, Compression};
use larder_protocol::hash::{Sha256Hash, Sha256Hasher};
use larder_protocol::narinfo::{NarInfo, MAX_REFERENCES, MAX_SIGNATURES};
use larder_protocol::signing::Signature;
use larder_protocol::store_path::StorePath;
use tokio_util::io::{ReaderStream, StreamReader};

use super::limited_body::LimitedBody;
use super::nar_verifier::{UploadVerifier, VerifiedUpload};
use super::{Principal, ServiceError, ServiceResult, Services};
use crate::domain::{Cache, CacheName, Nar, NarEncoding, NewNar, Permission, SigningMode, UploadPart, UploadSession};
use crate::storage::StoredPart;

/// Smallest part size a session may ask for: S3 refuses smaller parts (but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Most parts one session may have (S3's limit).
pub const MAX_PARTS: u32 = 10_000;
/// Expired sessions reclaimed per collection at most (the next one takes the rest).
const EXPIRED_PER_COLLECTION: i64 = 1000;

/// What a pusher asks to send: one path, as `nix path-info` describes it.
pub struct UploadRequest {
    pub store_path: String,
    pub nar_hash: String,
    pub nar_size: u64,
    pub references: Vec<String>,
    pub deriver: Option<String>,
    pub ca: Option<String>,
    pub signatures: Vec<String>,
    pub wire: NarEncoding,
    pub part_size: Option<u64>,
}

pub enum UploadAnswer {
    /// The cache has the path: nothing to send.
    Present(StorePath),
    /// Send the parts the session lacks, then complete it.
    Open(Box<UploadSession>, Vec<UploadPart>),
}

/// A path published by completing its session.
pub struct CompletedUpload {
    pub store_path: StorePath,
    pub url: String,
    pub file_size: u64,
    pub nar_size: u64,
}

/// Sessions being completed on this node: a second completion of one would race the first
/// over the same object.
#[derive(Default)]
pub(super) struct Completing(Mutex<HashSet<String>>);

/// Taken while a session completes; given back when dropped.
struct CompletingGuard<'a> {
    completing: &'a Completing,
    id: String,
}

impl Completing {
    fn claim(&self, id: &str) -> Option<CompletingGuard<'_>> {
        let mut ids = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        ids.insert(id.to_owned()).then(|| CompletingGuard { completing: self, id: id.to_owned() })
    }
}

impl Drop for CompletingGuard<'_> {
    fn drop(&mut self) {
        self.completing.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.id);
    }
}

fn bad(message: String) -> ServiceError {
    ServiceError::BadRequest(message)
}

fn parse_store_path(what: &str, path: &str) -> ServiceResult<StorePath> {
    StorePath::parse(path).map_err(|e| bad(format!("{what} '{path}' is not a store path: {e}")))
}

/// The object a session's parts are assembled into, named by the session (the database
/// maps file hashes to keys; clients never see these).
fn assembly_key(id: &str, wire: NarEncoding) -> String {
    format!("nar/upload-{id}.nar{}", wire.compression().extension())
}

fn listing_key(id: &str) -> String {
    format!("ls/upload-{id}.ls")
}

/// The parts to assemble, if they are 1..=N with every one but the last `part_size` long.
fn assembly_of(session: &UploadSession, parts: &[UploadPart]) -> ServiceResult<Vec<StoredPart>> {
    let Some(last) = parts.last() else {
        return Err(bad(format!("no part of {} was received: send the parts, then complete", session.store_path)));
    };
    let missing: Vec<String> =
        (1..last.number).filter(|n| parts.binary_search_by_key(n, |p| p.number).is_err()).take(20).map(|n| n.to_string()).collect();
    if !missing.is_empty() {
        return Err(bad(format!("parts missing from {}: {} (send them, then complete again)", session.store_path, missing.join(", "))));
    }
    if let Some(short) = parts[..parts.len() - 1].iter().find(|p| p.size != session.part_size) {
        return Err(bad(format!(
            "part {} of {} is {} bytes: every part but the last must be {} (send it again)",
            short.number, session.store_path, short.size, session.part_size
        )));
    }
    Ok(parts.iter().map(|p| StoredPart { number: p.number, tag: p.tag.clone() }).collect())
}

impl Services {
    /// Opens a session to push one path, or answers that the cache has it. A session
    /// already open for the same NAR, sent the same way, is handed back with the parts it
    /// holds, so a pusher that lost track of it carries on where it was.
    #[tracing::instrument(skip_all, fields(cache = %name, path = %request.store_path))]
    pub async fn open_upload(&self, principal: &Principal, name: &CacheName, request: UploadRequest) -> ServiceResult<UploadAnswer> {
        let cache = self.authorize(name, Some(principal), Permission::Write).await?;
        let store_path = parse_store_path("store_path", &request.store_path)?;
        let nar_hash = Sha256Hash::parse_typed(&request.nar_hash).map_err(|e| bad(format!("bad nar_hash: {e}")))?;
        if request.nar_size == 0 {
            return Err(bad("nar_size must be greater than 0".into()));
        }
        if request.nar_size > self.limits().max_nar_size {
            return Err(ServiceError::PayloadTooLarge { limit: self.limits().max_nar_size });
        }
        if request.references.len() > MAX_REFERENCES {
            return Err(bad(format!("more than {MAX_REFERENCES} references")));
        }
        if request.signatures.len() > MAX_SIGNATURES {
            return Err(bad(format!("more than {MAX_SIGNATURES} signatures")));
        }
        let references = request.references.iter().map(|r| parse_store_path("reference", r)).collect::<ServiceResult<Vec<StorePath>>>()?;
        let deriver = request.deriver.as_deref().map(|d| parse_store_path("deriver", d)).transpose()?;
        let signatures = request
            .signatures
            .iter()
            .map(|s| Signature::parse(s).map_err(|e| bad(format!("bad signature '{s}': {e}"))))
            .collect::<ServiceResult<Vec<_>>>()?;
        let part_size = match request.part_size {
            None => self.limits().max_part_size,
            Some(size) if (MIN_PART_SIZE..=self.limits().max_part_size).contains(&size) => size,
            Some(size) => return Err(bad(format!("part_size {size} is outside {MIN_PART_SIZE}..={} bytes", self.limits().max_part_size))),
        };
        if self.db().path(cache.id, store_path.hash()).await?.is_some() {
            return Ok(UploadAnswer::Present(store_path));
        }
        let mut info = NarInfo {
            store_path,
            url: String::new(),
            compression: Compression::None,
            file_hash: None,
            file_size: None,
            nar_hash,
            nar_size: request.nar_size,
            references,
            deriver,
            system: None,
            sigs: signatures,
            ca: request.ca,
        };
        // Refused now rather than after gigabytes: a client-held cache's path must carry
        // its owner's signature. Only those are kept.
        if cache.signing_mode == SigningMode::Client {
            info.sigs = self.verified_client_signatures(&cache, &info).await?;
        }
        let now = self.clock().now();
        for open in self.db().upload_sessions_for(cache.id, &info.store_path, now).await? {
            if open.nar_hash == nar_hash && open.wire == request.wire && open.part_size == part_size {
                let parts = self.db().upload_parts(&open.id).await?;
                return Ok(UploadAnswer::Open(Box::new(open), parts));
            }
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let key = assembly_key(&id, request.wire);
        let expires_at = now.saturating_add(super::clock::whole_secs(self.gc_settings().pending_upload_expiry));
        // Queued for deletion before anything is stored, taken off the queue when the NAR
        // is recorded: whatever an abandoned session leaves is reclaimed when it expires.
        self.db().queue_storage_deletes(&[&key, &listing_key(&id)], expires_at).await?;
        let assembly = self.storage().begin_parts(&key).await?;
        let session = UploadSession {
            id,
            cache: cache.id,
            store_path: info.store_path,
            nar_hash,
            nar_size: info.nar_size,
            references: info.references,
            deriver: info.deriver,
            ca: info.ca,
            signatures: info.sigs,
            wire: request.wire,
            part_size,
            storage_key: key,
            storage_assembly: assembly,
            expires_at,
        };
        if let Err(error) = self.db().create_upload_session(&session, now).await {
            let _ = self.storage().abort_parts(&session.storage_key, &session.storage_assembly).await;
            return Err(error.into());
        }
        tracing::info!(session = %session.id, "opened upload session");
        Ok(UploadAnswer::Open(Box::new(session), Vec::new()))
    }

    /// The cache's open session `id`, for a token that may push to it.
    async fn session_of(&self, principal: &Principal, name: &CacheName, id: &str) -> ServiceResult<(Cache, UploadSession)> {
        let cache = self.authorize(name, Some(principal), Permission::Write).await?;
        let session = self.db().upload_session(cache.id, id, self.clock().now()).await?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "cache '{name}' has no open upload session '{id}' (completed, expired or aborted): open a new one"
            ))
        })?;
        Ok((cache, session))
    }

    /// A session and the parts it holds.
    pub async fn upload_status(
        &self,
        principal: &Principal,
        name: &CacheName,
        id: &str,
    ) -> ServiceResult<(UploadSession, Vec<UploadPart>)> {
        let (_, session) = self.session_of(principal, name, id).await?;
        let parts = self.db().upload_parts(&session.id).await?;
        Ok((session, parts))
    }

    /// Receives part `number` of a session, replacing an earlier copy; a part cut short
    /// leaves the earlier copy (or none) in place.
    #[tracing::instrument(skip_all, fields(cache = %name, session = %id, part = number))]
    pub async fn receive_part<S>(
        &self,
        principal: &Principal,
        name: &CacheName,
        id: &str,
        number: u32,
        content_length: Option<u64>,
        body: S,
    ) -> ServiceResult<UploadPart>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let (_, session) = self.session_of(principal, name, id).await?;
        if number == 0 || number > MAX_PARTS {
            return Err(bad(format!("part number {number} is outside 1..={MAX_PARTS}")));
        }
        let mut body = LimitedBody::new(body, session.part_size, content_length)?;
        let mut part = self.storage().begin_part(&session.storage_key, &session.storage_assembly, number).await?;
        loop {
            match body.next_chunk().await {
                Ok(Some(chunk)) => part.write(chunk).await?,
                Ok(None) => break,
                Err(error) => {
                    part.abort().await?;
                    return Err(error);
                }
            }
        }
        if body.received() == 0 {
            part.abort().await?;
            return Err(bad(format!("part {number} is empty")));
        }
        let tag = part.commit().await?;
        let part = UploadPart { number, size: body.received(), tag };
        self.db().record_upload_part(&session.id, &part).await?;
        Ok(part)
    }

    /// Assembles a session's parts, checks the whole against what the session announced,
    /// stores it in the cache's compression and publishes the path. A refusal names what
    /// to do; one that finds the NAR wrong ends the session, others leave it to retry.
    #[tracing::instrument(skip_all, fields(cache = %name, session = %id))]
    pub async fn complete_upload(&self, principal: &Principal, name: &CacheName, id: &str) -> ServiceResult<CompletedUpload> {
        let (cache, session) = self.session_of(principal, name, id).await?;
        let Some(_guard) = self.inner.completing.claim(&session.id) else {
            return Err(ServiceError::Conflict(format!("upload session '{id}' is being completed already")));
        };
        let parts = self.db().upload_parts(&session.id).await?;
        let assembly = assembly_of(&session, &parts)?;
        // Before any work: the references are the pusher's to send first.
        let probe = NarInfo { sigs: Vec::new(), ..narinfo_of(&session, None) };
        self.check_references_present(&cache, &probe).await?;
        let incoming: u64 = parts.iter().map(|p| p.size).sum();
        if cache.gc.hard_quota().is_some() {
            self.check_hard_quota(&cache, Some(incoming)).await?;
        }
        if let Err(error) = self.storage().complete_parts(&session.storage_key, &session.storage_assembly, &assembly).await {
            // A completion cut short after assembling (a crash, a lost connection to the
            // database) left the object: carry on from it.
            if self.storage().size(&session.storage_key).await?.is_none() {
                return Err(error.into());
            }
            tracing::info!(%error, "parts already assembled: verifying the assembled object");
        }
        let verified = match self.verify_assembled(&session).await {
            Ok(verified) => verified,
            Err(error @ ServiceError::BadRequest(_)) | Err(error @ ServiceError::PayloadTooLarge { .. }) => {
                // The bytes are wrong: nothing of them is kept, and the session is over.
                self.discard_session(&session).await;
                return Err(error);
            }
            Err(other) => return Err(other),
        };
        let nar = self.keep_assembled(&cache, &session, verified).await?;
        let info = narinfo_of(&session, Some(&nar));
        let published = self.publish(&cache, &info, &nar).await;
        if published.is_ok() {
            self.db().delete_upload_session(&session.id).await?;
        }
        if published.is_ok() && nar.storage_key != session.storage_key {
            // The assembled object was transcoded, or the same bytes were stored before: it
            // goes (kept while the session may be completed again).
            self.db().queue_storage_deletes(&[&session.storage_key], self.storage_delete_due()).await?;
        }
        published?;
        tracing::info!(size = nar.file_size, "published path from upload session");
        Ok(CompletedUpload { store_path: info.store_path, url: info.url, file_size: nar.file_size, nar_size: nar.nar_size })
    }

    /// Reads the assembled object once: its file hash and size, and the NAR in it, which
    /// must be what the session announced.
    async fn verify_assembled(&self, session: &UploadSession) -> ServiceResult<Assembled> {
        let object = self
            .storage()
            .get(&session.storage_key, None)
            .await?
            .ok_or_else(|| anyhow::anyhow!("assembled object {} is missing", session.storage_key))?;
        let limits = self.limits();
        let mut verifier = UploadVerifier::new(session.wire.compression().extension(), limits.max_nar_size, limits.max_listing_size)?;
        let mut stream = object.stream;
        while let Some(chunk) = stream.next().await {
            verifier.write(&chunk.map_err(anyhow::Error::from)?).await?;
        }
        let VerifiedUpload { file_hash, file_size, summary, .. } = verifier.finish().await?;
        if summary.nar_hash != session.nar_hash || summary.nar_size != session.nar_size {
            return Err(bad(format!(
                "the parts sent for {} form a NAR of {} bytes hashing to {}, but the upload announced {} bytes hashing to {}: \
                 nothing stored (open a new upload)",
                session.store_path,
                summary.nar_size,
                summary.nar_hash.to_typed_nix32(),
                session.nar_size,
                session.nar_hash.to_typed_nix32()
            )));
        }
        Ok(Assembled { file_hash, file_size, listing: summary.listing })
    }

    /// Stores the verified NAR in the cache's compression (as assembled, when it already
    /// is) and records it, or finds the same bytes stored before; returns the NAR.
    async fn keep_assembled(&self, cache: &Cache, session: &UploadSession, assembled: Assembled) -> ServiceResult<Nar> {
        let (key, file_hash, file_size) = if session.wire == cache.compression {
            (session.storage_key.clone(), assembled.file_hash, assembled.file_size)
        } else {
            let key = format!("nar/upload-{}.nar{}", session.id, cache.compression.compression().extension());
            let (file_hash, file_size) = self.transcode(&session.storage_key, session.wire, &key, cache.compression).await?;
            (key, file_hash, file_size)
        };
        let now = self.clock().now();
        if let Some(stored) = self.db().nar_by_file_hash(&file_hash).await? {
            // (Also what a completion retried after publishing failed finds: its own NAR.)
            if self.db().attach_nar(cache.id, stored.id, now).await? {
                if stored.storage_key != key && key != session.storage_key {
                    self.db().queue_storage_deletes(&[&key], self.storage_delete_due()).await?;
                }
                return Ok(stored);
            }
        }
        let listing_key = listing_key(&session.id);
        match assembled.listing {
            Some(listing) => self.storage().put_bytes(&listing_key, Bytes::from(listing)).await?,
            None => tracing::info!(limit = self.limits().max_listing_size, "NAR listing larger than max_listing_size: not kept"),
        }
        let new = NewNar {
            file_hash,
            file_size,
            compression: cache.compression.compression(),
            nar_hash: session.nar_hash,
            nar_size: session.nar_size,
            storage_key: key.clone(),
            listing_key,
        };
        Ok(self.db().record_new_nar(cache.id, &new, now).await?)
    }

    /// Copies object `from` (encoded `wire`) to `to` encoded `stored`, streaming; returns
    /// the new object's hash and size.
    async fn transcode(&self, from: &str, wire: NarEncoding, to: &str, stored: NarEncoding) -> ServiceResult<(Sha256Hash, u64)> {
        use async_compression::tokio::bufread::{ZstdDecoder, ZstdEncoder};
        use tokio::io::AsyncRead;

        let object = self.storage().get(from, None).await?.ok_or_else(|| anyhow::anyhow!("assembled object {from} is missing"))?;
        let reader = StreamReader::new(object.stream);
        let converted: Box<dyn AsyncRead + Send + Unpin> = match (wire, stored) {
            (NarEncoding::Zstd, NarEncoding::None) => Box::new(ZstdDecoder::new(reader)),
            (NarEncoding::None, NarEncoding::Zstd) => Box::new(ZstdEncoder::new(reader)),
            _ => Box::new(reader),
        };
        let expiry = super::clock::whole_secs(self.gc_settings().pending_upload_expiry);
        self.db().queue_storage_deletes(&[to], self.clock().now().saturating_add(expiry)).await?;
        let mut upload = self.storage().begin_upload(to).await?;
        let mut hasher = Sha256Hasher::default();
        let mut size = 0u64;
        let mut chunks = ReaderStream::with_capacity(converted, 256 * 1024);
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    upload.abort().await?;
                    return Err(anyhow::Error::from(error).context(format!("transcoding {from}")).into());
                }
            };
            hasher.update(&chunk);
            size += chunk.len() as u64;
            upload.write(chunk).await?;
        }
        upload.commit().await?;
        Ok((hasher.finish(), size))
    }

    /// Ends a session, releasing what its parts hold.
    pub async fn abort_upload(&self, principal: &Principal, name: &CacheName, id: &str) -> ServiceResult<()> {
        let (_, session) = self.session_of(principal, name, id).await?;
        let Some(_guard) = self.inner.completing.claim(&session.id) else {
            return Err(ServiceError::Conflict(format!("upload session '{id}' is being completed")));
        };
        self.discard_session(&session).await;
        Ok(())
    }

    /// Forgets a session and lets go of its parts and assembled object (best effort: the
    /// object is queued for deletion since the session opened, and stale parts are swept).
    async fn discard_session(&self, session: &UploadSession) {
        if let Err(error) = self.storage().abort_parts(&session.storage_key, &session.storage_assembly).await {
            tracing::warn!(error = ?error, session = %session.id, "could not discard an upload session's parts");
        }
        let due = self.storage_delete_due();
        if let Err(error) = self.db().queue_storage_deletes(&[&session.storage_key, &listing_key(&session.id)], due).await {
            tracing::warn!(error = ?error, session = %session.id, "could not queue an upload session's object for deletion");
        }
        if let Err(error) = self.db().delete_upload_session(&session.id).await {
            tracing::warn!(error = ?error, session = %session.id, "could not forget an upload session");
        }
    }

    /// Ends the sessions that expired (part of every collection); returns how many.
    pub(super) async fn reclaim_expired_uploads(&self) -> ServiceResult<u64> {
        let expired = self.db().expired_upload_sessions(self.clock().now(), EXPIRED_PER_COLLECTION).await?;
        for session in &expired {
            self.discard_session(session).await;
        }
        Ok(expired.len() as u64)
    }
}

/// The assembled object, verified.
struct Assembled {
    file_hash: Sha256Hash,
    file_size: u64,
    listing: Option<Vec<u8>>,
}

/// The narinfo a session's path is published with (`nar`: once its NAR is stored).
fn narinfo_of(session: &UploadSession, nar: Option<&Nar>) -> NarInfo {
    NarInfo {
        store_path: session.store_path.clone(),
        url: nar.map(|n| nar_url(&n.file_hash, n.compression)).unwrap_or_default(),
        compression: nar.map_or(Compression::None, |n| n.compression),
        file_hash: nar.map(|n| n.file_hash),
        file_size: nar.map(|n| n.file_size),
        nar_hash: session.nar_hash,
        nar_size: session.nar_size,
        references: session.references.clone(),
        deriver: session.deriver.clone(),
        system: None,
        sigs: session.signatures.clone(),
        ca: session.ca.clone(),
    }
}
