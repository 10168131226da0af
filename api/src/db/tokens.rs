//! Token records. A token is a signed JWT held by its owner; the database keeps only its
//! id (`jti`) and what it may do, so that it can be listed, expired and revoked.

use sqlx::FromRow;

use super::{now, Database};

#[derive(Clone, Debug, FromRow)]
pub struct TokenRow {
    pub id: String,
    pub cache_id: Option<i64>,
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

impl Database {
    pub async fn insert_token(&self, token: &TokenRow) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, cache_id, permission, description, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.id)
        .bind(token.cache_id)
        .bind(&token.permission)
        .bind(&token.description)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> anyhow::Result<Option<TokenRow>> {
        Ok(sqlx::query_as(
            "SELECT id, cache_id, permission, description, created_at, expires_at, revoked_at, last_used_at FROM tokens WHERE id = $1",
        )
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
