//! Garbage collection: retention by last use, quotas, pins, per-path deletes, and the
//! reclamation of storage.
//!
//! **The closure rule.** A path is only ever deleted together with every path of its cache
//! that refers to it, so no served path loses a reference; pinned paths keep their whole
//! closure. A path counts as used as recently as the most recently used path that refers
//! to it, directly or not (its *effective* last use): collecting in order of effective
//! last use, referrers before the paths they refer to, every prefix of that order is
//! closed under referrers. Retention takes the prefix older than the cutoff; a quota takes
//! as much more as it needs.
//!
//! **Reclamation.** Database first: paths are deleted and their NARs *released* by the
//! cache (still sent for a grace period, to clients that read the narinfo just before); a
//! later sweep lets released and abandoned uploads go, deletes NAR rows no cache holds and
//! queues their objects, in one transaction each; the queue deletes objects, idempotently,
//! retrying with backoff. A collection killed at any point leaves only steps the next one
//! repeats.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use larder_protocol::store_path::{StorePath, StorePathHash};

use super::clock::whole_secs;
use super::{Principal, ServiceError, ServiceResult, Services};
use crate::db::{BatchOutcome, CacheGraph, CacheUsage, CollectorLock};
use crate::domain::{Cache, CacheName, GcPolicy, PathId, Permission, PinRevision};

/// How garbage collection runs on this server.
#[derive(Clone, Debug)]
pub struct GcSettings {
    /// Between scheduled collections; zero schedules none (`larder-server gc` still runs one).
    pub interval: Duration,
    /// An upload never published for this long is reclaimed.
    pub pending_upload_expiry: Duration,
    /// A deleted path's NAR is still sent this long (plus `staleness_secs`) before the
    /// cache lets it go.
    pub release_grace: Duration,
    /// Policy of new caches.
    pub default_policy: GcPolicy,
    /// Held (locked) by the one collector at a time, on SQLite; Postgres uses an advisory lock.
    pub lock_file: PathBuf,
}

/// Paths deleted per transaction.
const BATCH: usize = 500;
/// Paths a preview lists.
const PREVIEW_PATHS: usize = 1000;
/// Storage deletes done per pass of the queue, and at once.
const STORAGE_DELETES_PER_PASS: i64 = 500;
const STORAGE_DELETES_AT_ONCE: usize = 16;
/// Longest wait between retries of a failing storage delete.
const MAX_RETRY_SECS: i64 = 3600;
/// Served-bytes buckets older than this are dropped (usage looks back 30 days).
const SERVED_BYTES_KEPT_HOURS: i64 = 31 * 24;

/// Why a collection removes a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectReason {
    Retention,
    Quota,
}

/// A path a collection removes (or would).
#[derive(Clone, Debug)]
pub struct Collectable {
    pub store_path: String,
    pub file_size: u64,
    pub nar_size: u64,
    /// Its own last use (its effective one may be later, through a referrer).
    pub last_used_at: i64,
    pub reason: CollectReason,
}

/// What a collection of one cache removed (or, previewed, would remove).
#[derive(Clone, Debug, Default)]
pub struct CacheCollection {
    pub path_count: u64,
    pub bytes_freed: u64,
    /// The first [`PREVIEW_PATHS`] of them.
    pub paths: Vec<Collectable>,
    /// Batches left alone because a path pushed or used meanwhile refers into them.
    pub batches_skipped: u64,
}

/// What one collection over the whole server did.
#[derive(Clone, Debug, Default)]
pub struct Collection {
    pub caches: Vec<(CacheName, CacheCollection)>,
    pub nars_let_go: u64,
    pub nars_reclaimed: u64,
    pub objects_deleted: u64,
    pub objects_failed: u64,
    pub stale_uploads_removed: u64,
    /// Upload sessions that expired unfinished, and were ended.
    pub upload_sessions_expired: u64,
}

/// The order a cache's paths are collected in, and what taking a prefix of it frees.
struct Plan {
    /// Indices into the graph's paths, collectable first, referrers before what they refer to.
    take: Vec<(usize, CollectReason)>,
    bytes_freed: u64,
}

