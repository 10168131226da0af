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
    /// For personal tokens: 1 if it acts only on the caches listed in `token_caches`
    /// (possibly none left), 0 if on all of its account's.
    pub limited: i64,
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
    "id, cache_id, account_id, kind, limited, permission, description, created_at, expires_at, revoked_at, last_used_at";

impl Database {
    /// Stores a token with the caches it is limited to, in one transaction: a token is
    /// never visible without its limits.
    pub async fn insert_token(&self, token: &TokenRow, limited_to: &[i64]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tokens (id, cache_id, account_id, kind, limited, permission, description, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&token.id)
        .bind(token.cache_id)
        .bind(token.account_id)
        .bind(&token.kind)
        .bind(token.limited)
        .bind(&token.permission)
        .bind(&token.description)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
        for chunk in limited_to.chunks(super::MAX_BINDS_PER_QUERY) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${})", i + 2)).collect();
            let sql = format!("INSERT INTO token_caches (token_id, cache_id) VALUES {} ON CONFLICT DO NOTHING", values.join(", "));
            let mut query = sqlx::query(&sql).bind(&token.id);
            for cache_id in chunk {
                query = query.bind(cache_id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
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

    /// The caches a limited personal token may act on (those that still exist).
    pub async fn token_cache_limits(&self, token_id: &str) -> anyhow::Result<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT cache_id FROM token_caches WHERE token_id = $1 ORDER BY cache_id")
            .bind(token_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The cache limits of every limited token of an account, in one query: token id →
    /// the caches it may act on.
    pub async fn token_limits_of(&self, account_id: i64) -> anyhow::Result<std::collections::HashMap<String, Vec<i64>>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT tc.token_id, tc.cache_id FROM token_caches tc JOIN tokens t ON t.id = tc.token_id \
             WHERE t.account_id = $1 ORDER BY tc.token_id, tc.cache_id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        let mut limits: std::collections::HashMap<String, Vec<i64>> = std::collections::HashMap::new();
        for (token_id, cache_id) in rows {
            limits.entry(token_id).or_default().push(cache_id);
        }
        Ok(limits)
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
