//! Accounts.

use sqlx::FromRow;

use super::{now, Database};

#[derive(Clone, Debug, FromRow)]
pub struct AccountRow {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub created_at: i64,
}

/// Why an account could not be created.
#[derive(Debug, PartialEq, Eq)]
pub enum AccountConflict {
    Username,
    Email,
}

const ACCOUNT_COLUMNS: &str = "id, username, email, password_hash, created_at";

impl Database {
    pub async fn create_account(&self, username: &str, email: &str, password_hash: &str) -> anyhow::Result<Result<AccountRow, AccountConflict>> {
        let row: Option<AccountRow> = sqlx::query_as(&format!(
            "INSERT INTO accounts (username, email, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING RETURNING {ACCOUNT_COLUMNS}"
        ))
        .bind(username)
        .bind(email)
        .bind(password_hash)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Ok(row)),
            None if self.account_by_username(username).await?.is_some() => Ok(Err(AccountConflict::Username)),
            None => Ok(Err(AccountConflict::Email)),
        }
    }

    pub async fn account_by_username(&self, username: &str) -> anyhow::Result<Option<AccountRow>> {
        Ok(sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = $1"))
            .bind(username)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn account_by_id(&self, id: i64) -> anyhow::Result<Option<AccountRow>> {
        Ok(sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_password_hash(&self, account_id: i64, password_hash: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE accounts SET password_hash = $2 WHERE id = $1")
            .bind(account_id)
            .bind(password_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the account; its caches, their paths and every token go with it (cascade).
    pub async fn delete_account(&self, account_id: i64) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM accounts WHERE id = $1").bind(account_id).execute(&self.pool).await?;
        Ok(())
    }
}
