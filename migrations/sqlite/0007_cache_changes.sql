-- A generation per cache, raised whenever what its narinfos say changes other than by a
-- new path appearing: a path deleted or re-published, keys rotated or retired, paths
-- re-signed. Every node polls the rows changed lately and forgets the narinfos it
-- rendered from an older generation, so rendered narinfos may be kept for long and a
-- change still reaches every node within the staleness bound. `changed_at` is the
-- database's clock (seconds), so that nodes' clocks do not matter.

CREATE TABLE cache_changes (
    cache_id   INTEGER PRIMARY KEY REFERENCES caches (id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    changed_at INTEGER NOT NULL
);
CREATE INDEX cache_changes_changed_at ON cache_changes (changed_at);
