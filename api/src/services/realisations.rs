//! Realisations of content-addressed derivation outputs (`nix copy --to URL 'DRV^*'` with
//! the experimental `ca-derivations`): accepted only for output paths this cache
//! publishes, signed per the cache's signing mode exactly as narinfos are.

use larder_protocol::realisation::{DrvOutputId, Realisation};
use larder_protocol::signing::Signature;

use super::{ServiceError, ServiceResult, Services};
use crate::db::RealisationRefused;
use crate::domain::{Cache, RealisationId, SigningMode};

/// How many realisations one re-signing step reads at a time.
const RESIGN_PAGE: i64 = 500;

impl Services {
    /// Stores `realisations/<id>.doi` as uploaded to `url_id`.
    #[tracing::instrument(skip_all, fields(cache = %cache.name, id = %url_id))]
    pub async fn put_realisation(&self, cache: &Cache, url_id: &DrvOutputId, text: &str) -> ServiceResult<()> {
        let mut realisation = Realisation::parse(text).map_err(|e| ServiceError::BadRequest(format!("malformed realisation: {e}")))?;
        if realisation.id != *url_id {
            return Err(ServiceError::BadRequest(format!("realisation is for {} but was uploaded as {url_id}.doi", realisation.id)));
        }
        realisation.signatures = self.realisation_signatures(cache, &realisation).await?;
        match self.db().put_realisation(cache.id, &realisation, self.clock().now()).await? {
            Ok(()) => {}
            Err(RealisationRefused::OutPathMissing) => {
                return Err(ServiceError::BadRequest(format!(
                    "output path {} of realisation {} is not in this cache: push the path first",
                    realisation.out_path, realisation.id
                )));
            }
            Err(RealisationRefused::Conflict(existing)) => {
                return Err(ServiceError::Conflict(format!(
                    "{} is already realised as {existing} in this cache, not {} (the build is not reproducible)",
                    realisation.id, realisation.out_path
                )));
            }
        }
        tracing::info!(path = %realisation.out_path, "stored realisation");
        Ok(())
    }

    /// The `.doi` file of a realisation, with the signatures of the cache's active keys.
    #[tracing::instrument(level = "debug", skip_all, fields(cache = %cache.name, id = %id))]
    pub async fn realisation(&self, cache: &Cache, id: &DrvOutputId) -> ServiceResult<Option<String>> {
        let Some((_, mut realisation)) = self.db().realisation(cache.id, id).await? else {
            return Ok(None);
        };
        // Only active keys' signatures are served: retiring a key withdraws them.
        let active = self.active_key_names(cache).await?;
        let active: Vec<&str> = active.iter().map(String::as_str).collect();
        realisation.retain_signatures_by(&active);
        Ok(Some(realisation.render()))
    }

    /// The signatures a realisation is stored with, as for a narinfo: server-held keys sign
    /// it now; on a client-held cache only the pushed signatures that verify are kept, and
    /// at least one is required.
    async fn realisation_signatures(&self, cache: &Cache, realisation: &Realisation) -> ServiceResult<Vec<Signature>> {
        match cache.signing_mode {
            SigningMode::Server => {
                let mut signed = Realisation { signatures: Vec::new(), ..realisation.clone() };
                for key in self.secret_keys(cache).await? {
                    signed.sign(&key);
                }
                Ok(signed.signatures)
            }
            SigningMode::Client => {
                let keys = self.client_public_keys(cache).await?;
                let valid = realisation.signatures_verified_by(&keys);
                if valid.is_empty() {
                    let names: Vec<&str> = keys.iter().map(|k| k.name()).collect();
                    return Err(ServiceError::BadRequest(format!(
                        "realisation {} carries no valid signature by this cache's keys ({}): build with secret-key-files set to your key",
                        realisation.id,
                        names.join(", ")
                    )));
                }
                Ok(valid)
            }
        }
    }

    /// Adds the signatures of every active key that a realisation lacks (after a key was
    /// added), for all of a cache's realisations; returns how many changed.
    pub(super) async fn resign_realisations(&self, cache: &Cache) -> ServiceResult<u64> {
        let keys = self.secret_keys(cache).await?;
        let mut after: Option<RealisationId> = None;
        let mut resigned = 0u64;
        loop {
            let page = self.db().realisations_page(cache.id, after, RESIGN_PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            for (id, mut realisation) in page {
                let before = realisation.signatures.len();
                let missing: Vec<_> =
                    keys.iter().filter(|key| !realisation.signatures.iter().any(|s| s.key_name() == key.name())).collect();
                for key in missing {
                    realisation.sign(key);
                }
                if realisation.signatures.len() != before {
                    self.db().set_realisation_signatures(id, &realisation.signatures).await?;
                    resigned += 1;
                }
            }
        }
        Ok(resigned)
    }
}
