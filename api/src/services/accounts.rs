//! Accounts: sign up, log in and out, change password, delete.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::tokens::SESSION_LIFETIME;
use super::{CreatedToken, Principal, ServiceError, ServiceResult, Services};
use crate::auth::password;
use crate::db::AccountConflict;
use crate::domain::TokenScope;
use crate::domain::{Account, Email, NewPassword, Permission, Username, MAX_PASSWORD_BYTES};

/// Login attempts allowed per minute. The tight limit is per (account, client address),
/// so that an attacker guessing from elsewhere cannot lock the owner out; the per-account
/// limit is looser and only trips when many addresses guess at one account at once.
const LOGINS_PER_MINUTE_PER_ACCOUNT_AND_IP: u32 = 10;
const LOGINS_PER_MINUTE_PER_IP: u32 = 30;
const LOGINS_PER_MINUTE_PER_ACCOUNT: u32 = 100;

/// Throttles password guessing. Per server node: with N nodes an attacker gets N times the
/// budget, which still makes online guessing of a 10+ character password hopeless.
pub struct LoginLimiter {
    per_account_and_ip: DefaultKeyedRateLimiter<(String, Option<IpAddr>)>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        let per_minute = |n| Quota::per_minute(NonZeroU32::new(n).expect("non-zero quota"));
        Self {
            per_account_and_ip: RateLimiter::keyed(per_minute(LOGINS_PER_MINUTE_PER_ACCOUNT_AND_IP)),
            per_ip: RateLimiter::keyed(per_minute(LOGINS_PER_MINUTE_PER_IP)),
            per_account: RateLimiter::keyed(per_minute(LOGINS_PER_MINUTE_PER_ACCOUNT)),
        }
    }
}

impl LoginLimiter {
    /// True if this attempt is over one of the limits (each check spends from its budget).
    fn throttled(&self, username: &str, client: Option<IpAddr>) -> bool {
        self.forget_idle();
        // In this order, so that an address over its own limits spends nothing of the
        // account's shared budget.
        self.per_account_and_ip.check_key(&(username.to_owned(), client)).is_err()
            || client.is_some_and(|ip| self.per_ip.check_key(&ip).is_err())
            || self.per_account.check_key(&username.to_owned()).is_err()
    }

    /// Keeps the per-key state from growing without bound under a spray of usernames.
    fn forget_idle(&self) {
        if self.per_account_and_ip.len() > 10_000 || self.per_account.len() > 10_000 || self.per_ip.len() > 10_000 {
            self.per_account_and_ip.retain_recent();
            self.per_account.retain_recent();
            self.per_ip.retain_recent();
        }
    }
}

const BAD_LOGIN: &str = "wrong username or password";

impl Services {
    #[tracing::instrument(skip_all, fields(account = %username))]
    pub async fn sign_up(&self, username: &str, email: &str, password: &str) -> ServiceResult<Account> {
        let username = Username::parse(username).map_err(ServiceError::BadRequest)?;
        let email = Email::parse(email).map_err(ServiceError::BadRequest)?;
        let password = NewPassword::parse(password, username.as_str()).map_err(ServiceError::BadRequest)?;
        let hash = password::hash(password.expose().to_owned()).await?;
        match self.db().create_account(&username, &email, &hash).await? {
            Ok(account) => {
                tracing::info!("signed up");
                Ok(account)
            }
            Err(AccountConflict::Username) => Err(ServiceError::Conflict(format!("the username '{username}' is taken"))),
            Err(AccountConflict::Email) => Err(ServiceError::Conflict("an account with this email exists".into())),
        }
    }

    /// Checks a username and password and opens a session (a token acting for the
    /// account). An unknown user and a wrong password answer alike, in similar time.
    #[tracing::instrument(skip_all)]
    pub async fn log_in(&self, username: &str, password: &str, client: Option<IpAddr>) -> ServiceResult<CreatedToken> {
        if self.inner.login_limiter.throttled(username, client) {
            return Err(ServiceError::TooManyRequests { message: "too many login attempts: wait a minute and try again", retry_after: 60 });
        }
        // A name that cannot exist is not looked up (Postgres refuses some bytes, e.g. NUL),
        // but costs the same hash, so it answers like any unknown user.
        let account = match Username::parse(username) {
            Ok(name) if password.len() <= MAX_PASSWORD_BYTES => self.db().account_by_username(&name).await?,
            _ => None,
        };
        let stored = account.as_ref().map(|a| a.password_hash.clone());
        let matches = password::verify(password.to_owned(), stored).await?;
        let Some(account) = account.filter(|_| matches) else {
            return Err(ServiceError::Unauthorized(BAD_LOGIN));
        };
        self.issue_token(TokenScope::Session(account.id), Permission::Admin, Some(SESSION_LIFETIME), "login").await
    }

    /// Ends the session the request was made with (personal tokens are revoked by id).
    pub async fn log_out(&self, principal: &Principal) -> ServiceResult<()> {
        match principal {
            Principal::Session { token, .. } => self.revoke_token(token).await,
            Principal::PersonalToken { .. } => {
                Err(ServiceError::BadRequest("this is not a login session: revoke a personal token by its id".into()))
            }
            Principal::CacheToken { .. } => principal.account().map(|_| ()),
        }
    }

    /// The caller's account.
    pub async fn account(&self, principal: &Principal) -> ServiceResult<Account> {
        let id = principal.account()?;
        self.db().account_by_id(id).await?.ok_or(ServiceError::Unauthorized(super::NO_ACCESS))
    }

    /// Needs the current password too, so a stolen session cannot lock the owner out.
    #[tracing::instrument(skip_all, fields(token = %principal.token_id()))]
    pub async fn change_password(&self, principal: &Principal, current: &str, new: &str) -> ServiceResult<()> {
        principal.require_account_admin()?;
        let account = self.account(principal).await?;
        let new = NewPassword::parse(new, account.username.as_str()).map_err(ServiceError::BadRequest)?;
        if !password::verify(current.to_owned(), Some(account.password_hash.clone())).await? {
            return Err(ServiceError::BadRequest("the current password is wrong".into()));
        }
        let hash = password::hash(new.expose().to_owned()).await?;
        self.db().set_password_hash(account.id, &hash).await?;
        // Whoever else was logged in with the old password is logged out.
        self.db().revoke_sessions_of(account.id, principal.token_id()).await?;
        self.inner.memo.forget_all_tokens();
        Ok(())
    }

    /// Deletes the account with its caches and tokens. `confirm` must repeat the username.
    #[tracing::instrument(skip_all, fields(token = %principal.token_id()))]
    pub async fn delete_account(&self, principal: &Principal, confirm: &str) -> ServiceResult<()> {
        principal.require_account_admin()?;
        let account = self.account(principal).await?;
        if confirm != account.username.as_str() {
            return Err(ServiceError::BadRequest("to delete the account, confirm with its username".into()));
        }
        self.db().delete_account(account.id, self.storage_delete_due()).await?;
        self.inner.memo.forget_all_tokens();
        self.inner.memo.forget_all_caches();
        self.reclaim_soon();
        tracing::info!(account = %account.username, "deleted account");
        Ok(())
    }
}
