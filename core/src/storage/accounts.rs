//! Users and their profiles.

use sqlx::Row;

use super::{Result, Storage, now_ms, read, write};

/// A user as the auth code needs to see it.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub deactivated: bool,
}

/// Everything needed to create an account.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub user_type: Option<String>,
    pub displayname: Option<String>,
}

impl Storage {
    /// Creates the user and their profile; `Ok(false)` when the ID is taken.
    pub async fn create_user(&self, user: &NewUser) -> Result<bool> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO users (user_id, password_hash, is_admin, is_guest, user_type, created_ts)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(&user.user_id)
            .bind(&user.password_hash)
            .bind(user.is_admin)
            .bind(user.is_guest)
            .bind(&user.user_type)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            sqlx::query("INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)")
                .bind(&user.user_id)
                .bind(&user.displayname)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn user(&self, user_id: &str) -> Result<Option<UserRecord>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT user_id, password_hash, is_admin, is_guest, deactivated
                 FROM users WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| {
                Ok(UserRecord {
                    user_id: row.try_get("user_id")?,
                    password_hash: row.try_get("password_hash")?,
                    is_admin: row.try_get("is_admin")?,
                    is_guest: row.try_get("is_guest")?,
                    deactivated: row.try_get("deactivated")?,
                })
            })
            .transpose()
        })
    }

    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<()> {
        write!(self, pool => {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
                .bind(hash)
                .bind(user_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Marks the account deactivated and removes every device and token.
    pub async fn deactivate_user(&self, user_id: &str) -> Result<()> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE users SET deactivated = $1 WHERE user_id = $2")
                .bind(true)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM devices WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn displayname(&self, user_id: &str) -> Result<Option<String>> {
        read!(self, pool => {
            sqlx::query_scalar("SELECT displayname FROM profiles WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await
                .map(Option::flatten)
        })
    }
}
