//! Who is asking, and may they do this to that cache.

use super::{ServiceError, ServiceResult, Services, NO_ACCESS};
use crate::db::{CacheRow, TokenRow};
use crate::domain::{CacheName, Permission};

/// A verified, unrevoked, unexpired token.
#[derive(Clone, Debug)]
pub struct Principal {
    pub token_id: String,
    pub cache_id: i64,
    pub permission: Permission,
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
        if row.revoked_at.is_some() || expired || row.cache_id != Some(claims.cache) {
            return Err(ServiceError::Unauthorized(REFUSED));
        }
        let permission = row.permission.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        if let Err(error) = self.db().record_token_use(&row).await {
            tracing::warn!(%error, "could not record token use");
        }
        Ok(Some(Principal { token_id: row.id, cache_id: claims.cache, permission }))
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
        let own = principal.filter(|p| p.cache_id == cache.id);
        match (own, needed) {
            (Some(p), needed) if p.permission.allows(needed) => Ok(cache),
            (Some(p), _) => Err(ServiceError::Forbidden { action: action(needed), has: p.permission }),
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
