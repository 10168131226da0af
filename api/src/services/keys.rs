//! Signing key rotation for server-held keys: add a key (existing paths are re-signed in
//! the background, so narinfos carry both signatures during the overlap), then retire the
//! old one (its signatures stop being served).

use larder_protocol::signing::{PublicKey, SecretKey, Signature};

use super::{Principal, ServiceError, ServiceResult, Services};
use crate::db::{CacheRow, SigningKeyRow};
use crate::domain::Permission;

#[derive(Debug, serde::Serialize)]
pub struct KeyView {
    pub name: String,
    pub public_key: String,
    pub active: bool,
    pub created_at: i64,
}

impl From<SigningKeyRow> for KeyView {
    fn from(row: SigningKeyRow) -> Self {
        let active = row.active != 0;
        let SigningKeyRow { key_name, public_key, created_at, .. } = row;
        Self { name: key_name, public_key, active, created_at }
    }
}

/// How many paths one re-signing step reads at a time.
const RESIGN_PAGE: i64 = 500;

impl Services {
    pub async fn list_keys(&self, principal: Option<&Principal>, cache: &str) -> ServiceResult<Vec<KeyView>> {
        let cache = self.authorize(cache, principal, Permission::Read).await?;
        Ok(self.db().signing_keys_of(cache.id).await?.into_iter().map(KeyView::from).collect())
    }

    /// Adds a new server-held key, named `{cache}-{n}`, and re-signs existing paths with it
    /// in the background.
    pub async fn add_key(&self, principal: &Principal, cache: &str) -> ServiceResult<KeyView> {
        let cache = self.authorize(cache, Some(principal), Permission::Admin).await?;
        if SigningMode::of(&cache) != SigningMode::Server {
            return Err(ServiceError::Conflict("this cache's keys are client-held: register public keys instead".into()));
        }
        let key = self.generate_server_key(&cache).await?;
        tracing::info!(cache = %cache.name, key = key.name(), "added signing key");
        let view = self.key_view(&cache, key.name()).await?;
        self.resign_in_background(cache);
        Ok(view)
    }

    /// Stops serving a key's signatures and signing with it. The last active key stays.
    pub async fn retire_key(&self, principal: &Principal, cache: &str, key_name: &str) -> ServiceResult<()> {
        let cache = self.authorize(cache, Some(principal), Permission::Admin).await?;
        if self.db().retire_signing_key(cache.id, key_name).await? {
            tracing::info!(cache = %cache.name, key = key_name, "retired signing key");
            return Ok(());
        }
        let keys = self.db().signing_keys_of(cache.id).await?;
        match keys.iter().find(|k| k.key_name == key_name) {
            Some(k) if k.active != 0 => Err(ServiceError::Conflict("this is the cache's last active key: add another first".into())),
            Some(_) => Ok(()),
            None => Err(ServiceError::NotFound(format!("this cache has no key named '{key_name}'"))),
        }
    }

    /// Adds the signatures of every active key that a path lacks, for all of a cache's paths.
    async fn resign_paths(&self, cache: &CacheRow) -> ServiceResult<()> {
        let keys = self.signing_keys(cache).await?;
        let mut after = 0;
        let mut resigned = 0u64;
        loop {
            let page = self.db().paths_page(cache.id, after, RESIGN_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.path_id;
            for row in &page {
                let fingerprint = super::substitute::render_narinfo(row)?.fingerprint();
                let mut sigs: Vec<String> = row.sigs.lines().filter(|s| !s.is_empty()).map(str::to_owned).collect();
                let before = sigs.len();
                for key in &keys {
                    if !sigs.iter().any(|s| s.split(':').next() == Some(key.name())) {
                        sigs.push(key.sign(fingerprint.as_bytes()).to_nix_string());
                    }
                }
                if sigs.len() != before {
                    self.db().set_path_sigs(row.path_id, &sigs.join("\n")).await?;
                    resigned += 1;
                }
            }
        }
        tracing::info!(cache = %cache.name, resigned, "re-signed paths");
        Ok(())
    }
}

/// Who holds a cache's secret keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningMode {
    /// Larder holds the keys (encrypted) and signs at commit.
    Server,
    /// The owner signs; Larder knows public keys only and verifies every push.
    Client,
}

impl SigningMode {
    pub fn of(cache: &CacheRow) -> Self {
        if cache.signing_mode == "client" {
            SigningMode::Client
        } else {
            SigningMode::Server
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SigningMode::Server => "server",
            SigningMode::Client => "client",
        }
    }
}

impl Services {
    /// Registers a public key (Nix `name:base64`) of a client-held cache.
    pub async fn register_public_key(&self, principal: &Principal, cache: &str, public_key: &str) -> ServiceResult<KeyView> {
        let cache = self.authorize(cache, Some(principal), Permission::Admin).await?;
        if SigningMode::of(&cache) != SigningMode::Client {
            return Err(ServiceError::Conflict("this cache's keys are server-held: switch it to client-held signing first".into()));
        }
        let key = PublicKey::parse(public_key).map_err(|e| ServiceError::BadRequest(format!("not a Nix public key (name:base64): {e}")))?;
        if !self.db().add_public_key(cache.id, key.name(), &key.to_nix_string()).await? {
            return Err(ServiceError::Conflict(format!("this cache already has a key named '{}'", key.name())));
        }
        self.key_view(&cache, key.name()).await
    }

