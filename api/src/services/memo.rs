//! What the hot read path remembers. For a short while (`staleness_secs`): verified token
//! records, caches by name, their active key names and narinfo misses. For longer (minutes):
//! rendered narinfos, each tagged with its cache's narinfo generation, which every change to
//! what they say raises in the database (`cache_changes`); nodes poll it well within the
//! bound ([`GENERATION_POLL`]), so a rendered narinfo is never served once its generation
//! is known to be old. A change made through this node forgets what it changed at once; a
//! change made on another node (or by the admin command) is seen here within the bound. Uses (of tokens
//! and of paths) and NAR bytes served are kept in memory and written in batches, so that
//! reading a cache writes nothing to the database.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use moka::sync::Cache as Lru;

use larder_protocol::hash::Sha256Hash;
use larder_protocol::store_path::StorePathHash;

use super::substitute::NarDownload;

use crate::domain::{Cache, CacheId, CacheName, NarId, PathId, Token, TokenId};

pub(super) struct Memo {
    /// `None` caches nothing: every lookup goes to the database.
    remembered: Option<Remembered>,
    /// Last use of each token since the last flush.
    uses: Mutex<HashMap<TokenId, i64>>,
    /// Path uses and NAR bytes served since the last flush.
    path_uses: Mutex<PathUses>,
    /// Woken when `path_uses` is large enough to be written before the next tick.
    pub(super) flush_soon: tokio::sync::Notify,
}

/// What substitution did since the last flush.
#[derive(Default)]
pub(super) struct PathUses {
    /// Last use by narinfo, per path.
    pub(super) paths: HashMap<PathId, i64>,
    /// Last use by NAR download, per cache and NAR (every path of the cache using it).
    pub(super) nars: HashMap<(CacheId, NarId), i64>,
    /// NAR bytes sent, per cache and hour.
    pub(super) served: HashMap<(CacheId, i64), u64>,
}

/// Distinct uses kept before a flush is asked for (about 50 bytes each).
const PATH_USES_BEFORE_FLUSH: usize = 100_000;

/// A rendered, signed narinfo and the path it is of (whose use it records).
#[derive(Clone)]
pub(super) struct RenderedNarinfo {
    pub(super) path: PathId,
    pub(super) text: Bytes,
}

/// What is kept by cache generation: a value and the generation of its cache's narinfos
/// it was read at.
#[derive(Clone)]
struct Kept<T> {
    generation: i64,
    value: T,
}

/// How often each node asks, at most, which caches' narinfo generations rose (half the
/// staleness bound when that is shorter).
pub(super) const GENERATION_POLL: Duration = Duration::from_millis(500);

/// Longest a rendered narinfo (or NAR lookup) is kept. Generations make it safe to keep
/// them long; this only bounds what a change whose generation was never raised (a node that
/// crashed between the two writes, two pushes of one path racing) could leave behind.
const RENDERED_KEEP: Duration = Duration::from_secs(600);

struct Remembered {
    /// By id; `None` for an id no token has (deleted with its account or cache).
    tokens: Lru<TokenId, Option<Arc<Token>>>,
    /// By name; `None` for a name no cache has.
    caches: Lru<CacheName, Option<Arc<Cache>>>,
    /// With the narinfo generation they were read at.
    active_keys: Lru<CacheId, Kept<Arc<Vec<String>>>>,
    /// Rendered, signed narinfos by cache and hash, kept for up to [`RENDERED_KEEP`] and
    /// served while their generation is the cache's.
    narinfos: Lru<(CacheId, StorePathHash), Kept<RenderedNarinfo>>,
    /// Published NARs by cache and file hash, as narinfos are (a NAR stops being published
    /// only with a path deleted or replaced, which raises the generation).
    nars: Lru<(CacheId, Sha256Hash), Kept<NarDownload>>,
    /// Paths a cache lacked when asked (substituters ask for many of those): kept for the
    /// staleness bound only, since a push on another node raises no generation.
    misses: Lru<(CacheId, StorePathHash), ()>,
    /// The latest narinfo generation known per cache (absent: never raised, 0).
    generations: RwLock<HashMap<CacheId, i64>>,
}

