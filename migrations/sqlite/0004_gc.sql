-- Garbage collection: when each path was last used, each cache's retention policy and
-- quota, pins, the reference graph as rows, NAR bytes served, and a durable queue of
-- storage deletes.

-- Uses are counted in memory and written every few seconds; a push is a path's first use.
ALTER TABLE paths ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
UPDATE paths SET last_used_at = created_at;
CREATE INDEX paths_last_used ON paths (cache_id, last_used_at);
-- "Does a path of this cache use this NAR?" (releasing, serving and reclaiming NARs ask it);
-- without it SQLite's planner walks the cache's paths by the index above.
CREATE INDEX paths_cache_nar ON paths (cache_id, nar_id);

-- NULL keep_days keeps paths for ever; NULL quota_bytes is no quota.
ALTER TABLE caches ADD COLUMN keep_days INTEGER;
ALTER TABLE caches ADD COLUMN quota_bytes INTEGER;
ALTER TABLE caches ADD COLUMN quota_mode TEXT NOT NULL DEFAULT 'evict' CHECK (quota_mode IN ('evict', 'refuse'));
ALTER TABLE caches ADD COLUMN last_push_at INTEGER;
UPDATE caches SET last_push_at = (SELECT MAX(created_at) FROM paths WHERE paths.cache_id = caches.id);

-- Which paths of its cache each path refers to (itself left out), by hash part, so that
-- "who refers to this path?" is an index lookup for deletes and collections. `refs` stays
-- the narinfo's text.
CREATE TABLE path_refs (
    path_id  INTEGER NOT NULL REFERENCES paths (id) ON DELETE CASCADE,
    cache_id INTEGER NOT NULL,
    ref_hash TEXT    NOT NULL,
    PRIMARY KEY (path_id, ref_hash)
);
CREATE INDEX path_refs_target ON path_refs (cache_id, ref_hash);
INSERT INTO path_refs (path_id, cache_id, ref_hash)
WITH RECURSIVE split (path_id, cache_id, own, rest, ref) AS (
    SELECT id, cache_id, hash_part, refs || ' ', '' FROM paths
    UNION ALL
    SELECT path_id, cache_id, own, substr(rest, instr(rest, ' ') + 1), substr(rest, 1, instr(rest, ' ') - 1)
    FROM split WHERE rest <> ''
)
SELECT DISTINCT path_id, cache_id, substr(ref, 1, 32) FROM split WHERE ref <> '' AND substr(ref, 1, 32) <> own;

-- Reclaiming a NAR asks whether any cache still holds it.
CREATE INDEX cache_nars_nar ON cache_nars (nar_id);
-- When a cache's last path using a NAR was deleted: the NAR is still sent for a grace
-- period (to clients that read the narinfo just before), then the cache lets it go.
ALTER TABLE cache_nars ADD COLUMN released_at INTEGER;

-- Each row is one path a named pin held; the newest row of a name is the pin itself, the
-- others are the revisions its keep_revisions / keep_days still keep.
CREATE TABLE pins (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    cache_id       INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    hash_part      TEXT    NOT NULL,
    store_path     TEXT    NOT NULL,
    keep_revisions INTEGER,
    keep_days      INTEGER,
    pinned_at      INTEGER NOT NULL
);
CREATE INDEX pins_cache ON pins (cache_id, name);
CREATE INDEX pins_path ON pins (cache_id, hash_part);

-- NAR bytes sent per cache and hour (Unix seconds / 3600), for usage.
CREATE TABLE served_bytes (
    cache_id INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    hour     INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    PRIMARY KEY (cache_id, hour)
);

-- Storage objects to delete once due: written in the same transaction as the change that
-- stops every row from naming them, removed once the object is gone (a missing object
-- counts as gone). Uploads also queue their object before writing it, due a day later,
-- and take it off the queue when its row is recorded: an upload cut short by a crash is
-- reclaimed, not leaked.
CREATE TABLE storage_deletes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    storage_key TEXT    NOT NULL,
    due_at      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX storage_deletes_due ON storage_deletes (due_at);
CREATE INDEX storage_deletes_key ON storage_deletes (storage_key);