/// Plans a collection: effective last uses (pinned closures: never), then the prefix
/// that retention and the quota take. Pure, so that the rule is tested on its own.
fn plan(graph: &CacheGraph, pinned: &HashSet<&str>, policy: GcPolicy, stored_bytes: u64, now: i64) -> Plan {
    let count = graph.paths.len();
    let index: HashMap<&str, usize> = graph.paths.iter().enumerate().map(|(i, p)| (p.hash_part.as_str(), i)).collect();
    let by_id: HashMap<PathId, usize> = graph.paths.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    let mut references: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (from, to) in &graph.edges {
        if let (Some(&from), Some(&to)) = (by_id.get(from), index.get(to.as_str())) {
            references[from].push(to);
        }
    }
    // Roots in order of last use, pinned ones first (for ever): the first root to reach a
    // path gives its effective last use. The depth-first post-order, reversed, is then a
    // topological order (referrers first) that breaks ties of effective use.
    let mut roots: Vec<usize> = (0..count).collect();
    roots.sort_by_key(|&i| {
        let pinned = pinned.contains(graph.paths[i].hash_part.as_str());
        (std::cmp::Reverse(pinned), std::cmp::Reverse(graph.paths[i].last_used_at))
    });
    let mut effective: Vec<Option<i64>> = vec![None; count];
    let mut post_order = Vec::with_capacity(count);
    for root in roots {
        if effective[root].is_some() {
            continue;
        }
        let used = if pinned.contains(graph.paths[root].hash_part.as_str()) { i64::MAX } else { graph.paths[root].last_used_at };
        effective[root] = Some(used);
        let mut stack = vec![(root, 0usize)];
        while let Some((node, next)) = stack.pop() {
            if let Some(&child) = references[node].get(next) {
                stack.push((node, next + 1));
                if effective[child].is_none() {
                    effective[child] = Some(used);
                    stack.push((child, 0));
                }
            } else {
                post_order.push(node);
            }
        }
    }
    let mut rank = vec![0usize; count];
    for (position, &node) in post_order.iter().rev().enumerate() {
        rank[node] = position;
    }
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|&i| (effective[i], rank[i]));

    // What the cache frees: a NAR once no remaining path uses it.
    let mut users: HashMap<_, u32> = HashMap::new();
    for path in &graph.paths {
        *users.entry(path.nar).or_default() += 1;
    }
    let cutoff = policy.keep_days.map(|days| now - i64::from(days) * 86_400);
    let quota = policy.soft_quota();
    let mut remaining = stored_bytes;
    let mut take = Vec::new();
    let mut bytes_freed = 0;
    for i in order {
        // Pinned (never), or used since the collection began (spared: a push in flight).
        let used = effective[i].unwrap_or(i64::MAX);
        if used >= now {
            break;
        }
        let reason = if cutoff.is_some_and(|cutoff| used < cutoff) {
            CollectReason::Retention
        } else if quota.is_some_and(|quota| remaining > quota) {
            CollectReason::Quota
        } else {
            break;
        };
        let path = &graph.paths[i];
        let left = users.get_mut(&path.nar).expect("every path's NAR is counted");
        *left -= 1;
        if *left == 0 {
            remaining = remaining.saturating_sub(path.file_size);
            bytes_freed += path.file_size;
        }
        take.push((i, reason));
    }
    Plan { take, bytes_freed }
}

/// A pin name: what `cachix pin` accepts, roughly.
fn check_pin_name(name: &str) -> ServiceResult<()> {
    let valid = (1..=100).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ServiceError::BadRequest("a pin name is 1 to 100 characters of A-Z, a-z, 0-9, '.', '_' and '-'".into()))
    }
}

/// Which revisions of one pin (newest first) its keep settings no longer keep.
fn expired_revisions(revisions: &[(i64, PinRevision)], now: i64) -> Vec<i64> {
    let Some((_, newest)) = revisions.first() else { return Vec::new() };
    let mut expired = Vec::new();
    for (position, (id, _)) in revisions.iter().enumerate().skip(1) {
        // A revision is replaced when the next newer one was pinned.
        let replaced_at = revisions[position - 1].1.pinned_at;
        let by_count = newest.keep_revisions.is_some_and(|n| position < n as usize);
        let by_age = newest.keep_days.is_some_and(|days| replaced_at > now - i64::from(days) * 86_400);
        if !(by_count || by_age) {
            expired.push(*id);
        }
    }
    expired
}

/// One collector at a time: a file lock on SQLite, an advisory lock on Postgres. Both
/// go with the process if it dies.
enum CollectorGuard {
    File(#[allow(dead_code)] std::fs::File),
    Postgres(CollectorLock),
}

impl CollectorGuard {
    async fn release(self) {
        if let CollectorGuard::Postgres(lock) = self {
            if let Err(error) = lock.release().await {
                tracing::warn!(error = ?error, "could not release the collectors' lock (its connection is closed instead)");
            }
        }
    }
}

impl Services {
    pub fn clock(&self) -> &super::Clock {
        &self.inner.clock
    }

    pub(super) fn gc_settings(&self) -> &GcSettings {
        &self.inner.gc
    }

    /// When an object whose last row is deleted now may be deleted from storage: at once.
    /// (A deleted path's NAR was already kept through the release grace period; a deleted
    /// cache's objects are unreachable as soon as its rows are gone.)
    pub(super) fn storage_delete_due(&self) -> i64 {
        self.clock().now()
    }