const MAX_TOKENS: u64 = 100_000;
const MAX_CACHES: u64 = 20_000;
/// Bytes of rendered narinfos kept (a typical one is under 1 KiB, the largest accepted
/// 1 MiB: the bound is on bytes, not entries).
const MAX_NARINFO_BYTES: u64 = 16 << 20;
const MAX_MISSES: u64 = 100_000;
const MAX_NARS: u64 = 100_000;

impl Memo {
    /// `keep_rendered_at_most` caps how long a rendered narinfo is kept (below the grace
    /// in which a released NAR is still served).
    pub(super) fn new(staleness: Duration, keep_rendered_at_most: Duration) -> Self {
        let keep_rendered = RENDERED_KEEP.min(keep_rendered_at_most).max(staleness);
        let remembered = (!staleness.is_zero()).then(|| Remembered {
            tokens: Lru::builder().max_capacity(MAX_TOKENS).time_to_live(staleness).build(),
            caches: Lru::builder().max_capacity(MAX_CACHES).time_to_live(staleness).build(),
            active_keys: Lru::builder().max_capacity(MAX_CACHES).time_to_live(staleness).build(),
            narinfos: Lru::builder()
                .max_capacity(MAX_NARINFO_BYTES)
                .weigher(|_, kept: &Kept<RenderedNarinfo>| 64 + u32::try_from(kept.value.text.len()).unwrap_or(u32::MAX))
                .time_to_live(keep_rendered)
                .build(),
            nars: Lru::builder().max_capacity(MAX_NARS).time_to_live(keep_rendered).build(),
            misses: Lru::builder().max_capacity(MAX_MISSES).time_to_live(staleness).build(),
            generations: RwLock::default(),
        });
        Self { remembered, uses: Mutex::default(), path_uses: Mutex::default(), flush_soon: tokio::sync::Notify::new() }
    }

    pub(super) fn token(&self, id: &TokenId) -> Option<Option<Arc<Token>>> {
        self.remembered.as_ref()?.tokens.get(id)
    }

    pub(super) fn remember_token(&self, id: TokenId, token: Option<Arc<Token>>) {
        if let Some(r) = &self.remembered {
            r.tokens.insert(id, token);
        }
    }

    pub(super) fn forget_token(&self, id: &TokenId) {
        if let Some(r) = &self.remembered {
            r.tokens.invalidate(id);
        }
    }

    /// After changes that remove or revoke tokens in bulk (a cache or an account deleted,
    /// sessions ended by a password change).
    pub(super) fn forget_all_tokens(&self) {
        if let Some(r) = &self.remembered {
            r.tokens.invalidate_all();
        }
    }

    pub(super) fn cache(&self, name: &CacheName) -> Option<Option<Arc<Cache>>> {
        self.remembered.as_ref()?.caches.get(name)
    }

    pub(super) fn remember_cache(&self, name: CacheName, cache: Option<Arc<Cache>>) {
        if let Some(r) = &self.remembered {
            r.caches.insert(name, cache);
        }
    }

    pub(super) fn forget_cache(&self, name: &CacheName) {
        if let Some(r) = &self.remembered {
            r.caches.invalidate(name);
        }
    }

    /// After an account is deleted with all its caches.
    pub(super) fn forget_all_caches(&self) {
        if let Some(r) = &self.remembered {
            r.caches.invalidate_all();
            r.active_keys.invalidate_all();
            r.narinfos.invalidate_all();
            r.misses.invalidate_all();
        }
    }

    /// Served only while the generation they were read at is the cache's: a narinfo
    /// rendered again after a key change must not be signed from the old set.
    pub(super) fn active_keys(&self, cache: CacheId) -> Option<Arc<Vec<String>>> {
        let r = self.remembered.as_ref()?;
        r.current(cache, r.active_keys.get(&cache)?)
    }

    pub(super) fn remember_active_keys(&self, cache: CacheId, generation: i64, names: Arc<Vec<String>>) {
        if let Some(r) = &self.remembered {
            r.active_keys.insert(cache, Kept { generation, value: names });
        }
    }

