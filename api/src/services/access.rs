//! Who is asking, and may they do this to that cache.

use std::sync::Arc;

use super::{ServiceError, ServiceResult, Services, NO_ACCESS};
use crate::domain::{AccountId, Cache, CacheLimit, CacheName, Permission, Token, TokenId, TokenScope};

/// A verified, unrevoked, unexpired token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Acts on one cache.
    CacheToken { token: TokenId, cache: crate::domain::CacheId, permission: Permission },
    /// Acts for an account, on all of its caches or only on some.
    PersonalToken { token: TokenId, account: AccountId, caches: CacheLimit, permission: Permission, expires_at: Option<i64> },
    /// A login: the account holder, with admin permission on all of its caches.
    Session { token: TokenId, account: AccountId },
}

impl Principal {
    pub fn token_id(&self) -> &TokenId {
        match self {
            Principal::CacheToken { token, .. } | Principal::PersonalToken { token, .. } | Principal::Session { token, .. } => token,
        }
    }

    pub fn permission(&self) -> Permission {
        match self {
            Principal::CacheToken { permission, .. } | Principal::PersonalToken { permission, .. } => *permission,
            Principal::Session { .. } => Permission::Admin,
        }
    }

    /// What this token may do on `cache`, if anything.
    pub fn permission_on(&self, cache: &Cache) -> Option<Permission> {
        match self {
            Principal::CacheToken { cache: id, permission, .. } => (*id == cache.id).then_some(*permission),
            Principal::PersonalToken { account, caches, permission, .. } => {
                (cache.owner == Some(*account) && caches.includes(cache.id)).then_some(*permission)
            }
            Principal::Session { account, .. } => (cache.owner == Some(*account)).then_some(Permission::Admin),
        }
    }

    /// The account this token acts for (personal tokens and sessions).
    pub fn account(&self) -> ServiceResult<AccountId> {
        match self {
            Principal::PersonalToken { account, .. } | Principal::Session { account, .. } => Ok(*account),
            Principal::CacheToken { permission, .. } => {
                Err(ServiceError::Forbidden { action: "manage an account (use a personal token or log in)", has: *permission })
            }
        }
    }

    /// True for a personal token limited to some caches (and for a cache token, which
    /// reaches none of its account's caches that way).
    pub fn is_limited(&self) -> bool {
        !matches!(self, Principal::Session { .. } | Principal::PersonalToken { caches: CacheLimit::All, .. })
    }

    /// The caches of its account this token reaches (a cache token reaches none that way).
    pub fn cache_limit(&self) -> CacheLimit {
        match self {
            Principal::PersonalToken { caches, .. } => caches.clone(),
            Principal::Session { .. } => CacheLimit::All,
            Principal::CacheToken { .. } => CacheLimit::Only(Vec::new()),
        }
    }

    /// The account, for what concerns the whole account (its password, its deletion, new
    /// caches): a login session or an unlimited personal admin token, never a token limited
    /// to some caches or a cache token.
    pub fn require_account_admin(&self) -> ServiceResult<AccountId> {
        let account = self.account()?;
        if self.is_limited() {
            return Err(ServiceError::Forbidden {
                action: "act on the whole account (it is limited to some caches: log in or use an unlimited personal token)",
                has: self.permission(),
            });
        }
        self.require(Permission::Admin, "act on the whole account")?;
        Ok(account)
    }

    /// The account, for managing tokens within this token's own reach (a limited token
    /// manages only tokens of its caches): needs admin permission.
    pub fn require_token_manager(&self) -> ServiceResult<AccountId> {
        let account = self.account()?;
        self.require(Permission::Admin, "manage tokens")?;
        Ok(account)
    }

    fn require(&self, needed: Permission, action: &'static str) -> ServiceResult<()> {
        if self.permission().allows(needed) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden { action, has: self.permission() })
        }
    }
}