    async fn try_lock_collector(&self) -> ServiceResult<Option<CollectorGuard>> {
        if let Some(lock) = self.db().try_collector_lock().await? {
            return Ok(lock.map(CollectorGuard::Postgres));
        }
        let path = &self.gc_settings().lock_file;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("opening the collectors' lock file {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(CollectorGuard::File(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(anyhow::anyhow!("locking {}: {e}", path.display()).into()),
        }
    }

    /// One collection over every cache, then reclamation of what no cache holds, unless
    /// another collector is running (`None`). `dry_run` only plans.
    #[tracing::instrument(skip_all, fields(dry_run))]
    pub async fn collect_garbage(&self, only: Option<&CacheName>, dry_run: bool) -> ServiceResult<Option<Collection>> {
        let Some(guard) = self.try_lock_collector().await? else {
            tracing::info!("another collector is running: not collecting");
            return Ok(None);
        };
        let result = self.collect_locked(only, dry_run).await;
        guard.release().await;
        result.map(Some)
    }

    async fn collect_locked(&self, only: Option<&CacheName>, dry_run: bool) -> ServiceResult<Collection> {
        // Uses made on this node until now count.
        self.flush_path_uses().await;
        let caches = match only {
            Some(name) => vec![self.db().cache_by_name(name).await?.ok_or(ServiceError::Unauthorized(super::NO_ACCESS))?],
            None => self.db().list_caches().await?,
        };
        let mut collection = Collection::default();
        for cache in caches {
            let collected = self.collect_cache(&cache, dry_run).await?;
            if collected.path_count > 0 {
                tracing::info!(cache = %cache.name, paths = collected.path_count, bytes = collected.bytes_freed, dry_run, "collected");
            }
            collection.caches.push((cache.name.clone(), collected));
        }
        if dry_run {
            return Ok(collection);
        }
        // Before reclaiming: their objects' deletes fall due now.
        collection.upload_sessions_expired = self.reclaim_expired_uploads().await?;
        self.reclaim(&mut collection).await?;
        self.db().prune_served_bytes(self.clock().now().div_euclid(3600) - SERVED_BYTES_KEPT_HOURS).await?;
        // What crashed uploads left in storage itself (temporary files, S3 multipart uploads).
        let expiry = self.gc_settings().pending_upload_expiry;
        match self.storage().remove_stale_uploads(expiry, expiry).await {
            Ok(removed) => collection.stale_uploads_removed = removed as u64,
            Err(error) => tracing::warn!(error = ?error, "could not remove what interrupted uploads left in storage"),
        }
        Ok(collection)
    }

    /// Lets go of released and abandoned NARs, deletes the NAR rows no cache holds and
    /// then the due objects, counting into `collection`.
    async fn reclaim(&self, collection: &mut Collection) -> ServiceResult<()> {
        let now = self.clock().now();
        // Other nodes may serve the narinfo for `staleness` more.
        let grace = whole_secs(self.gc_settings().release_grace.saturating_add(self.limits().staleness));
        let expiry = whole_secs(self.gc_settings().pending_upload_expiry);
        collection.nars_let_go += self.db().let_go_of_nars(now.saturating_sub(grace), now.saturating_sub(expiry)).await?;
        collection.nars_reclaimed += self.db().reclaim_unheld_nars(self.storage_delete_due()).await?;
        let (deleted, failed) = self.process_storage_deletes().await?;
        collection.objects_deleted += deleted;
        collection.objects_failed += failed;
        Ok(())
    }

    /// Plans one cache's collection and, unless `dry_run`, carries it out.
    async fn collect_cache(&self, cache: &Cache, dry_run: bool) -> ServiceResult<CacheCollection> {
        let started = self.clock().now();
        let pinned = self.pinned_hashes(cache, !dry_run).await?;
        let pinned: HashSet<&str> = pinned.iter().map(String::as_str).collect();
        let policy = cache.gc;
        if policy.keep_days.is_none() && policy.soft_quota().is_none() {
            return Ok(CacheCollection::default());
        }
        let graph = self.db().cache_graph(cache.id).await?;
        let stored = self.db().stored_bytes(cache.id).await?;
        let plan = plan(&graph, &pinned, policy, stored, started);
        let describe = |&(i, reason): &(usize, CollectReason)| {
            let path = &graph.paths[i];
            Collectable {
                store_path: path.store_path.clone(),
                file_size: path.file_size,
                nar_size: path.nar_size,
                last_used_at: path.last_used_at,
                reason,
            }
        };
        let mut collected = CacheCollection {
            path_count: plan.take.len() as u64,
            bytes_freed: plan.bytes_freed,
            paths: plan.take.iter().take(PREVIEW_PATHS).map(describe).collect(),
            batches_skipped: 0,
        };
        if dry_run || plan.take.is_empty() {
            return Ok(collected);
        }
        let ids: Vec<PathId> = plan.take.iter().map(|&(i, _)| graph.paths[i].id).collect();
        let mut deleted = 0;
        for batch in ids.chunks(BATCH) {
            // Paths used since the plan began are spared (and so is what they refer to).
            match self.db().delete_path_batch(cache.id, batch, Some(started), started).await? {
                BatchOutcome::Deleted(paths) => deleted += paths.len() as u64,
                BatchOutcome::StillReferenced => collected.batches_skipped += 1,
            }
        }
        if deleted != collected.path_count {
            // Some were spared: what is freed is what the next usage reading says.
            collected.path_count = deleted;
            collected.bytes_freed = stored.saturating_sub(self.db().stored_bytes(cache.id).await?);
        }
        if deleted > 0 {
            self.narinfos_changed(cache.id).await?;
        }
        Ok(collected)
    }

