//! A cache's signing keys: server-held ones (generated or imported, sealed under the master
//! key) and client-held ones (public only). Rotation adds a key (existing paths are
//! re-signed in the background, so narinfos carry both signatures during the overlap),
//! then retires the old one (its signatures stop being served).

use larder_protocol::narinfo::NarInfo;
use larder_protocol::signing::{PublicKey, SecretKey, Signature};

use super::{Principal, ServiceError, ServiceResult, Services};
use crate::domain::{Cache, CacheName, PathId, Permission, SealedSecret, SigningKey, SigningMode};

/// How many paths one re-signing step reads at a time.
const RESIGN_PAGE: i64 = 500;

impl Services {
    #[tracing::instrument(skip_all, fields(cache = %cache))]
    pub async fn list_keys(&self, principal: Option<&Principal>, cache: &CacheName) -> ServiceResult<Vec<SigningKey>> {
        let cache = self.authorize(cache, principal, Permission::Read).await?;
        Ok(self.db().signing_keys_of(cache.id).await?)
    }

    /// Adds a new server-held key, named `{cache}-{n}`, and re-signs existing paths with it
    /// in the background.
    #[tracing::instrument(skip_all, fields(cache = %cache))]
    pub async fn add_key(&self, principal: &Principal, cache: &CacheName) -> ServiceResult<SigningKey> {
        let cache = self.authorize(cache, Some(principal), Permission::Admin).await?;
        if cache.signing_mode != SigningMode::Server {
            return Err(ServiceError::Conflict("this cache's keys are client-held: register public keys instead".into()));
        }
        let key = self.generate_server_key(&cache).await?;
        tracing::info!(key = key.name(), "added signing key");
        let added = self.key_named(&cache, key.name()).await?;
        self.resign_in_background(cache);
        Ok(added)
    }

    /// Stops serving a key's signatures and signing with it. The last active key stays.
    #[tracing::instrument(skip_all, fields(cache = %cache))]
    pub async fn retire_key(&self, principal: &Principal, cache: &CacheName, key_name: &str) -> ServiceResult<()> {
        let cache = self.authorize(cache, Some(principal), Permission::Admin).await?;
        let retired = self.db().retire_signing_key(cache.id, key_name).await?;
        self.narinfos_changed(cache.id).await?;
        if retired {
            tracing::info!(key = key_name, "retired signing key");
            return Ok(());
        }
        let keys = self.db().signing_keys_of(cache.id).await?;
        match keys.iter().find(|k| k.name() == key_name) {
            Some(k) if k.active => Err(ServiceError::Conflict("this is the cache's last active key: add another first".into())),
            Some(_) => Ok(()),
            None => Err(ServiceError::NotFound(format!("this cache has no key named '{key_name}'"))),
        }
    }

    /// Registers a public key (Nix `name:base64`) of a client-held cache.
    #[tracing::instrument(skip_all, fields(cache = %cache))]
    pub async fn register_public_key(&self, principal: &Principal, cache: &CacheName, public_key: &str) -> ServiceResult<SigningKey> {
        let cache = self.authorize(cache, Some(principal), Permission::Admin).await?;
        if cache.signing_mode != SigningMode::Client {
            return Err(ServiceError::Conflict("this cache's keys are server-held: switch it to client-held signing first".into()));
        }
        let key = PublicKey::parse(public_key).map_err(|e| ServiceError::BadRequest(format!("not a Nix public key (name:base64): {e}")))?;
        let added = self.db().add_public_key(cache.id, &key).await?;
        self.narinfos_changed(cache.id).await?;
        if !added {
            return Err(ServiceError::Conflict(format!("this cache already has a key named '{}'", key.name())));
        }
        self.key_named(&cache, key.name()).await
    }

