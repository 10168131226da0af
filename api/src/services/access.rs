//! Who is asking, and may they do this to that cache.

use super::{ServiceError, ServiceResult, Services, NO_ACCESS};
use crate::db::{CacheRow, TokenRow};
use crate::domain::{CacheName, Permission};

/// A verified, unrevoked, unexpired token: a cache token, or one acting for an account
/// (a personal token or a login session), maybe limited to some of its caches.
#[derive(Clone, Debug)]
pub struct Principal {
    pub token_id: String,
    pub cache_id: Option<i64>,
    pub account_id: Option<i64>,
    pub permission: Permission,
    /// For personal tokens limited to some caches: the only ones it may act on (maybe none
    /// left, if they were deleted). `None`: all of its account's.
    pub limited_to: Option<Vec<i64>>,
    /// A login session (rather than a personal or cache token).
    pub is_session: bool,
    /// When the token stops working, if ever; a token it creates may not outlive it.
    pub expires_at: Option<i64>,
}

impl Principal {
    /// What this token may do on `cache`, if anything.
    pub fn permission_on(&self, cache: &CacheRow) -> Option<Permission> {
        let own_cache = self.cache_id == Some(cache.id);
        let owners_token = self.account_id.is_some() && cache.owner_id == self.account_id;
        let within_limits = self.limited_to.as_ref().map_or(true, |caches| caches.contains(&cache.id));
        (own_cache || (owners_token && within_limits)).then_some(self.permission)
    }

    /// The account this token acts for (personal tokens and sessions).
    pub fn account(&self) -> ServiceResult<i64> {
        self.account_id.ok_or(ServiceError::Forbidden { action: "manage an account (use a personal token or log in)", has: self.permission })
    }

    /// The account, for what concerns the whole account (its password, its deletion, new
    /// caches): a login session or an unlimited personal admin token, never a token limited
    /// to some caches or a cache token.
    pub fn whole_account_admin(&self) -> ServiceResult<i64> {
        let account_id = self.account()?;
        if self.limited_to.is_some() {
            return Err(ServiceError::Forbidden {
                action: "act on the whole account (it is limited to some caches: log in or use an unlimited personal token)",
                has: self.permission,
            });
        }
        self.require(Permission::Admin, "act on the whole account")?;
        Ok(account_id)
    }

    /// The account, for managing tokens within this token's own reach (a limited token
    /// manages only tokens of its caches): needs admin permission.
    pub fn token_manager(&self) -> ServiceResult<i64> {
        let account_id = self.account()?;
        self.require(Permission::Admin, "manage tokens")?;
        Ok(account_id)
    }

    fn require(&self, needed: Permission, action: &'static str) -> ServiceResult<()> {
        if self.permission.allows(needed) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden { action, has: self.permission })
        }
    }
}

impl Services {
    /// Verifies a presented token against its signature and its database record. A token
    /// that is malformed, forged, expired or revoked is refused outright, whatever it is
    /// used for: that answer does not depend on any cache, so it reveals none.
    pub async fn authenticate(&self, token: Option<&str>) -> ServiceResult<Option<Principal>> {
        const REFUSED: &str = "token refused: it is invalid, expired or revoked";
        let Some(token) = token else {
            return Ok(None);
        };
        let claims = self.inner.token_keys.verify(token).ok_or(ServiceError::Unauthorized(REFUSED))?;
        let row: TokenRow = self.db().token(&claims.jti).await?.ok_or(ServiceError::Unauthorized(REFUSED))?;
        let now = crate::db::now();
        let expired = row.expires_at.is_some_and(|t| t <= now);
        if row.revoked_at.is_some() || expired || row.cache_id != claims.cache || row.account_id != claims.account {
            return Err(ServiceError::Unauthorized(REFUSED));
        }
        let permission = row.permission.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        if let Err(error) = self.db().record_token_use(&row).await {
            tracing::warn!(%error, "could not record token use");
        }
        let limited_to = if row.kind == "personal" && row.limited != 0 { Some(self.db().token_cache_limits(&row.id).await?) } else { None };
        let is_session = row.kind == "session";
        Ok(Some(Principal {
            token_id: row.id,
            cache_id: row.cache_id,
            account_id: row.account_id,
            permission,
            limited_to,
            is_session,
            expires_at: row.expires_at,
        }))
    }

    /// Finds the cache and checks that `principal` may act on it with `needed`.
    /// A cache that does not exist and one the caller may not read answer alike.
    pub async fn authorize(&self, name: &str, principal: Option<&Principal>, needed: Permission) -> ServiceResult<CacheRow> {
        let Ok(name) = CacheName::parse(name) else {
            return Err(ServiceError::Unauthorized(NO_ACCESS));
        };
        let Some(cache) = self.db().cache_by_name(name.as_str()).await? else {
            return Err(ServiceError::Unauthorized(NO_ACCESS));
        };
        let granted = principal.and_then(|p| p.permission_on(&cache));
        match (granted, needed) {
            (Some(has), needed) if has.allows(needed) => Ok(cache),
            (Some(has), _) => Err(ServiceError::Forbidden { action: action(needed), has }),
            (None, Permission::Read) if cache.is_public() => Ok(cache),
            (None, _) => Err(ServiceError::Unauthorized(NO_ACCESS)),
        }
    }
}

fn action(permission: Permission) -> &'static str {
    match permission {
        Permission::Read => "read this cache",
        Permission::Write => "write to this cache",
        Permission::Admin => "administer this cache",
    }
}