    /// The latest narinfo generation this node knows of a cache: read it before reading
    /// the rows a narinfo is rendered from, and remember the narinfo with it.
    pub(super) fn narinfo_generation(&self, cache: CacheId) -> i64 {
        self.remembered.as_ref().map_or(0, |r| r.generation(cache))
    }

    /// `Some(None)`: the cache lacked the path a moment ago.
    pub(super) fn narinfo(&self, cache: CacheId, hash: &StorePathHash) -> Option<Option<RenderedNarinfo>> {
        let r = self.remembered.as_ref()?;
        let key = (cache, hash.clone());
        if let Some(kept) = r.narinfos.get(&key) {
            if let Some(narinfo) = r.current(cache, kept) {
                return Some(Some(narinfo));
            }
            r.narinfos.invalidate(&key);
        }
        r.misses.contains_key(&key).then_some(None)
    }

    pub(super) fn remember_narinfo(&self, cache: CacheId, hash: StorePathHash, generation: i64, narinfo: Option<RenderedNarinfo>) {
        if let Some(r) = &self.remembered {
            match narinfo {
                Some(value) => r.narinfos.insert((cache, hash), Kept { generation, value }),
                None => r.misses.insert((cache, hash), ()),
            }
        }
    }

    pub(super) fn nar(&self, cache: CacheId, file_hash: &Sha256Hash) -> Option<NarDownload> {
        let r = self.remembered.as_ref()?;
        r.current(cache, r.nars.get(&(cache, *file_hash))?)
    }

    pub(super) fn remember_nar(&self, cache: CacheId, file_hash: Sha256Hash, generation: i64, value: NarDownload) {
        if let Some(r) = &self.remembered {
            r.nars.insert((cache, file_hash), Kept { generation, value });
        }
    }

    /// After the path was published through this node (deletions raise the generation).
    pub(super) fn forget_narinfo(&self, cache: CacheId, hash: &StorePathHash) {
        if let Some(r) = &self.remembered {
            let key = (cache, hash.clone());
            r.narinfos.invalidate(&key);
            r.misses.invalidate(&key);
        }
    }

    /// A cache's narinfo generation rose to `generation` (raised here, or seen by polling):
    /// what was rendered from an older one is no longer served.
    pub(super) fn narinfo_generation_rose(&self, cache: CacheId, generation: i64) {
        if let Some(r) = &self.remembered {
            let mut generations = r.generations.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            let known = generations.entry(cache).or_default();
            *known = (*known).max(generation);
        }
    }

    /// Forgets every rendered narinfo (after a cache or an account was deleted, or when
    /// polling the generations failed for longer than the bound).
    pub(super) fn forget_narinfos(&self) {
        if let Some(r) = &self.remembered {
            r.narinfos.invalidate_all();
            r.nars.invalidate_all();
            r.misses.invalidate_all();
        }
    }

    pub(super) fn record_use(&self, token: &TokenId, at: i64) {
        self.uses.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(token.clone(), at);
    }

