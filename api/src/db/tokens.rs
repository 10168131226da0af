//! Token records. A token is a signed JWT held by its owner; the database keeps only its
//! id (`jti`) and what it may do, so that it can be listed, expired and revoked.

use sqlx::FromRow;

use super::{now, Database};

#[derive(Clone, Debug, FromRow)]
pub struct TokenRow {
    pub id: String,
    /// For `kind = "cache"`: the one cache it acts on.
    pub cache_id: Option<i64>,
    /// For personal tokens and sessions: the account they act for.
    pub account_id: Option<i64>,
    pub kind: String,
    pub permission: String,
    pub description: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// How stale `last_used_at` may get before a use is written again: keeps the hot read
/// path from writing on every request.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

const TOKEN_COLUMNS: &str =
    "id, cache_id, account_id, kind, permission, description, created_at, expires_at, revoked_at, last_used_at";

impl Database {
    pub async fn insert_token(&self, token: &TokenRow) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, cache_id, account_id, kind, permission, description, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&token.id)
        .bind(token.cache_id)
        .bind(token.account_id)
        .bind(&token.kind)
        .bind(&token.permission)
        .bind(&token.description)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> anyhow::Result<Option<TokenRow>> {
        Ok(sqlx::query_as(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Marks a token revoked; false if no such token exists (revoking twice is fine).
    pub async fn revoke_token(&self, id: &str) -> anyhow::Result<bool> {
        let result = sqlx::query("UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(id)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Limits a personal token to these caches.
    pub async fn limit_token_to(&self, token_id: &str, cache_ids: &[i64]) -> anyhow::Result<()> {
        for cache_id in cache_ids {
            sqlx::query("INSERT INTO token_caches (token_id, cache_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(token_id)
                .bind(cache_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The caches a personal token is limited to; empty means all of its account's.
    pub async fn token_cache_limits(&self, token_id: &str) -> anyhow::Result<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT cache_id FROM token_caches WHERE token_id = $1 ORDER BY cache_id")
            .bind(token_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Tokens an account may see: its personal tokens and the tokens of the caches it owns
    /// (not its login sessions), newest first.
    pub async fn tokens_of(&self, account_id: i64) -> anyhow::Result<Vec<TokenRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE kind <> 'session' AND \
             (account_id = $1 OR cache_id IN (SELECT id FROM caches WHERE owner_id = $1)) ORDER BY created_at DESC, id"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes every login session of an account but `keep`.
    pub async fn revoke_sessions_of(&self, account_id: i64, keep: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE tokens SET revoked_at = $3 WHERE account_id = $1 AND kind = 'session' AND id <> $2 AND revoked_at IS NULL")
            .bind(account_id)
            .bind(keep)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn record_token_use(&self, token: &TokenRow) -> anyhow::Result<()> {
        let now = now();
        if token.last_used_at.is_some_and(|t| now - t < LAST_USED_RESOLUTION_SECS) {
            return Ok(());
        }
        sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1")
            .bind(&token.id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
