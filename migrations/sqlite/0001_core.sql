-- Core schema: caches, their signing keys and tokens; content-addressed NARs shared by all
-- caches; each cache's proof of possession of NARs (uploads) and its published paths.
-- Timestamps are Unix seconds and flags 0/1 (INTEGER), read the same on SQLite and Postgres.

CREATE TABLE caches (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    is_public    INTEGER NOT NULL CHECK (is_public IN (0, 1)),
    priority     INTEGER NOT NULL,
    signing_mode TEXT    NOT NULL DEFAULT 'server' CHECK (signing_mode IN ('server', 'client')),
    created_at   INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    cache_id         INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    key_name         TEXT    NOT NULL,
    public_key       TEXT    NOT NULL,
    -- nonce || ciphertext of the 64-byte Nix secret key; NULL for client-held keys
    encrypted_secret BLOB,
    master_key_id    TEXT,
    active           INTEGER NOT NULL CHECK (active IN (0, 1)),
    created_at       INTEGER NOT NULL,
    UNIQUE (cache_id, key_name)
);

CREATE TABLE tokens (
    id           TEXT    PRIMARY KEY,          -- the JWT's jti; the token itself is never stored
    cache_id     INTEGER REFERENCES caches (id) ON DELETE CASCADE,
    permission   TEXT    NOT NULL CHECK (permission IN ('read', 'write', 'admin')),
    description  TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
CREATE INDEX tokens_cache ON tokens (cache_id);

CREATE TABLE nars (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    file_hash   TEXT    NOT NULL UNIQUE,        -- nix32 sha256 of the stored (compressed) bytes
    file_size   INTEGER NOT NULL,
    compression TEXT    NOT NULL,
    nar_hash    TEXT    NOT NULL,               -- nix32 sha256 of the uncompressed NAR
    nar_size    INTEGER NOT NULL,
    storage_key TEXT    NOT NULL,
    listing_key TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- A cache "has" a NAR once its bytes were uploaded to it: storage is shared, possession is not.
-- Rows without a path using them are pending uploads, visible to nobody but the pusher.
CREATE TABLE cache_nars (
    cache_id    INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    nar_id      INTEGER NOT NULL REFERENCES nars (id),
    uploaded_at INTEGER NOT NULL,
    PRIMARY KEY (cache_id, nar_id)
);

CREATE TABLE paths (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    cache_id         INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    hash_part        TEXT    NOT NULL,
    store_path       TEXT    NOT NULL,
    nar_id           INTEGER NOT NULL REFERENCES nars (id),
    refs             TEXT    NOT NULL,          -- space-separated base names, as in narinfo
    deriver          TEXT,
    ca               TEXT,
    sigs             TEXT    NOT NULL,          -- newline-separated "name:base64"
    created_at       INTEGER NOT NULL,
    last_accessed_at INTEGER,
    UNIQUE (cache_id, hash_part)
);
CREATE INDEX paths_nar ON paths (nar_id);

CREATE TABLE build_logs (
    cache_id    INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    drv         TEXT    NOT NULL,
    storage_key TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (cache_id, drv)
);