    /// The uses recorded since the last call.
    pub(super) fn take_uses(&self) -> HashMap<TokenId, i64> {
        std::mem::take(&mut *self.uses.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn with_path_uses(&self, record: impl FnOnce(&mut PathUses)) {
        let mut uses = self.path_uses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        record(&mut uses);
        if uses.paths.len() + uses.nars.len() == PATH_USES_BEFORE_FLUSH {
            self.flush_soon.notify_one();
        }
    }

    pub(super) fn record_path_use(&self, path: PathId, at: i64) {
        self.with_path_uses(|uses| {
            uses.paths.insert(path, at);
        });
    }

    /// A NAR download: a use of the cache's paths with that NAR, and bytes served.
    pub(super) fn record_nar_use(&self, cache: CacheId, nar: NarId, bytes: u64, at: i64) {
        self.with_path_uses(|uses| {
            uses.nars.insert((cache, nar), at);
            *uses.served.entry((cache, at.div_euclid(3600))).or_default() += bytes;
        });
    }

    pub(super) fn take_path_uses(&self) -> PathUses {
        std::mem::take(&mut *self.path_uses.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Puts back uses that could not be written (kept for the next flush, merged with newer).
    pub(super) fn restore_path_uses(&self, old: PathUses) {
        self.with_path_uses(|uses| {
            for (path, at) in old.paths {
                uses.paths.entry(path).and_modify(|t| *t = (*t).max(at)).or_insert(at);
            }
            for (key, at) in old.nars {
                uses.nars.entry(key).and_modify(|t| *t = (*t).max(at)).or_insert(at);
            }
            for (key, bytes) in old.served {
                *uses.served.entry(key).or_default() += bytes;
            }
        });
    }
}

impl Remembered {
    fn generation(&self, cache: CacheId) -> i64 {
        self.generations.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&cache).copied().unwrap_or(0)
    }

    /// What was kept, while the generation it was read at is still the cache's.
    fn current<T>(&self, cache: CacheId, kept: Kept<T>) -> Option<T> {
        (kept.generation == self.generation(cache)).then_some(kept.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: usize) -> StorePathHash {
        let digest = Sha256Hash::digest(&i.to_le_bytes());
        StorePathHash::parse(&larder_protocol::nix32::encode(&digest.0[..20])).unwrap()
    }

    #[test]
    fn narinfos_are_bounded_by_bytes_not_entries() {
        let memo = Memo::new(Duration::from_secs(60), Duration::from_secs(600));
        let big = RenderedNarinfo { path: PathId(1), text: Bytes::from(vec![b'x'; 512 << 10]) };
        for i in 0..100 {
            memo.remember_narinfo(CacheId(1), hash(i), 0, Some(big.clone()));
        }
        let Some(remembered) = &memo.remembered else { panic!("a non-zero staleness remembers") };
        remembered.narinfos.run_pending_tasks();
        assert!(remembered.narinfos.weighted_size() <= MAX_NARINFO_BYTES, "{} bytes kept", remembered.narinfos.weighted_size());
        assert!(remembered.narinfos.entry_count() <= 32, "{} entries of 512 KiB kept", remembered.narinfos.entry_count());
    }

    #[test]
    fn zero_staleness_remembers_nothing() {
        let memo = Memo::new(Duration::ZERO, Duration::from_secs(600));
        memo.remember_narinfo(CacheId(1), hash(1), 0, None);
        assert!(memo.narinfo(CacheId(1), &hash(1)).is_none());
        memo.record_use(&TokenId::from_presented("t"), 5);
        assert_eq!(memo.take_uses().len(), 1, "uses are still recorded, to be written");
    }

    #[test]
    fn a_risen_generation_withdraws_what_was_rendered_before_it() {
        let memo = Memo::new(Duration::from_secs(60), Duration::from_secs(600));
        let text = |t: &str| RenderedNarinfo { path: PathId(1), text: Bytes::from(t.to_owned()) };
        let (cache, other) = (CacheId(1), CacheId(2));
        memo.remember_narinfo(cache, hash(1), memo.narinfo_generation(cache), Some(text("old")));
        memo.remember_narinfo(other, hash(1), memo.narinfo_generation(other), Some(text("other")));
        memo.remember_narinfo(cache, hash(2), memo.narinfo_generation(cache), None);
        assert_eq!(memo.narinfo(cache, &hash(1)).unwrap().unwrap().text, "old");

        memo.narinfo_generation_rose(cache, 3);
        assert!(memo.narinfo(cache, &hash(1)).is_none(), "rendered at generation 0, the cache is at 3");
        assert_eq!(memo.narinfo(other, &hash(1)).unwrap().unwrap().text, "other", "other caches keep theirs");
        assert!(matches!(memo.narinfo(cache, &hash(2)), Some(None)), "misses go by time, not generation");

        memo.remember_narinfo(cache, hash(1), memo.narinfo_generation(cache), Some(text("new")));
        assert_eq!(memo.narinfo(cache, &hash(1)).unwrap().unwrap().text, "new");
        memo.narinfo_generation_rose(cache, 2);
        assert_eq!(memo.narinfo_generation(cache), 3, "a late poll never lowers it");
        assert_eq!(memo.narinfo(cache, &hash(1)).unwrap().unwrap().text, "new");
    }
}
