//! Minting and revoking tokens.

use std::time::Duration;

use super::{ServiceError, ServiceResult, Services};
use crate::auth::Claims;
use crate::db::{now, TokenRow};
use crate::domain::Permission;

pub struct CreatedToken {
    pub row: TokenRow,
    /// The token itself: shown once, never stored.
    pub secret: String,
}

impl Services {
    pub async fn create_token(
        &self,
        cache_name: &str,
        permission: Permission,
        expires_in: Option<Duration>,
        description: &str,
    ) -> ServiceResult<CreatedToken> {
        let cache = self
            .db()
            .cache_by_name(cache_name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no cache named '{cache_name}'")))?;
        if description.len() > 200 {
            return Err(ServiceError::BadRequest("description is longer than 200 bytes".into()));
        }
        let created_at = now();
        let expires_at = match expires_in {
            Some(d) if d.is_zero() => return Err(ServiceError::BadRequest("expiry must be in the future".into())),
            Some(d) => Some(created_at.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
            None => None,
        };
        let row = TokenRow {
            id: uuid::Uuid::new_v4().to_string(),
            cache_id: Some(cache.id),
            permission: permission.as_str().to_owned(),
            description: description.to_owned(),
            created_at,
            expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        let secret = self.inner.token_keys.issue(&Claims {
            jti: row.id.clone(),
            cache: cache.id,
            perm: row.permission.clone(),
            iat: created_at,
            exp: expires_at,
        })?;
        self.db().insert_token(&row).await?;
        tracing::info!(token_id = %row.id, cache = %cache.name, %permission, "created token");
        Ok(CreatedToken { row, secret })
    }

    pub async fn revoke_token(&self, id: &str) -> ServiceResult<()> {
        if self.db().revoke_token(id).await? {
            tracing::info!(token_id = %id, "revoked token");
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("no token with id '{id}'")))
        }
    }
}