    /// A cache's pins as (newest revision, earlier revisions still kept, newest first),
    /// deleting the revisions their keep settings no longer keep (when `prune`).
    async fn kept_pins(&self, cache: &Cache, prune: bool) -> ServiceResult<Vec<(PinRevision, Vec<PinRevision>)>> {
        let revisions = self.db().pin_revisions(cache.id).await?;
        let now = self.clock().now();
        let mut expired = Vec::new();
        let mut pins = Vec::new();
        for (_, revisions) in group_by_name(&revisions) {
            let gone: HashSet<i64> = expired_revisions(revisions, now).into_iter().collect();
            let mut kept = revisions.iter().filter(|(id, _)| !gone.contains(id)).map(|(_, pin)| pin.clone());
            if let Some(newest) = kept.next() {
                pins.push((newest, kept.collect()));
            }
            expired.extend(gone);
        }
        if prune && !expired.is_empty() {
            self.db().delete_pin_revisions(&expired).await?;
        }
        Ok(pins)
    }

    /// The hash parts of a cache's pinned paths (every kept revision).
    async fn pinned_hashes(&self, cache: &Cache, prune: bool) -> ServiceResult<Vec<String>> {
        let pins = self.kept_pins(cache, prune).await?;
        Ok(pins
            .iter()
            .flat_map(|(newest, earlier)| std::iter::once(newest).chain(earlier))
            .map(|pin| pin.store_path.hash_part().to_owned())
            .collect())
    }

    /// Deletes due objects from storage, several at a time; returns (deleted, failed). A
    /// missing object counts as deleted; a failure is retried later, waiting longer each
    /// time. An object deleted just before a crash is deleted again next time (harmless).
    pub async fn process_storage_deletes(&self) -> ServiceResult<(u64, u64)> {
        use futures_util::StreamExt;
        let (mut deleted, mut failed) = (0, 0);
        loop {
            let due = self.db().due_storage_deletes(self.clock().now(), STORAGE_DELETES_PER_PASS).await?;
            if due.is_empty() {
                return Ok((deleted, failed));
            }
            let outcomes: Vec<_> = futures_util::stream::iter(due)
                .map(|entry| async move {
                    let outcome = self.storage().delete(&entry.storage_key).await;
                    (entry, outcome)
                })
                .buffer_unordered(STORAGE_DELETES_AT_ONCE)
                .collect()
                .await;
            let mut done = Vec::new();
            for (entry, outcome) in outcomes {
                match outcome {
                    Ok(()) => done.push(entry.id),
                    Err(error) => {
                        let wait = (10i64 << entry.attempts.clamp(0, 20)).min(MAX_RETRY_SECS);
                        tracing::warn!(key = %entry.storage_key, attempts = entry.attempts + 1, retry_in = wait, error = ?error, "could not delete an object");
                        self.db().retry_storage_delete(entry.id, self.clock().now() + wait).await?;
                        failed += 1;
                    }
                }
            }
            self.db().finish_storage_deletes(&done).await?;
            deleted += done.len() as u64;
            if done.is_empty() {
                return Ok((deleted, failed));
            }
        }
    }

    /// Writes the path uses and served bytes recorded in memory (see `memo`); kept for the
    /// next flush if the database cannot take them now.
    pub async fn flush_path_uses(&self) {
        let uses = self.inner.memo.take_path_uses();
        if uses.paths.is_empty() && uses.nars.is_empty() && uses.served.is_empty() {
            return;
        }
        let mut paths: HashMap<i64, Vec<PathId>> = HashMap::new();
        for (path, at) in &uses.paths {
            paths.entry(*at).or_default().push(*path);
        }
        let mut nars: HashMap<_, Vec<_>> = HashMap::new();
        for ((cache, nar), at) in &uses.nars {
            nars.entry((*cache, *at)).or_default().push(*nar);
        }
        let written = async {
            self.db().record_path_uses(&paths, &nars).await?;
            self.db().add_served_bytes(&uses.served).await
        };
        if let Err(error) = written.await {
            tracing::warn!(error = ?error, "could not record path uses: keeping them for the next flush");
            self.inner.memo.restore_path_uses(uses);
        }
    }

