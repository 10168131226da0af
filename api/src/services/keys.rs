//! Signing key rotation for server-held keys: add a key (existing paths are re-signed in
//! the background, so narinfos carry both signatures during the overlap), then retire the
//! old one (its signatures stop being served).

use larder_protocol::signing::SecretKey;

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
        let keys = self.db().signing_keys_of(cache.id).await?;
        let next = keys.iter().filter_map(|k| k.key_name.rsplit('-').next()?.parse::<u32>().ok()).max().unwrap_or(0) + 1;
        let key = SecretKey::generate(&format!("{}-{next}", cache.name)).map_err(anyhow::Error::from)?;
        let sealed = self.inner.master_key.seal(&key)?;
        let public_key = key.public_key().to_nix_string();
        self.db().add_signing_key(cache.id, key.name(), &public_key, &sealed, self.inner.master_key.id()).await?;
        tracing::info!(cache = %cache.name, key = key.name(), "added signing key");
        let row = self.db().signing_keys_of(cache.id).await?.into_iter().find(|k| k.key_name == key.name());
        let services = self.clone();
        tokio::spawn(async move {
            if let Err(error) = services.resign_paths(&cache).await {
                tracing::error!(cache = %cache.name, error = ?error, "re-signing paths failed");
            }
        });
        Ok(row.map(KeyView::from).ok_or_else(|| anyhow::anyhow!("new key vanished"))?)
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
