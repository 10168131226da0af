//! Minting, listing and revoking tokens, and login sessions.

use std::time::Duration;

use super::{Principal, ServiceError, ServiceResult, Services};
use crate::auth::Claims;
use crate::db::{now, CacheRow, TokenRow};
use crate::domain::Permission;

pub struct CreatedToken {
    pub row: TokenRow,
    /// For a limited personal token: the caches it may act on.
    pub limited_to: Vec<i64>,
    /// The token itself: shown once, never stored.
    pub secret: String,
}

/// What a token acts on.
pub enum TokenScope {
    /// One cache.
    Cache(i64),
    /// An account's caches: only those listed (`Some`, never widened when they go), or
    /// all of them (`None`).
    Personal { account_id: i64, limited_to: Option<Vec<i64>> },
    /// A login: acts for the account like an unlimited personal token.
    Session { account_id: i64 },
}

/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_DESCRIPTION_BYTES: usize = 200;

impl Services {
    /// Mints a token. The JWT carries its id and scope; the row makes it revocable.
    pub async fn issue_token(
        &self,
        scope: TokenScope,
        permission: Permission,
        expires_in: Option<Duration>,
        description: &str,
    ) -> ServiceResult<CreatedToken> {
        if description.len() > MAX_DESCRIPTION_BYTES || description.chars().any(char::is_control) {
            return Err(ServiceError::BadRequest(format!("description must be at most {MAX_DESCRIPTION_BYTES} bytes of text on one line")));
        }
        let created_at = now();
        let expires_at = match expires_in {
            Some(d) if d.is_zero() => return Err(ServiceError::BadRequest("expiry must be in the future".into())),
            Some(d) => Some(created_at.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
            None => None,
        };
        let (cache_id, account_id, kind, limited_to) = match scope {
            TokenScope::Cache(id) => (Some(id), None, "cache", None),
            TokenScope::Personal { account_id, limited_to } => (None, Some(account_id), "personal", limited_to),
            TokenScope::Session { account_id } => (None, Some(account_id), "session", None),
        };
        let row = TokenRow {
            id: uuid::Uuid::new_v4().to_string(),
            cache_id,
            account_id,
            kind: kind.to_owned(),
            limited: i64::from(limited_to.is_some()),
            permission: permission.as_str().to_owned(),
            description: description.to_owned(),
            created_at,
            expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        let secret = self.inner.token_keys.issue(&Claims {
            jti: row.id.clone(),
            cache: cache_id,
            account: account_id,
            perm: row.permission.clone(),
            iat: created_at,
            exp: expires_at,
        })?;
        // The secret leaves this function only after the token and its limits are stored
        // (together), so the token never acts beyond them.
        let limited_to = limited_to.unwrap_or_default();
        self.db().insert_token(&row, &limited_to).await?;
        tracing::info!(token_id = %row.id, kind, %permission, "created token");
        Ok(CreatedToken { row, limited_to, secret })
    }

    /// A token for one cache, by name (the operator's admin command).
    pub async fn create_token(
        &self,
        cache_name: &str,
        permission: Permission,
        expires_in: Option<Duration>,
        description: &str,
    ) -> ServiceResult<CreatedToken> {
        let cache: CacheRow = self
            .db()
            .cache_by_name(cache_name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no cache named '{cache_name}'")))?;
        self.issue_token(TokenScope::Cache(cache.id), permission, expires_in, description).await
    }

    pub async fn revoke_token(&self, id: &str) -> ServiceResult<()> {
        if self.db().revoke_token(id).await? {
            tracing::info!(token_id = %id, "revoked token");
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("no token with id '{id}'")))
        }
    }

    /// Revokes a token the caller may see (see [`Services::my_tokens`]). Any other token
    /// answers as if it did not exist.
    pub async fn revoke_own_token(&self, principal: &Principal, id: &str) -> ServiceResult<()> {
        let visible = self.my_tokens(principal).await?.into_iter().any(|t| t.row.id == id);
        if !visible {
            return Err(ServiceError::NotFound(format!("no token with id '{id}'")));
        }
        self.revoke_token(id).await
    }
}

/// A token request from the API.
pub enum TokenRequest {
    /// For one cache the caller administers.
    Cache { cache: String },
    /// For the caller's account, optionally limited to some of its caches.
    Personal { caches: Vec<String> },
}

/// A token as listed: its record and, for a limited personal token, its caches.
pub struct ListedToken {
    pub row: TokenRow,
    pub limited_to: Vec<i64>,
}

impl Services {
    /// Creates a token for the caller, never wider than the caller's own token: its caches
    /// within the caller's, its permission no higher, its expiry no later. (A login session
    /// acts as the account holder, who may create tokens that outlive the session.)
    pub async fn create_token_for(
        &self,
        principal: &Principal,
        request: TokenRequest,
        permission: Permission,
        expires_in: Option<Duration>,
        description: &str,
    ) -> ServiceResult<CreatedToken> {
        let account_id = principal.token_manager()?;
        if !principal.permission.allows(permission) {
            return Err(ServiceError::Forbidden { action: "create a token with more permission than its own", has: principal.permission });
        }
        if !principal.is_session {
            if let Some(limit) = principal.expires_at {
                let expires_at = expires_in.map(|d| now().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
                if expires_at.map_or(true, |t| t > limit) {
                    return Err(ServiceError::Forbidden {
                        action: "create a token that outlives it (set expires_in to end no later than this token's own expires_at)",
                        has: principal.permission,
                    });
                }
            }
        }
        let scope = match request {
            TokenRequest::Cache { cache } => {
                let cache = self.authorize(&cache, Some(principal), Permission::Admin).await?;
                TokenScope::Cache(cache.id)
            }
            TokenRequest::Personal { caches } if caches.is_empty() => {
                if principal.limited_to.is_some() {
                    return Err(ServiceError::Forbidden {
                        action: "create a token for all of the account's caches (it is limited to some: list them in `caches`)",
                        has: principal.permission,
                    });
                }
                TokenScope::Personal { account_id, limited_to: None }
            }
            TokenRequest::Personal { caches } => {
                let mut limited_to = Vec::with_capacity(caches.len());
                for name in &caches {
                    // Another account's cache, or one outside the caller's limits, answers
                    // like one that does not exist.
                    let cache = self.authorize(name, Some(principal), Permission::Admin).await?;
                    limited_to.push(cache.id);
                }
                TokenScope::Personal { account_id, limited_to: Some(limited_to) }
            }
        };
        self.issue_token(scope, permission, expires_in, description).await
    }

    /// The tokens the caller may see, never their secrets: for a session or an unlimited
    /// personal token, every token of the account but its logins; for a token limited to
    /// some caches, the tokens of those caches and the personal tokens limited to (a
    /// non-empty subset of) them.
    pub async fn my_tokens(&self, principal: &Principal) -> ServiceResult<Vec<ListedToken>> {
        let account_id = principal.token_manager()?;
        let rows = self.db().tokens_of(account_id).await?;
        let mut limits = self.db().token_limits_of(account_id).await?;
        let listed = rows.into_iter().map(|row| {
            let limited_to = if row.limited != 0 { limits.remove(&row.id).unwrap_or_default() } else { Vec::new() };
            ListedToken { row, limited_to }
        });
        Ok(match &principal.limited_to {
            None => listed.collect(),
            Some(mine) => listed
                .filter(|t| match (t.row.cache_id, t.row.limited != 0) {
                    (Some(cache_id), _) => mine.contains(&cache_id),
                    (None, true) => !t.limited_to.is_empty() && t.limited_to.iter().all(|c| mine.contains(c)),
                    (None, false) => false,
                })
                .collect(),
        })
    }
}
