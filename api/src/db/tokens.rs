//! Token records. A token is a signed JWT held by its owner; the database keeps only its
//! id (`jti`) and what it may do, so that it can be listed, expired and revoked.

use std::collections::HashMap;

use sqlx::FromRow;

use super::caches::flag;
use super::{now, Database, MAX_BINDS_PER_QUERY};
use crate::domain::{AccountId, CacheId, CacheLimit, Token, TokenId, TokenScope};

#[derive(FromRow)]
struct TokenRow {
    id: String,
    cache_id: Option<i64>,
    account_id: Option<i64>,
    kind: String,
    limited: i64,
    permission: String,
    description: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl TokenRow {
    /// The token, with `limits` the caches of a limited personal token (ignored otherwise).
    fn into_token(self, limits: Vec<i64>) -> anyhow::Result<Token> {
        let corrupt = |what: &str| anyhow::anyhow!("token row {} has a bad {what}", self.id);
        let limited = flag(self.limited).ok_or_else(|| corrupt("limited flag"))?;
        let scope = match (self.kind.as_str(), self.cache_id, self.account_id) {
            ("cache", Some(cache), None) => TokenScope::Cache(CacheId(cache)),
            ("personal", None, Some(account)) => TokenScope::Personal {
                account: AccountId(account),
                caches: if limited { CacheLimit::Only(limits.into_iter().map(CacheId).collect()) } else { CacheLimit::All },
            },
            ("session", None, Some(account)) => TokenScope::Session(AccountId(account)),
            _ => return Err(corrupt("kind and scope")),
        };
        Ok(Token {
            permission: self.permission.parse().map_err(|_| corrupt("permission"))?,
            id: TokenId(self.id),
            scope,
            description: self.description,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
        })
    }
}

const TOKEN_COLUMNS: &str =
    "t.id, t.cache_id, t.account_id, t.kind, t.limited, t.permission, t.description, t.created_at, t.expires_at, t.revoked_at, t.last_used_at";

impl Database {
    /// Stores a token with the caches it is limited to, in one transaction: a token is
    /// never visible without its limits.
    pub async fn insert_token(&self, token: &Token) -> anyhow::Result<()> {
        let (cache_id, account_id, limits) = match &token.scope {
            TokenScope::Cache(cache) => (Some(cache.0), None, None),
            TokenScope::Personal { account, caches: CacheLimit::All } => (None, Some(account.0), None),
            TokenScope::Personal { account, caches: CacheLimit::Only(caches) } => (None, Some(account.0), Some(caches.as_slice())),
            TokenScope::Session(account) => (None, Some(account.0), None),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tokens (id, cache_id, account_id, kind, limited, permission, description, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(token.id.as_str())
        .bind(cache_id)
        .bind(account_id)
        .bind(token.scope.kind().as_str())
        .bind(i64::from(limits.is_some()))
        .bind(token.permission.as_str())
        .bind(&token.description)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
        for chunk in limits.unwrap_or_default().chunks(MAX_BINDS_PER_QUERY) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${})", i + 2)).collect();
            let sql = format!("INSERT INTO token_caches (token_id, cache_id) VALUES {} ON CONFLICT DO NOTHING", values.join(", "));
            let mut query = sqlx::query(&sql).bind(token.id.as_str());
            for cache in chunk {
                query = query.bind(cache.0);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A token with its cache limits, in one query.
    pub async fn token(&self, id: &TokenId) -> anyhow::Result<Option<Token>> {
        let rows: Vec<TokenRowWithLimit> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS}, tc.cache_id AS limit_cache_id FROM tokens t \
             LEFT JOIN token_caches tc ON tc.token_id = t.id WHERE t.id = $1 ORDER BY tc.cache_id"
        ))
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        let limits: Vec<i64> = rows.iter().filter_map(|r| r.limit_cache_id).collect();
        rows.into_iter().next().map(|r| r.token.into_token(limits)).transpose()
    }

    /// Marks a token revoked; false if no such token exists (revoking twice is fine).
    pub async fn revoke_token(&self, id: &TokenId) -> anyhow::Result<bool> {
        let result = sqlx::query("UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(id.as_str())
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Tokens an account may see: its personal tokens and the tokens of the caches it owns
    /// (not its login sessions), newest first, with their limits: two queries in all.
    pub async fn tokens_of(&self, account: AccountId) -> anyhow::Result<Vec<Token>> {
        let rows: Vec<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.kind <> 'session' AND \
             (t.account_id = $1 OR t.cache_id IN (SELECT id FROM caches WHERE owner_id = $1)) ORDER BY t.created_at DESC, t.id"
        ))
        .bind(account.0)
        .fetch_all(&self.pool)
        .await?;
        let limit_rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT tc.token_id, tc.cache_id FROM token_caches tc JOIN tokens t ON t.id = tc.token_id \
             WHERE t.account_id = $1 ORDER BY tc.token_id, tc.cache_id",
        )
        .bind(account.0)
        .fetch_all(&self.pool)
        .await?;
        let mut limits: HashMap<String, Vec<i64>> = HashMap::new();
        for (token, cache) in limit_rows {
            limits.entry(token).or_default().push(cache);
        }
        rows.into_iter()
            .map(|row| {
                let caches = limits.remove(&row.id).unwrap_or_default();
                row.into_token(caches)
            })
            .collect()
    }

    /// Revokes every login session of an account but `keep`.
    pub async fn revoke_sessions_of(&self, account: AccountId, keep: &TokenId) -> anyhow::Result<()> {
        sqlx::query("UPDATE tokens SET revoked_at = $3 WHERE account_id = $1 AND kind = 'session' AND id <> $2 AND revoked_at IS NULL")
            .bind(account.0)
            .bind(keep.as_str())
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes the last use of these tokens (a use never moves a last use back).
    pub async fn record_token_uses(&self, uses: &HashMap<TokenId, i64>) -> anyhow::Result<()> {
        for (token, at) in uses {
            sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)")
                .bind(token.as_str())
                .bind(*at)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

#[derive(FromRow)]
struct TokenRowWithLimit {
    #[sqlx(flatten)]
    token: TokenRow,
    limit_cache_id: Option<i64>,
}