    /// Runs scheduled collections (every `interval`, if not zero) and the storage-delete
    /// queue (every few seconds) for as long as the services live.
    pub(super) fn collect_periodically(&self) {
        let services = std::sync::Arc::downgrade(&self.inner);
        let interval = self.gc_settings().interval;
        tokio::spawn(async move {
            let mut queue_tick = tokio::time::interval(Duration::from_secs(5));
            let mut gc_tick = tokio::time::interval(if interval.is_zero() { Duration::from_secs(3600) } else { interval });
            queue_tick.tick().await;
            gc_tick.tick().await;
            loop {
                let collect = tokio::select! {
                    _ = queue_tick.tick() => false,
                    _ = gc_tick.tick() => !interval.is_zero(),
                };
                let Some(inner) = services.upgrade() else { return };
                if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                let services = Services { inner };
                let outcome = if collect {
                    services.collect_garbage(None, false).await.map(|_| ())
                } else {
                    services.process_storage_deletes().await.map(|_| ())
                };
                if let Err(error) = outcome {
                    tracing::warn!(error = ?error, collect, "garbage collection failed; trying again later");
                }
            }
        });
    }

    /// After caches were deleted: reclaim the NARs no cache holds any more, in the
    /// background (a collection running elsewhere does it instead).
    pub(super) fn reclaim_soon(&self) {
        let services = self.clone();
        tokio::spawn(async move {
            let Ok(Some(guard)) = services.try_lock_collector().await else { return };
            if let Err(error) = services.reclaim(&mut Collection::default()).await {
                tracing::warn!(error = ?error, "could not reclaim a deleted cache's NARs; the next collection will");
            }
            guard.release().await;
        });
    }

