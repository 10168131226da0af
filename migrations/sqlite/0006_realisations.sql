-- Realisations of content-addressed derivation outputs (`realisations/<id>.doi`): which
-- published path of the cache a derivation output was built as. A realisation goes with
-- its output path (deleting the path, by GC or by hand, withdraws it: it would name a
-- path nobody can substitute) and with its cache.

CREATE TABLE realisations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    cache_id     INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    drv_output   TEXT    NOT NULL,          -- "sha256:<hex>!<output>", as in the file name
    path_id      INTEGER NOT NULL REFERENCES paths (id) ON DELETE CASCADE,
    dependencies TEXT    NOT NULL,          -- newline-separated "<drv output> <path base name>"
    sigs         TEXT    NOT NULL,          -- newline-separated "name:base64"
    created_at   INTEGER NOT NULL,
    UNIQUE (cache_id, drv_output)
);
-- Deleting a path looks up its realisations by it (the cascade).
CREATE INDEX realisations_path ON realisations (path_id);