impl Services {
    /// Verifies a presented token against its signature and its database record. A token
    /// that is malformed, forged, expired or revoked is refused outright, whatever it is
    /// used for: that answer does not depend on any cache, so it reveals none.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn authenticate(&self, token: Option<&str>) -> ServiceResult<Option<Principal>> {
        const REFUSED: &str = "token refused: it is invalid, expired or revoked";
        let Some(token) = token else {
            return Ok(None);
        };
        let claims = self.inner.token_keys.verify(token).ok_or(ServiceError::Unauthorized(REFUSED))?;
        let record = self.token_record(TokenId::from_presented(&claims.jti)).await?.ok_or(ServiceError::Unauthorized(REFUSED))?;
        let now = crate::db::now();
        let expired = record.expires_at.is_some_and(|t| t <= now);
        if record.revoked_at.is_some() || expired || !claims.matches(&record.scope) {
            return Err(ServiceError::Unauthorized(REFUSED));
        }
        self.inner.memo.record_use(&record.id, now);
        let token = record.id.clone();
        Ok(Some(match &record.scope {
            TokenScope::Cache(cache) => Principal::CacheToken { token, cache: *cache, permission: record.permission },
            TokenScope::Personal { account, caches } => Principal::PersonalToken {
                token,
                account: *account,
                caches: caches.clone(),
                permission: record.permission,
                expires_at: record.expires_at,
            },
            TokenScope::Session(account) => Principal::Session { token, account: *account },
        }))
    }

    /// A token's record, remembered for a while (see `memo`).
    async fn token_record(&self, id: TokenId) -> ServiceResult<Option<Arc<Token>>> {
        if let Some(remembered) = self.inner.memo.token(&id) {
            return Ok(remembered);
        }
        let record = self.db().token(&id).await?.map(Arc::new);
        self.inner.memo.remember_token(id, record.clone());
        Ok(record)
    }

    /// A cache by name, remembered for a while (see `memo`).
    pub(super) async fn cache_named(&self, name: &CacheName) -> ServiceResult<Option<Arc<Cache>>> {
        if let Some(remembered) = self.inner.memo.cache(name) {
            return Ok(remembered);
        }
        let cache = self.db().cache_by_name(name).await?.map(Arc::new);
        self.inner.memo.remember_cache(name.clone(), cache.clone());
        Ok(cache)
    }

    /// Finds the cache and checks that `principal` may act on it with `needed`.
    /// A cache that does not exist and one the caller may not read answer alike.
    pub async fn authorize(&self, name: &CacheName, principal: Option<&Principal>, needed: Permission) -> ServiceResult<Cache> {
        let Some(cache) = self.cache_named(name).await? else {
            return Err(ServiceError::Unauthorized(NO_ACCESS));
        };
        let granted = principal.and_then(|p| p.permission_on(&cache));
        match (granted, needed) {
            (Some(has), needed) if has.allows(needed) => Ok((*cache).clone()),
            (Some(has), _) => Err(ServiceError::Forbidden { action: action(needed), has }),
            (None, Permission::Read) if cache.public => Ok((*cache).clone()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CacheId, SigningMode};

    fn cache(id: i64, owner: Option<i64>) -> Cache {
        Cache {
            id: CacheId(id),
            name: CacheName::parse(&format!("cache-{id}")).unwrap(),
            owner: owner.map(AccountId),
            public: false,
            priority: 41,
            signing_mode: SigningMode::Server,
            description: String::new(),
            created_at: 0,
            gc: Default::default(),
            compression: crate::domain::NarEncoding::Zstd,
        }
    }

    fn token() -> TokenId {
        TokenId::from_presented("t")
    }

    fn personal(caches: CacheLimit, permission: Permission) -> Principal {
        Principal::PersonalToken { token: token(), account: AccountId(1), caches, permission, expires_at: None }
    }

    #[test]
    fn a_cache_token_acts_on_its_cache_only() {
        let principal = Principal::CacheToken { token: token(), cache: CacheId(7), permission: Permission::Write };
        assert_eq!(principal.permission_on(&cache(7, Some(1))), Some(Permission::Write));
        assert_eq!(principal.permission_on(&cache(8, Some(1))), None);
        assert!(principal.account().is_err() && principal.require_account_admin().is_err());
    }

    #[test]
    fn a_personal_token_acts_on_its_accounts_caches_within_its_limit() {
        let all = personal(CacheLimit::All, Permission::Read);
        assert_eq!(all.permission_on(&cache(7, Some(1))), Some(Permission::Read));
        assert_eq!(all.permission_on(&cache(8, Some(2))), None, "another account's cache");
        assert_eq!(all.permission_on(&cache(9, None)), None, "an operator's cache");

        let some = personal(CacheLimit::Only(vec![CacheId(7)]), Permission::Admin);
        assert_eq!(some.permission_on(&cache(7, Some(1))), Some(Permission::Admin));
        assert_eq!(some.permission_on(&cache(8, Some(1))), None);

        let none_left = personal(CacheLimit::Only(vec![]), Permission::Admin);
        assert_eq!(none_left.permission_on(&cache(7, Some(1))), None, "a limit that lost its caches reaches nothing");
    }

    #[test]
    fn only_sessions_and_unlimited_admin_tokens_act_on_the_whole_account() {
        let session = Principal::Session { token: token(), account: AccountId(1) };
        assert_eq!(session.permission_on(&cache(7, Some(1))), Some(Permission::Admin));
        assert_eq!(session.require_account_admin().unwrap(), AccountId(1));
        assert_eq!(personal(CacheLimit::All, Permission::Admin).require_account_admin().unwrap(), AccountId(1));
        assert!(personal(CacheLimit::All, Permission::Write).require_account_admin().is_err());
        let limited = personal(CacheLimit::Only(vec![CacheId(7)]), Permission::Admin);
        assert!(limited.require_account_admin().is_err());
        assert_eq!(limited.require_token_manager().unwrap(), AccountId(1), "it manages the tokens of its caches");
        assert!(personal(CacheLimit::All, Permission::Read).require_token_manager().is_err());
    }
}
