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
    /// For account tokens: the only caches it may act on; empty means all the account's.
    pub limited_to: Vec<i64>,
    /// A login session (rather than a personal or cache token).
    pub is_session: bool,
}

impl Principal {
    /// What this token may do on `cache`, if anything.
    pub fn permission_on(&self, cache: &CacheRow) -> Option<Permission> {
        let own_cache = self.cache_id == Some(cache.id);
        let owners_token = self.account_id.is_some() && cache.owner_id == self.account_id;
        let within_limits = self.limited_to.is_empty() || self.limited_to.contains(&cache.id);
        (own_cache || (owners_token && within_limits)).then_some(self.permission)
    }

    /// The account this token acts for (personal tokens and sessions).
    pub fn account(&self) -> ServiceResult<i64> {
        self.account_id.ok_or(ServiceError::Forbidden { action: "manage an account (use a personal token or log in)", has: self.permission })
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
        let limited_to = if row.kind == "personal" { self.db().token_cache_limits(&row.id).await? } else { Vec::new() };
        let is_session = row.kind == "session";
        Ok(Some(Principal { token_id: row.id, cache_id: row.cache_id, account_id: row.account_id, permission, limited_to, is_session }))
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
