-- Accounts own caches; tokens act either for one cache or for an account (personal tokens
-- and login sessions), optionally limited to some of its caches.

CREATE TABLE accounts (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,            -- argon2id PHC string
    created_at    BIGINT NOT NULL
);

-- Caches made by the operator's admin command have no owner.
ALTER TABLE caches ADD COLUMN owner_id BIGINT REFERENCES accounts (id) ON DELETE CASCADE;
ALTER TABLE caches ADD COLUMN description TEXT NOT NULL DEFAULT '';
CREATE INDEX caches_owner ON caches (owner_id);

ALTER TABLE tokens ADD COLUMN account_id BIGINT REFERENCES accounts (id) ON DELETE CASCADE;
-- 'cache': acts on cache_id; 'personal': acts for account_id; 'session': a login.
ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'cache' CHECK (kind IN ('cache', 'personal', 'session'));
CREATE INDEX tokens_account ON tokens (account_id);

-- A personal token limited to some caches lists them here; no rows means all of them.
CREATE TABLE token_caches (
    token_id TEXT    NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    cache_id BIGINT NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    PRIMARY KEY (token_id, cache_id)
);