    /// Imports an existing Nix secret key into a server-held cache (it becomes active;
    /// existing paths are re-signed with it in the background).
    #[tracing::instrument(skip_all, fields(cache = %cache))]
    pub async fn import_secret_key(&self, principal: &Principal, cache: &CacheName, secret_key: &str) -> ServiceResult<SigningKey> {
        let cache = self.authorize(cache, Some(principal), Permission::Admin).await?;
        if cache.signing_mode != SigningMode::Server {
            return Err(ServiceError::Conflict("this cache's keys are client-held: Larder does not sign for it".into()));
        }
        let key =
            SecretKey::parse(secret_key).map_err(|_| ServiceError::BadRequest("not a Nix secret key (name:base64 of 64 bytes)".into()))?;
        if self.db().signing_keys_of(cache.id).await?.iter().any(|k| k.name() == key.name()) {
            return Err(ServiceError::Conflict(format!("this cache already has a key named '{}'", key.name())));
        }
        self.store_server_key(&cache, &key).await?;
        tracing::info!(key = key.name(), "imported signing key");
        let imported = self.key_named(&cache, key.name()).await?;
        self.resign_in_background(cache);
        Ok(imported)
    }

    /// Switches who holds the keys. Server → client: the server keys are retired, and paths
    /// signed by them can no longer be vouched for, so they must go (`drop_paths`) — the
    /// owner re-pushes them signed. Client → server: a new server key signs every path
    /// (in the background) and the client keys are retired.
    #[tracing::instrument(skip_all, fields(cache = %cache))]
    pub async fn set_signing_mode(
        &self,
        principal: &Principal,
        cache: &CacheName,
        mode: SigningMode,
        drop_paths: bool,
    ) -> ServiceResult<()> {
        let cache = self.authorize(cache, Some(principal), Permission::Admin).await?;
        if cache.signing_mode == mode {
            return Ok(());
        }
        match mode {
            SigningMode::Client => {
                let paths = self.db().count_paths(cache.id).await?;
                if paths > 0 && !drop_paths {
                    return Err(ServiceError::Conflict(format!(
                        "the cache has {paths} paths signed by its server-held keys: pass drop_paths to withdraw them, then re-push them signed with your key"
                    )));
                }
                self.db().delete_paths(cache.id).await?;
                self.db().retire_keys_except(cache.id, None).await?;
                self.db().set_signing_mode(cache.id, mode).await?;
                self.inner.memo.forget_cache(&cache.name);
                self.narinfos_changed(cache.id).await?;
            }
            SigningMode::Server => {
                self.db().set_signing_mode(cache.id, mode).await?;
                self.inner.memo.forget_cache(&cache.name);
                let key = self.generate_server_key(&cache).await?;
                self.db().retire_keys_except(cache.id, Some(key.name())).await?;
                self.narinfos_changed(cache.id).await?;
                self.resign_in_background(cache);
            }
        }
        tracing::info!(mode = mode.as_str(), "switched signing mode");
        Ok(())
    }

    /// Generates the cache's next server-held key, `{cache}-{n}` with `n` one past the
    /// highest number used so far, and stores it active.
    async fn generate_server_key(&self, cache: &Cache) -> ServiceResult<SecretKey> {
        let keys = self.db().signing_keys_of(cache.id).await?;
        let next = keys.iter().filter_map(|k| k.name().rsplit('-').next()?.parse::<u32>().ok()).max().unwrap_or(0) + 1;
        let key = SecretKey::generate(&format!("{}-{next}", cache.name)).map_err(anyhow::Error::from)?;
        self.store_server_key(cache, &key).await?;
        Ok(key)
    }

    /// Seals a secret key under the master key and stores it as an active key of the cache.
    async fn store_server_key(&self, cache: &Cache, key: &SecretKey) -> ServiceResult<()> {
        let secret = self.seal(key)?;
        self.db().add_signing_key(cache.id, &key.public_key(), &secret).await?;
        self.narinfos_changed(cache.id).await?;
        Ok(())
    }

    pub(super) fn seal(&self, key: &SecretKey) -> ServiceResult<SealedSecret> {
        let ciphertext = self.inner.master_key.seal(key)?;
        Ok(SealedSecret { ciphertext, master_key_id: Some(self.inner.master_key.id().to_owned()) })
    }

