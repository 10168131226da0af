//! Use-cases. No HTTP types here: routes translate requests into these calls and
//! `ServiceError`s into responses.

mod access;
mod accounts;
mod browse;
mod caches;
mod clock;
mod error;
mod gc;
mod keys;
mod limited_body;
mod memo;
mod nar_verifier;
mod realisations;
mod substitute;
mod tokens;
mod upload;
mod upload_sessions;
mod upload_slots;

use std::sync::Arc;

use crate::auth::TokenKeys;
use crate::db::Database;
use crate::domain::CacheId;
use crate::signing::MasterKey;
use crate::storage::Storage;

pub use access::Principal;
pub use accounts::LoginLimiter;
pub use browse::{PathDetails, PathPage};
pub use caches::{CacheChanges, CreatedCache, NewOwnedCache};
pub use clock::Clock;
pub use error::{ServiceError, ServiceResult, NO_ACCESS};
pub use gc::{CacheCollection, CollectReason, Collectable, Collection, GcSettings};
pub use limited_body::LimitedBody;
pub use substitute::NarDownload;
pub use tokens::{CreatedToken, TokenRequest, TokenTarget, MAX_TOKEN_LIFETIME, SESSION_LIFETIME};
pub use upload_sessions::{CompletedUpload, UploadAnswer, UploadRequest, MIN_PART_SIZE};
pub use upload_slots::UploadSlot;

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_nar_size: u64,
    pub max_small_upload: u64,
    /// Largest `.ls` listing kept for a NAR; a larger one is not stored.
    pub max_listing_size: usize,
    /// Uploads one token may have in flight at once.
    pub max_uploads_per_token: u32,
    /// Largest part of an upload session (and its default part size).
    pub max_part_size: u64,
    /// How long this node may serve from memory what another node changed (token
    /// revocation, cache settings, signing keys); zero remembers nothing.
    pub staleness: std::time::Duration,
    pub default_priority: i64,
}

/// Everything the use-cases need, shared by all workers.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    storage: Arc<dyn Storage>,
    master_key: MasterKey,
    token_keys: TokenKeys,
    limits: Limits,
    login_limiter: LoginLimiter,
    upload_slots: upload_slots::UploadSlots,
    completing: upload_sessions::Completing,
    memo: memo::Memo,
    clock: Clock,
    gc: GcSettings,
    /// Set by [`Services::close`]: nothing is written after it.
    closed: std::sync::atomic::AtomicBool,
}

/// How often recorded token and path uses are written to the database.
const USE_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

impl Services {
    /// Connects to the database (migrating it) and wires the use-cases to it.
    pub async fn connect(
        database_url: &str,
        storage: Arc<dyn Storage>,
        master_key: MasterKey,
        token_keys: TokenKeys,
        limits: Limits,
        gc: GcSettings,
    ) -> anyhow::Result<Self> {
        let db = Database::connect(database_url).await?;
        db.migrate().await?;
        let memo = memo::Memo::new(limits.staleness, gc.release_grace);
        let login_limiter = LoginLimiter::default();
        let inner = Inner {
            db,
            storage,
            master_key,
            token_keys,
            limits,
            login_limiter,
            upload_slots: Default::default(),
            completing: Default::default(),
            memo,
            clock: Clock::default(),
            gc,
            closed: Default::default(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// What a serving node does in the background for as long as the services live:
    /// writing recorded uses, scheduled collections and the storage-delete queue. (Not for
    /// the one-shot commands, which do their own work and exit.)
    pub fn start_background_tasks(&self) {
        self.flush_uses_periodically();
        self.poll_narinfo_generations();
        self.collect_periodically();
    }

    /// What a cache's narinfos say changed, other than by a new path (see `cache_changes`):
    /// a path deleted or replaced, or its keys (which also withdraws the remembered active
    /// key names). Raises their generation, here at once and on every other node at its
    /// next poll.
    pub(super) async fn narinfos_changed(&self, cache: CacheId) -> ServiceResult<()> {
        let generation = self.db().raise_narinfo_generation(cache).await?;
        self.inner.memo.narinfo_generation_rose(cache, generation);
        Ok(())
    }

    /// Every [`memo::GENERATION_POLL`] (or half the staleness bound, if shorter), learns
    /// which caches' narinfo generations rose lately (on any node). Rows are read back over
    /// a window far longer than the poll, so that a change committed late is still seen;
    /// when polling failed for half that window, every rendered narinfo is forgotten.
    fn poll_narinfo_generations(&self) {
        const WINDOW_SECS: i64 = 60;
        let staleness = self.limits().staleness;
        if staleness.is_zero() {
            return; // nothing is remembered
        }
        let every = (staleness / 2).clamp(std::time::Duration::from_millis(50), memo::GENERATION_POLL);
        let services = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_seen = std::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(inner) = services.upgrade() else { return };
                if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                match inner.db.recent_narinfo_generations(WINDOW_SECS).await {
                    Ok(generations) => {
                        if last_seen.elapsed() > std::time::Duration::from_secs(WINDOW_SECS as u64 / 2) {
                            inner.memo.forget_narinfos();
                        }
                        for (cache, generation) in generations {
                            inner.memo.narinfo_generation_rose(cache, generation);
                        }
                        last_seen = std::time::Instant::now();
                    }
                    Err(error) => tracing::warn!(error = ?error, "could not poll narinfo generations"),
                }
            }
        });
    }

    /// Writes recorded token and path uses every [`USE_FLUSH`] (sooner when many path uses
    /// pile up), for as long as the services live: a crash loses at most that much of the
    /// last-use times, never data.
    fn flush_uses_periodically(&self) {
        let services = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(USE_FLUSH);
            tick.tick().await;
            loop {
                let Some(inner) = services.upgrade() else { return };
                // Held while waiting, at most one tick: `close` ends the loop.
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = inner.memo.flush_soon.notified() => {}
                }
                if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                let services = Services { inner };
                services.flush_token_uses().await;
                services.flush_path_uses().await;
            }
        });
    }

    async fn flush_token_uses(&self) {
        let uses = self.inner.memo.take_uses();
        if uses.is_empty() {
            return;
        }
        if let Err(error) = self.db().record_token_uses(&uses).await {
            tracing::warn!(error = ?error, tokens = uses.len(), "could not record token uses");
        }
    }

    /// Only the services speak to the database (private: routes and the admin commands
    /// go through service methods).
    fn db(&self) -> &Database {
        &self.inner.db
    }

    /// Writes what is pending and closes the database connections (at shutdown).
    pub async fn close(&self) {
        if self.inner.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        self.flush_token_uses().await;
        self.flush_path_uses().await;
        self.db().close().await;
    }

    pub fn storage(&self) -> &dyn Storage {
        self.inner.storage.as_ref()
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Database and storage both answer (for /readyz).
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.db().health_check().await?;
        self.storage().health_check().await
    }
}