    /// After a push to a cache with a soft quota: evict in the background while it is
    /// over. A collector already running (here or on another node) may have planned
    /// before this push, so a busy lock is waited for rather than taken as done; bounded,
    /// since what is left may be too new or pinned to evict.
    pub(super) fn enforce_soft_quota_soon(&self, cache: &Cache) {
        const ATTEMPTS: u32 = 40;
        let Some(quota) = cache.gc.soft_quota() else { return };
        let services = self.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            for _ in 0..ATTEMPTS {
                let over = match services.db().stored_bytes(cache.id).await {
                    Ok(stored) => stored > quota,
                    Err(error) => {
                        tracing::warn!(error = ?error, "could not read a cache's stored bytes");
                        return;
                    }
                };
                if !over {
                    return;
                }
                match services.collect_garbage(Some(&cache.name), false).await {
                    Ok(Some(collection)) if collection.caches.iter().all(|(_, c)| c.path_count == 0) => return,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                    Err(error) => {
                        tracing::warn!(error = ?error, cache = %cache.name, "could not evict to the cache's quota");
                        return;
                    }
                }
            }
        });
    }

    /// For a cache with a hard quota: refuses an upload of `incoming` more bytes that
    /// would take it over (or of an unknown size once it is full).
    pub(super) async fn check_hard_quota(&self, cache: &Cache, incoming: Option<u64>) -> ServiceResult<()> {
        let Some(quota) = cache.gc.hard_quota() else {
            return Ok(());
        };
        let stored = self.db().stored_bytes(cache.id).await?;
        if stored.saturating_add(incoming.unwrap_or(1)) > quota {
            return Err(ServiceError::InsufficientStorage(format!(
                "cache '{}' is over its quota: {stored} of {quota} bytes stored; delete paths or raise the quota",
                cache.name
            )));
        }
        Ok(())
    }

    // ---- the API's side ------------------------------------------------------------------

    pub async fn gc_policy(&self, principal: Option<&Principal>, name: &CacheName) -> ServiceResult<GcPolicy> {
        Ok(self.authorize(name, principal, Permission::Read).await?.gc)
    }

    #[tracing::instrument(skip_all, fields(cache = %name))]
    pub async fn set_gc_policy(&self, principal: &Principal, name: &CacheName, policy: GcPolicy) -> ServiceResult<GcPolicy> {
        let cache = self.authorize(name, Some(principal), Permission::Admin).await?;
        check_policy(policy)?;
        self.db().set_gc_policy(cache.id, policy).await?;
        self.inner.memo.forget_cache(&cache.name);
        tracing::info!(?policy, "set retention policy");
        Ok(policy)
    }

    /// What a collection of this cache would remove now.
    pub async fn gc_preview(&self, principal: &Principal, name: &CacheName) -> ServiceResult<CacheCollection> {
        let cache = self.authorize(name, Some(principal), Permission::Admin).await?;
        self.flush_path_uses().await;
        self.collect_cache(&cache, true).await
    }

    pub async fn usage(&self, principal: Option<&Principal>, name: &CacheName) -> ServiceResult<CacheUsage> {
        let cache = self.authorize(name, principal, Permission::Read).await?;
        self.flush_path_uses().await;
        Ok(self.db().usage(cache.id, self.clock().now()).await?)
    }

    /// Usage of each of the caller's caches (those it sees).
    pub async fn account_usage(&self, principal: &Principal) -> ServiceResult<Vec<(Cache, CacheUsage)>> {
        let caches = self.my_caches(principal).await?;
        self.flush_path_uses().await;
        let mut usage = Vec::with_capacity(caches.len());
        for cache in caches {
            let counted = self.db().usage(cache.id, self.clock().now()).await?;
            usage.push((cache, counted));
        }
        Ok(usage)
    }

    /// The cache's pins: (newest revision, earlier kept revisions newest first) per name.
    pub async fn pins(&self, principal: Option<&Principal>, name: &CacheName) -> ServiceResult<Vec<(PinRevision, Vec<PinRevision>)>> {
        let cache = self.authorize(name, principal, Permission::Read).await?;
        self.kept_pins(&cache, false).await
    }

    /// Pins a published path under `pin_name` (moving the name if it exists).
    #[tracing::instrument(skip_all, fields(cache = %name, pin = pin_name))]
    pub async fn pin(
        &self,
        principal: &Principal,
        name: &CacheName,
        pin_name: &str,
        store_path: &str,
        keep: (Option<u32>, Option<u32>),
    ) -> ServiceResult<(PinRevision, Vec<PinRevision>)> {
        let cache = self.authorize(name, Some(principal), Permission::Write).await?;
        check_pin_name(pin_name)?;
        if keep.0.is_some_and(|n| !(1..=1000).contains(&n)) || keep.1.is_some_and(|d| !(1..=36_500).contains(&d)) {
            return Err(ServiceError::BadRequest("keep_revisions must be 1 to 1000 and keep_days 1 to 36500".into()));
        }
        let path = StorePath::parse(store_path)
            .or_else(|_| StorePath::from_base_name(store_path))
            .map_err(|e| ServiceError::BadRequest(format!("'{store_path}' is not a store path: {e}")))?;
        if !self.db().pin(cache.id, pin_name, &path, keep, self.clock().now()).await? {
            return Err(ServiceError::NotFound(format!("{path} is not in cache '{}': push it first", cache.name)));
        }
        tracing::info!(path = %path, "pinned");
        // The keep settings apply now, so that the answer shows what stays pinned.
        self.kept_pins(&cache, true)
            .await?
            .into_iter()
            .find(|(pin, _)| pin.name == pin_name)
            .ok_or_else(|| anyhow::anyhow!("pin {pin_name} vanished after it was made").into())
    }

    pub async fn unpin(&self, principal: &Principal, name: &CacheName, pin_name: &str) -> ServiceResult<()> {
        let cache = self.authorize(name, Some(principal), Permission::Write).await?;
        if !self.db().unpin(cache.id, pin_name).await? {
            return Err(ServiceError::NotFound(format!("cache '{}' has no pin named '{pin_name}'", cache.name)));
        }
        Ok(())
    }

    /// Deletes a path, refused (409) while other paths of the cache refer to it unless
    /// `with_referrers`, which deletes them too; never a pinned path. Its narinfo answers
    /// 404 at once on this node. Returns the store paths deleted.
    #[tracing::instrument(skip_all, fields(cache = %name, path = %hash))]
    pub async fn delete_path(
        &self,
        principal: &Principal,
        name: &CacheName,
        hash: &StorePathHash,
        with_referrers: bool,
    ) -> ServiceResult<Vec<String>> {
        let cache = self.authorize(name, Some(principal), Permission::Admin).await?;
        let Some(target) = self.db().path(cache.id, hash).await? else {
            return Err(ServiceError::NotFound(format!("cache '{}' has no path {hash}", cache.name)));
        };
        // The path and (transitively) its referrers, with the references among them.
        let mut members: HashMap<String, (PathId, String)> = HashMap::new();
        members.insert(hash.as_str().to_owned(), (target.id, target.store_path.to_absolute()));
        let mut frontier = vec![hash.as_str().to_owned()];
        while !frontier.is_empty() {
            let asked: Vec<&str> = frontier.iter().map(String::as_str).collect();
            let found = self.db().referrers(cache.id, &asked).await?;
            if !with_referrers && !found.is_empty() {
                let named: Vec<&str> = found.iter().take(5).map(|r| r.store_path.as_str()).collect();
                let more = if found.len() > 5 { format!(" and {} more", found.len() - 5) } else { String::new() };
                return Err(ServiceError::Conflict(format!(
                    "{} is referenced by {}{more}: delete those first, or send with_referrers: true",
                    target.store_path,
                    named.join(", ")
                )));
            }
            frontier.clear();
            for referrer in found {
                if let std::collections::hash_map::Entry::Vacant(entry) = members.entry(referrer.hash_part.clone()) {
                    frontier.push(referrer.hash_part);
                    entry.insert((referrer.id, referrer.store_path));
                }
            }
        }
        let pinned = self.pinned_hashes(&cache, false).await?;
        if let Some(pinned) = pinned.iter().find(|h| members.contains_key(*h)) {
            let pinned = &members[pinned].1;
            return Err(ServiceError::Conflict(if *pinned == target.store_path.to_absolute() {
                format!("{pinned} is pinned: unpin it first")
            } else {
                format!("{} is in the closure of the pinned path {pinned}: unpin it first", target.store_path)
            }));
        }
        let ids: Vec<PathId> = members.values().map(|(id, _)| *id).collect();
        let order = referrers_first(&members, &self.db().references_of(&ids).await?);
        let started = self.clock().now();
        let mut deleted = Vec::new();
        let mut still_referenced = false;
        for batch in order.chunks(BATCH) {
            match self.db().delete_path_batch(cache.id, batch, None, started).await? {
                BatchOutcome::Deleted(paths) => deleted.extend(paths),
                BatchOutcome::StillReferenced => {
                    still_referenced = true;
                    break;
                }
            }
        }
        // Whatever was deleted: its narinfos go at once here, within the bound elsewhere.
        if !deleted.is_empty() {
            self.narinfos_changed(cache.id).await?;
        }
        if still_referenced {
            return Err(ServiceError::Conflict(format!("a path pushed meanwhile refers to {}: try again", target.store_path)));
        }
        tracing::info!(paths = deleted.len(), "deleted paths");
        Ok(deleted)
    }
}

