//! Minting, listing and revoking tokens, and login sessions.

use std::time::Duration;

use super::{Principal, ServiceError, ServiceResult, Services};
use crate::auth::Claims;
use crate::db::now;
use crate::domain::{CacheLimit, CacheName, Permission, Token, TokenId, TokenScope};

pub struct CreatedToken {
    pub token: Token,
    /// The token itself: shown once, never stored.
    pub secret: String,
}

/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_DESCRIPTION_BYTES: usize = 200;
/// The longest lifetime a token may be given.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// A token the caller asks for.
pub struct TokenRequest {
    pub target: TokenTarget,
    pub permission: Permission,
    pub expires_in: Option<Duration>,
    pub description: String,
}

/// What a requested token acts on.
pub enum TokenTarget {
    /// One cache the caller administers.
    Cache(CacheName),
    /// The caller's account: all of its caches (empty) or only those named.
    Personal(Vec<CacheName>),
}

impl Services {
    /// Mints a token. The JWT carries its id and scope; the record makes it revocable.
    #[tracing::instrument(skip_all)]
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
        let token = Token {
            id: TokenId::random(),
            scope,
            permission,
            description: description.to_owned(),
            created_at,
            expires_at: expiry(created_at, expires_in)?,
            revoked_at: None,
            last_used_at: None,
        };
        let secret = self.inner.token_keys.issue(&Claims::for_token(&token))?;
        // The secret leaves this function only after the token and its limits are stored
        // (together), so the token never acts beyond them.
        self.db().insert_token(&token).await?;
        tracing::info!(token_id = %token.id, kind = token.scope.kind().as_str(), %permission, "created token");
        Ok(CreatedToken { token, secret })
    }

    /// A token for one cache, by name (the operator's admin command).
    pub async fn create_token(
        &self,
        cache: &CacheName,
        permission: Permission,
        expires_in: Option<Duration>,
        description: &str,
    ) -> ServiceResult<CreatedToken> {
        let cache = self.db().cache_by_name(cache).await?.ok_or_else(|| ServiceError::NotFound(format!("no cache named '{cache}'")))?;
        self.issue_token(TokenScope::Cache(cache.id), permission, expires_in, description).await
    }

    pub async fn revoke_token(&self, id: &TokenId) -> ServiceResult<()> {
        let revoked = self.db().revoke_token(id).await?;
        self.inner.memo.forget_token(id);
        if revoked {
            tracing::info!(token_id = %id, "revoked token");
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("no token with id '{id}'")))
        }
    }

    /// Revokes a token the caller may see (see [`Services::my_tokens`]). Any other token
    /// answers as if it did not exist.
    #[tracing::instrument(skip_all, fields(token = %principal.token_id(), revoked = %id))]
    pub async fn revoke_own_token(&self, principal: &Principal, id: &TokenId) -> ServiceResult<()> {
        if !self.my_tokens(principal).await?.iter().any(|t| t.id == *id) {
            return Err(ServiceError::NotFound(format!("no token with id '{id}'")));
        }
        self.revoke_token(id).await
    }

    /// Creates a token for the caller, never wider than the caller's own token: its caches
    /// within the caller's, its permission no higher, its expiry no later. (A login session
    /// acts as the account holder, who may create tokens that outlive the session.)
    #[tracing::instrument(skip_all, fields(token = %principal.token_id()))]
    pub async fn create_token_for(&self, principal: &Principal, request: TokenRequest) -> ServiceResult<CreatedToken> {
        let account = principal.require_token_manager()?;
        if !principal.permission().allows(request.permission) {
            return Err(ServiceError::Forbidden {
                action: "create a token with more permission than its own",
                has: principal.permission(),
            });
        }
        if let Principal::PersonalToken { expires_at: Some(limit), .. } = principal {
            let expires_at = expiry(now(), request.expires_in)?;
            if expires_at.is_none_or(|t| t > *limit) {
                return Err(ServiceError::Forbidden {
                    action: "create a token that outlives it (set expires_in to end no later than this token's own expires_at)",
                    has: principal.permission(),
                });
            }
        }
        let scope = match request.target {
            TokenTarget::Cache(cache) => TokenScope::Cache(self.authorize(&cache, Some(principal), Permission::Admin).await?.id),
            TokenTarget::Personal(caches) if caches.is_empty() => {
                if principal.is_limited() {
                    return Err(ServiceError::Forbidden {
                        action: "create a token for all of the account's caches (it is limited to some: list them in `caches`)",
                        has: principal.permission(),
                    });
                }
                TokenScope::Personal { account, caches: CacheLimit::All }
            }
            TokenTarget::Personal(names) => {
                let mut caches = Vec::with_capacity(names.len());
                for name in &names {
                    // Another account's cache, or one outside the caller's limits, answers
                    // like one that does not exist.
                    caches.push(self.authorize(name, Some(principal), Permission::Admin).await?.id);
                }
                TokenScope::Personal { account, caches: CacheLimit::Only(caches) }
            }
        };
        self.issue_token(scope, request.permission, request.expires_in, &request.description).await
    }

    /// The tokens the caller may see, never their secrets: for a session or an unlimited
    /// personal token, every token of the account but its logins; for a token limited to
    /// some caches, the tokens of those caches and the personal tokens limited to (a
    /// non-empty subset of) them.
    #[tracing::instrument(skip_all, fields(token = %principal.token_id()))]
    pub async fn my_tokens(&self, principal: &Principal) -> ServiceResult<Vec<Token>> {
        let account = principal.require_token_manager()?;
        let tokens = self.db().tokens_of(account).await?;
        let reach = principal.cache_limit();
        Ok(tokens
            .into_iter()
            .filter(|t| match &t.scope {
                TokenScope::Cache(cache) => reach.includes(*cache),
                // A limited token whose caches are all gone is within no limited token's.
                TokenScope::Personal { caches: CacheLimit::Only(ids), .. } if ids.is_empty() => !principal.is_limited(),
                TokenScope::Personal { caches, .. } => reach.covers(caches),
                TokenScope::Session(_) => false,
            })
            .collect())
    }
}

/// When a token made at `created_at` to live `expires_in` expires.
fn expiry(created_at: i64, expires_in: Option<Duration>) -> ServiceResult<Option<i64>> {
    match expires_in {
        None => Ok(None),
        Some(d) if d.is_zero() => Err(ServiceError::BadRequest("expiry must be in the future".into())),
        Some(d) if d > MAX_TOKEN_LIFETIME => Err(ServiceError::BadRequest("expires_in is at most ten years".into())),
        Some(d) => Ok(Some(created_at.saturating_add(super::clock::whole_secs(d)))),
    }
}
