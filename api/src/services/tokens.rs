//! Minting, listing and revoking tokens, and login sessions.

use std::time::Duration;

use super::{Principal, ServiceError, ServiceResult, Services};
use crate::auth::Claims;
use crate::db::{now, CacheRow, TokenRow};
use crate::domain::Permission;

pub struct CreatedToken {
    pub row: TokenRow,
    /// The token itself: shown once, never stored.
    pub secret: String,
}

/// What a token acts on.
pub enum TokenScope {
    /// One cache.
    Cache(i64),
    /// An account's caches (all of them when `limited_to` is empty).
    Personal { account_id: i64, limited_to: Vec<i64> },
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
            TokenScope::Cache(id) => (Some(id), None, "cache", Vec::new()),
            TokenScope::Personal { account_id, limited_to } => (None, Some(account_id), "personal", limited_to),
            TokenScope::Session { account_id } => (None, Some(account_id), "session", Vec::new()),
        };
        let row = TokenRow {
            id: uuid::Uuid::new_v4().to_string(),
            cache_id,
            account_id,
            kind: kind.to_owned(),
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
        // The secret leaves this function only after its limits are stored, so the token
        // never acts beyond them.
        self.db().insert_token(&row).await?;
        self.db().limit_token_to(&row.id, &limited_to).await?;
        tracing::info!(token_id = %row.id, kind, %permission, "created token");
        Ok(CreatedToken { row, secret })
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

    /// Revokes a token the caller's account controls (its personal tokens, its caches'
    /// tokens). Another account's token answers as if it did not exist.
    pub async fn revoke_own_token(&self, principal: &Principal, id: &str) -> ServiceResult<()> {
        super::caches::require_account_admin(principal)?;
        let account_id = principal.account()?;
        let visible = self.db().tokens_of(account_id).await?.into_iter().any(|t| t.id == id);
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

impl Services {
    pub async fn create_token_for(
        &self,
        principal: &Principal,
        request: TokenRequest,
        permission: Permission,
        expires_in: Option<Duration>,
        description: &str,
    ) -> ServiceResult<CreatedToken> {
        super::caches::require_account_admin(principal)?;
        let scope = match request {
            TokenRequest::Cache { cache } => {
                let cache = self.authorize(&cache, Some(principal), Permission::Admin).await?;
                TokenScope::Cache(cache.id)
            }
            TokenRequest::Personal { caches } => {
                let account_id = principal.account()?;
                let mut limited_to = Vec::with_capacity(caches.len());
                for name in &caches {
                    // Another account's cache answers like one that does not exist.
                    let cache = self.authorize(name, Some(principal), Permission::Admin).await?;
                    limited_to.push(cache.id);
                }
                TokenScope::Personal { account_id, limited_to }
            }
        };
        self.issue_token(scope, permission, expires_in, description).await
    }

    /// The tokens the caller's account controls (never their secrets).
    pub async fn my_tokens(&self, principal: &Principal) -> ServiceResult<Vec<TokenRow>> {
        super::caches::require_account_admin(principal)?;
        Ok(self.db().tokens_of(principal.account()?).await?)
    }
}