/// Pin revisions grouped by name (they come sorted by name, newest first).
fn group_by_name(revisions: &[(i64, PinRevision)]) -> Vec<(&str, &[(i64, PinRevision)])> {
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=revisions.len() {
        if i == revisions.len() || revisions[i].1.name != revisions[start].1.name {
            groups.push((revisions[start].1.name.as_str(), &revisions[start..i]));
            start = i;
        }
    }
    groups
}

/// The members in an order where each comes before every member it refers to.
fn referrers_first(members: &HashMap<String, (PathId, String)>, edges: &[(PathId, String)]) -> Vec<PathId> {
    let ids: HashMap<PathId, &str> = members.iter().map(|(hash, (id, _))| (*id, hash.as_str())).collect();
    let mut referred_by: HashMap<&str, u32> = members.keys().map(|h| (h.as_str(), 0)).collect();
    let mut references: HashMap<&str, Vec<&str>> = HashMap::new();
    for (from, to) in edges {
        if let (Some(from), Some(count)) = (ids.get(from), referred_by.get_mut(to.as_str())) {
            *count += 1;
            references.entry(from).or_default().push(to.as_str());
        }
    }
    let mut ready: Vec<&str> = referred_by.iter().filter(|(_, n)| **n == 0).map(|(h, _)| *h).collect();
    let mut order = Vec::with_capacity(members.len());
    while let Some(hash) = ready.pop() {
        order.push(members[hash].0);
        for to in references.get(hash).into_iter().flatten() {
            let count = referred_by.get_mut(to).expect("a member");
            *count -= 1;
            if *count == 0 {
                ready.push(to);
            }
        }
    }
    // A cycle (impossible for store paths) leaves members out: they are deleted last,
    // and the database's own check refuses the batch if that breaks a closure.
    let placed: HashSet<PathId> = order.iter().copied().collect();
    order.extend(members.values().map(|(id, _)| *id).filter(|id| !placed.contains(id)));
    order
}