    async fn key_named(&self, cache: &Cache, name: &str) -> ServiceResult<SigningKey> {
        let key = self.db().signing_keys_of(cache.id).await?.into_iter().find(|k| k.name() == name);
        Ok(key.ok_or_else(|| anyhow::anyhow!("key {name} vanished"))?)
    }

    /// The secret keys that sign this cache's new paths (its active server-held keys).
    pub(super) async fn secret_keys(&self, cache: &Cache) -> ServiceResult<Vec<SecretKey>> {
        let mut keys = Vec::new();
        for stored in self.db().active_signing_keys(cache.id).await? {
            let Some(sealed) = &stored.secret else { continue };
            let key = self.inner.master_key.open(stored.name(), &sealed.ciphertext, sealed.master_key_id.as_deref())?;
            // A stored public key that disagrees with its secret would make nix reject us.
            if key.public_key() != stored.public_key {
                return Err(anyhow::anyhow!("signing key {} does not match its public key", stored.name()).into());
            }
            keys.push(key);
        }
        Ok(keys)
    }

    fn resign_in_background(&self, cache: Cache) {
        let services = self.clone();
        tokio::spawn(async move {
            if let Err(error) = services.resign_paths(&cache).await {
                tracing::error!(cache = %cache.name, error = ?error, "re-signing paths failed");
            }
        });
    }

    /// Adds the signatures of every active key that a path (or realisation) lacks, for all
    /// of a cache's paths and realisations.
    #[tracing::instrument(skip_all, fields(cache = %cache.name))]
    async fn resign_paths(&self, cache: &Cache) -> ServiceResult<()> {
        let keys = self.secret_keys(cache).await?;
        let mut after: Option<PathId> = None;
        let mut resigned = 0u64;
        loop {
            let page = self.db().paths_page(cache.id, after, RESIGN_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for path in page {
                let id = path.id;
                let mut info = super::substitute::narinfo_of(path);
                let before = info.sigs.len();
                let missing: Vec<&SecretKey> = keys.iter().filter(|key| !info.sigs.iter().any(|s| s.key_name() == key.name())).collect();
                for key in missing {
                    info.sign(key);
                }
                if info.sigs.len() != before {
                    self.db().set_path_signatures(id, &info.sigs).await?;
                    resigned += 1;
                }
            }
        }
        self.narinfos_changed(cache.id).await?;
        let realisations = self.resign_realisations(cache).await?;
        tracing::info!(resigned, realisations, "re-signed paths and realisations");
        Ok(())
    }

    /// For a client-held cache: the pushed signatures that verify under its active keys.
    /// At least one is required, else the push is refused naming the expected keys.
    pub(super) async fn verified_client_signatures(&self, cache: &Cache, info: &NarInfo) -> ServiceResult<Vec<Signature>> {
        let keys = self.client_public_keys(cache).await?;
        let fingerprint = info.fingerprint();
        let valid: Vec<Signature> =
            info.sigs.iter().filter(|sig| keys.iter().any(|k| k.verify(fingerprint.as_bytes(), sig))).cloned().collect();
        if valid.is_empty() {
            let names: Vec<&str> = keys.iter().map(PublicKey::name).collect();
            return Err(ServiceError::BadRequest(format!(
                "{} carries no valid signature by this cache's keys ({}): push with nix copy --to '…?secret-key=<your key file>'",
                info.store_path,
                names.join(", ")
            )));
        }
        Ok(valid)
    }

    /// The active public keys of a client-held cache; refused when none is registered.
    pub(super) async fn client_public_keys(&self, cache: &Cache) -> ServiceResult<Vec<PublicKey>> {
        let keys: Vec<PublicKey> =
            self.db().active_signing_keys(cache.id).await?.into_iter().filter(|k| k.secret.is_none()).map(|k| k.public_key).collect();
        if keys.is_empty() {
            return Err(ServiceError::BadRequest(
                "this cache's keys are client-held but none is registered: register a public key first".into(),
            ));
        }
        Ok(keys)
    }
}
