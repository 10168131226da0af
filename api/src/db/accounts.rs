//! Accounts.

use anyhow::Context;
use sqlx::FromRow;

use super::{now, Database};
use crate::domain::{Account, AccountId, Email, Username};

#[derive(FromRow)]
struct AccountRow {
    id: i64,
    username: String,
    email: String,
    password_hash: String,
    created_at: i64,
}

impl TryFrom<AccountRow> for Account {
    type Error = anyhow::Error;

    fn try_from(row: AccountRow) -> anyhow::Result<Self> {
        let corrupt = |what: &str, reason: String| anyhow::anyhow!("account row {} has a bad {what}: {reason}", row.id);
        Ok(Account {
            id: AccountId(row.id),
            username: Username::parse(&row.username).map_err(|e| corrupt("username", e))?,
            email: Email::parse(&row.email).map_err(|e| corrupt("email", e))?,
            password_hash: row.password_hash,
            created_at: row.created_at,
        })
    }
}

/// Why an account could not be created.
#[derive(Debug, PartialEq, Eq)]
pub enum AccountConflict {
    Username,
    Email,
}

const ACCOUNT_COLUMNS: &str = "id, username, email, password_hash, created_at";

impl Database {
    pub async fn create_account(
        &self,
        username: &Username,
        email: &Email,
        password_hash: &str,
    ) -> anyhow::Result<Result<Account, AccountConflict>> {
        let row: Option<AccountRow> = sqlx::query_as(&format!(
            "INSERT INTO accounts (username, email, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING RETURNING {ACCOUNT_COLUMNS}"
        ))
        .bind(username.as_str())
        .bind(email.as_str())
        .bind(password_hash)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Ok(row.try_into()?)),
            None if self.account_by_username(username).await?.is_some() => Ok(Err(AccountConflict::Username)),
            None => Ok(Err(AccountConflict::Email)),
        }
    }

    pub async fn account_by_username(&self, username: &Username) -> anyhow::Result<Option<Account>> {
        let row: Option<AccountRow> = sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = $1"))
            .bind(username.as_str())
            .fetch_optional(&self.pool)
            .await
            .context("reading an account")?;
        row.map(Account::try_from).transpose()
    }

    pub async fn account_by_id(&self, id: AccountId) -> anyhow::Result<Option<Account>> {
        let row: Option<AccountRow> = sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .context("reading an account")?;
        row.map(Account::try_from).transpose()
    }

    pub async fn set_password_hash(&self, account: AccountId, password_hash: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE accounts SET password_hash = $2 WHERE id = $1").bind(account.0).bind(password_hash).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes the account; its caches, their paths and every token go with it (cascade).
    /// Deletes the account and, by cascade, its caches and everything theirs; their build
    /// logs' objects are queued for deletion in the same transaction (NARs are reclaimed by
    /// the next sweep of unheld NARs).
    pub async fn delete_account(&self, account: AccountId, storage_delete_due: i64) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO storage_deletes (storage_key, due_at) SELECT l.storage_key, $2 FROM build_logs l \
             JOIN caches c ON c.id = l.cache_id WHERE c.owner_id = $1",
        )
        .bind(account.0)
        .bind(storage_delete_due)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM accounts WHERE id = $1").bind(account.0).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