fn check_policy(policy: GcPolicy) -> ServiceResult<()> {
    if policy.keep_days.is_some_and(|d| d > 36_500) {
        return Err(ServiceError::BadRequest("keep_days must be at most 36500 (or null to keep paths for ever)".into()));
    }
    if policy.quota_bytes == Some(0) || policy.quota_bytes.is_some_and(|q| i64::try_from(q).is_err()) {
        return Err(ServiceError::BadRequest("quota_bytes must be at least 1 (or null for no quota)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::GcPath;
    use crate::domain::{NarId, QuotaMode};

    /// A graph from (hash, last use, NAR, size) and (referrer, referenced) pairs.
    fn graph(paths: &[(&str, i64, i64, u64)], edges: &[(&str, &str)]) -> CacheGraph {
        let paths: Vec<GcPath> = paths
            .iter()
            .enumerate()
            .map(|(i, &(hash, used, nar, size))| GcPath {
                id: PathId(i as i64 + 1),
                hash_part: hash.to_owned(),
                store_path: format!("/nix/store/{hash}"),
                nar: NarId(nar),
                file_size: size,
                nar_size: size,
                last_used_at: used,
            })
            .collect();
        let id = |hash: &str| paths.iter().find(|p| p.hash_part == hash).unwrap().id;
        let edges = edges.iter().map(|(from, to)| (id(from), (*to).to_owned())).collect();
        CacheGraph { paths, edges }
    }

    fn taken(graph: &CacheGraph, plan: &Plan) -> Vec<String> {
        plan.take.iter().map(|&(i, _)| graph.paths[i].hash_part.clone()).collect()
    }

    fn retention(days: u32) -> GcPolicy {
        GcPolicy { keep_days: Some(days), ..GcPolicy::default() }
    }

    const DAY: i64 = 86_400;

    #[test]
    fn an_old_path_a_recent_one_refers_to_is_kept() {
        // app (recent) → lib (old); tool (old) → lib.
        let g = graph(&[("app", 100 * DAY, 1, 10), ("lib", DAY, 2, 10), ("tool", 2 * DAY, 3, 10)], &[("app", "lib"), ("tool", "lib")]);
        let plan = plan(&g, &HashSet::new(), retention(7), 0, 100 * DAY);
        assert_eq!(taken(&g, &plan), ["tool"]);
        assert_eq!(plan.bytes_freed, 10);
    }

    #[test]
    fn referrers_go_first_and_every_prefix_is_closed() {
        // a → b → c, a → c, all old; d unrelated and old.
        let g = graph(&[("c", 1, 1, 1), ("b", 2, 2, 1), ("a", 3, 3, 1), ("d", 4, 4, 1)], &[("a", "b"), ("b", "c"), ("a", "c")]);
        let plan = plan(&g, &HashSet::new(), retention(1), 0, 100 * DAY);
        let order = taken(&g, &plan);
        assert_eq!(order.len(), 4);
        let at = |h: &str| order.iter().position(|x| x == h).unwrap();
        assert!(at("a") < at("b") && at("b") < at("c"), "{order:?}");
    }

    #[test]
    fn pinned_closures_survive_zero_days() {
        let g = graph(&[("top", 1, 1, 1), ("dep", 1, 2, 1), ("other", 1, 3, 1)], &[("top", "dep")]);
        let pinned: HashSet<&str> = ["top"].into();
        let plan = plan(&g, &pinned, retention(0), 0, 100 * DAY);
        assert_eq!(taken(&g, &plan), ["other"]);
    }

    #[test]
    fn a_quota_evicts_least_recently_used_until_it_fits() {
        let g = graph(&[("old", 10, 1, 100), ("mid", 20, 2, 100), ("new", 30, 3, 100)], &[]);
        let policy = GcPolicy { quota_bytes: Some(150), ..GcPolicy::default() };
        let plan = plan(&g, &HashSet::new(), policy, 300, 100);
        assert_eq!(taken(&g, &plan), ["old", "mid"]);
        assert_eq!(plan.bytes_freed, 200);
        // A hard quota evicts nothing (pushes are refused instead).
        let hard = GcPolicy { quota_mode: QuotaMode::Refuse, ..policy };
        assert!(super::plan(&g, &HashSet::new(), hard, 300, 100).take.is_empty());
    }

    #[test]
    fn a_shared_nar_is_freed_with_its_last_path() {
        let g = graph(&[("x", 1, 7, 100), ("y", 50, 7, 100)], &[]);
        let plan = plan(&g, &HashSet::new(), retention(0), 100, 10);
        assert_eq!(taken(&g, &plan), ["x"]);
        assert_eq!(plan.bytes_freed, 0, "y still uses the NAR");
    }

    #[test]
    fn pin_revisions_expire_by_count_and_age() {
        let path = StorePath::parse("/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-x").unwrap();
        let revision = |pinned_at, keep_revisions, keep_days| {
            (pinned_at, PinRevision { name: "n".into(), store_path: path.clone(), keep_revisions, keep_days, pinned_at })
        };
        let now = 100 * DAY;
        let newest_first = |keep_revisions, keep_days| {
            vec![revision(90 * DAY, keep_revisions, keep_days), revision(80 * DAY, None, None), revision(10 * DAY, None, None)]
        };
        assert_eq!(expired_revisions(&newest_first(None, None), now), [80 * DAY, 10 * DAY], "only the newest by default");
        assert_eq!(expired_revisions(&newest_first(Some(2), None), now), [10 * DAY]);
        // The middle one was replaced 10 days ago, the oldest 20 days ago.
        assert_eq!(expired_revisions(&newest_first(None, Some(15)), now), [10 * DAY]);
        assert!(expired_revisions(&newest_first(None, Some(30)), now).is_empty());
    }
}