    /// Imports an existing Nix secret key into a server-held cache (it becomes active;
    /// existing paths are re-signed with it in the background).
    pub async fn import_secret_key(&self, principal: &Principal, cache: &str, secret_key: &str) -> ServiceResult<KeyView> {
        let cache = self.authorize(cache, Some(principal), Permission::Admin).await?;
        if SigningMode::of(&cache) != SigningMode::Server {
            return Err(ServiceError::Conflict("this cache's keys are client-held: Larder does not sign for it".into()));
        }
        let key = SecretKey::parse(secret_key).map_err(|_| ServiceError::BadRequest("not a Nix secret key (name:base64 of 64 bytes)".into()))?;
        if self.db().signing_keys_of(cache.id).await?.iter().any(|k| k.key_name == key.name()) {
            return Err(ServiceError::Conflict(format!("this cache already has a key named '{}'", key.name())));
        }
        self.store_server_key(&cache, &key).await?;
        tracing::info!(cache = %cache.name, key = key.name(), "imported signing key");
        self.resign_in_background(cache.clone());
        self.key_view(&cache, key.name()).await
    }

    /// Switches who holds the keys. Server → client: the server keys are retired, and paths
    /// signed by them can no longer be vouched for, so they must go (`drop_paths`) — the
    /// owner re-pushes them signed. Client → server: a new server key signs every path
    /// (in the background) and the client keys are retired.
    pub async fn set_signing_mode(&self, principal: &Principal, cache: &str, mode: SigningMode, drop_paths: bool) -> ServiceResult<()> {
        let cache = self.authorize(cache, Some(principal), Permission::Admin).await?;
        if SigningMode::of(&cache) == mode {
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
                self.db().set_signing_mode(cache.id, mode.as_str()).await?;
            }
            SigningMode::Server => {
                self.db().set_signing_mode(cache.id, mode.as_str()).await?;
                let key = self.generate_server_key(&cache).await?;
                self.db().retire_keys_except(cache.id, Some(key.name())).await?;
                self.resign_in_background(cache.clone());
            }
        }
        tracing::info!(cache = %cache.name, mode = mode.as_str(), "switched signing mode");
        Ok(())
    }

    /// Generates the cache's next server-held key, `{cache}-{n}` with `n` one past the
    /// highest number used so far, and stores it active.
    async fn generate_server_key(&self, cache: &CacheRow) -> ServiceResult<SecretKey> {
        let keys = self.db().signing_keys_of(cache.id).await?;
        let next = keys.iter().filter_map(|k| k.key_name.rsplit('-').next()?.parse::<u32>().ok()).max().unwrap_or(0) + 1;
        let key = SecretKey::generate(&format!("{}-{next}", cache.name)).map_err(anyhow::Error::from)?;
        self.store_server_key(cache, &key).await?;
        Ok(key)
    }

    /// Seals a secret key under the master key and stores it as an active key of the cache.
    async fn store_server_key(&self, cache: &CacheRow, key: &SecretKey) -> ServiceResult<()> {
        let sealed = self.inner.master_key.seal(key)?;
        let public_key = key.public_key().to_nix_string();
        self.db().add_signing_key(cache.id, key.name(), &public_key, &sealed, self.inner.master_key.id()).await?;
        Ok(())
    }

    async fn key_view(&self, cache: &CacheRow, name: &str) -> ServiceResult<KeyView> {
        let row = self.db().signing_keys_of(cache.id).await?.into_iter().find(|k| k.key_name == name);
        Ok(row.map(KeyView::from).ok_or_else(|| anyhow::anyhow!("key {name} vanished"))?)
    }

    fn resign_in_background(&self, cache: CacheRow) {
        let services = self.clone();
        tokio::spawn(async move {
            if let Err(error) = services.resign_paths(&cache).await {
                tracing::error!(cache = %cache.name, error = ?error, "re-signing paths failed");
            }
        });
    }

    /// For a client-held cache: the pushed signatures that verify under its active keys.
    /// At least one is required, else the push is refused naming the expected keys.
    pub(super) async fn verified_client_signatures(&self, cache: &CacheRow, path: &str, fingerprint: &str, sigs: &[String]) -> ServiceResult<Vec<String>> {
        let keys: Vec<PublicKey> = self
            .db()
            .active_signing_keys(cache.id)
            .await?
            .iter()
            .filter(|k| k.encrypted_secret.is_none())
            .filter_map(|k| PublicKey::parse(&k.public_key).ok())
            .collect();
        if keys.is_empty() {
            return Err(ServiceError::BadRequest("this cache's keys are client-held but none is registered: register a public key first".into()));
        }
        let valid: Vec<String> = sigs
            .iter()
            .filter(|s| Signature::parse(s).is_ok_and(|sig| keys.iter().any(|k| k.verify(fingerprint.as_bytes(), &sig))))
            .cloned()
            .collect();
        if valid.is_empty() {
            let names: Vec<&str> = keys.iter().map(PublicKey::name).collect();
            return Err(ServiceError::BadRequest(format!(
                "{path} carries no valid signature by this cache's keys ({}): push with nix copy --to '…?secret-key=<your key file>'",
                names.join(", ")
            )));
        }
        Ok(valid)
    }
}
