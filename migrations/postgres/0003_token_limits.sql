-- A personal token is limited or not by its own flag, never by whether it has rows in
-- token_caches: those rows go with their caches, and a limited token whose caches are all
-- gone must act on nothing, not on everything.
ALTER TABLE tokens ADD COLUMN limited BIGINT NOT NULL DEFAULT 0 CHECK (limited IN (0, 1));
UPDATE tokens SET limited = 1 WHERE id IN (SELECT token_id FROM token_caches);

-- Access times arrive with garbage collection, which will say how they are kept.
ALTER TABLE paths DROP COLUMN last_accessed_at;
