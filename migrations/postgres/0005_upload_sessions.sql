-- Upload sessions: one path's NAR sent in numbered parts (any order, each re-sendable),
-- then completed, verified and published. And the compression each cache stores NARs
-- received that way in.

ALTER TABLE caches ADD COLUMN compression TEXT NOT NULL DEFAULT 'zstd' CHECK (compression IN ('zstd', 'none'));

CREATE TABLE upload_sessions (
    -- Random, in URLs; the session belongs to its cache, not to the token that opened it.
    id               TEXT    PRIMARY KEY,
    cache_id         BIGINT  NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    store_path       TEXT    NOT NULL,
    nar_hash         TEXT    NOT NULL,
    nar_size         BIGINT  NOT NULL,
    -- As in `paths`: space-separated base names; newline-separated signatures.
    refs             TEXT    NOT NULL,
    deriver          TEXT,
    ca               TEXT,
    sigs             TEXT    NOT NULL,
    wire_compression TEXT    NOT NULL CHECK (wire_compression IN ('zstd', 'none')),
    -- Every part but the last is exactly this long.
    part_size        BIGINT  NOT NULL,
    -- Where the parts are assembled, and the storage's id of that multipart upload.
    storage_key      TEXT    NOT NULL,
    storage_upload   TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    expires_at       BIGINT  NOT NULL
);
CREATE INDEX upload_sessions_expiry ON upload_sessions (expires_at);
CREATE INDEX upload_sessions_path ON upload_sessions (cache_id, store_path);

CREATE TABLE upload_parts (
    session_id TEXT    NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
    number     BIGINT  NOT NULL,
    size       BIGINT  NOT NULL,
    -- What the storage needs to assemble the part (S3's ETag).
    etag       TEXT    NOT NULL,
    PRIMARY KEY (session_id, number)
);
