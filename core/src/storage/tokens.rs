//! Access and refresh tokens, stored as hashes.

use sqlx::Row;

use super::{Result, Storage, now_ms, read, write};

/// What an access token authenticates.
#[derive(Debug, Clone)]
pub struct AccessTokenRecord {
    pub user_id: String,
    pub device_id: String,
    pub expires_ts: Option<i64>,
    pub is_guest: bool,
    pub shadow_banned: bool,
}

#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    pub user_id: String,
    pub device_id: String,
    pub expires_ts: Option<i64>,
    pub session_end_ts: Option<i64>,
}

impl Storage {
    pub async fn insert_access_token(
        &self,
        token_hash: &str,
        user_id: &str,
        device_id: &str,
        expires_ts: Option<i64>,
        refresh_token_hash: Option<&str>,
    ) -> Result<()> {
        write!(self, pool => {
            sqlx::query(
                "INSERT INTO access_tokens (token_hash, user_id, device_id, expires_ts, refresh_token_hash, created_ts)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(token_hash)
            .bind(user_id)
            .bind(device_id)
            .bind(expires_ts)
            .bind(refresh_token_hash)
            .bind(now_ms())
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn access_token(&self, token_hash: &str) -> Result<Option<AccessTokenRecord>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT t.user_id, t.device_id, t.expires_ts, u.is_guest, u.shadow_banned
                 FROM access_tokens t JOIN users u ON u.user_id = t.user_id
                 WHERE t.token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?;
            row.map(|row| {
                Ok(AccessTokenRecord {
                    user_id: row.try_get("user_id")?,
                    device_id: row.try_get("device_id")?,
                    expires_ts: row.try_get("expires_ts")?,
                    is_guest: row.try_get("is_guest")?,
                    shadow_banned: row.try_get("shadow_banned")?,
                })
            })
            .transpose()
        })
    }

    pub async fn insert_refresh_token(
        &self,
        token_hash: &str,
        user_id: &str,
        device_id: &str,
        expires_ts: Option<i64>,
        session_end_ts: Option<i64>,
    ) -> Result<()> {
        write!(self, pool => {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, expires_ts, session_end_ts)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash)
            .bind(user_id)
            .bind(device_id)
            .bind(expires_ts)
            .bind(session_end_ts)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Removes a refresh token and the access tokens issued with it, returning
    /// what it was for: a refresh token is good for one use.
    pub async fn take_refresh_token(&self, token_hash: &str) -> Result<Option<RefreshTokenRecord>> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = sqlx::query(
                "DELETE FROM refresh_tokens WHERE token_hash = $1
                 RETURNING user_id, device_id, expires_ts, session_end_ts",
            )
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM access_tokens WHERE refresh_token_hash = $1")
                .bind(token_hash)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            row.map(|row| {
                Ok(RefreshTokenRecord {
                    user_id: row.try_get("user_id")?,
                    device_id: row.try_get("device_id")?,
                    expires_ts: row.try_get("expires_ts")?,
                    session_end_ts: row.try_get("session_end_ts")?,
                })
            })
            .transpose()
        })
    }

    /// The IDs of the user's devices other than `keep` (all of them when `None`).
    pub async fn other_device_ids(&self, user_id: &str, keep: Option<&str>) -> Result<Vec<String>> {
        read!(self, pool => {
            sqlx::query_scalar(
                "SELECT device_id FROM devices WHERE user_id = $1 AND device_id <> $2",
            )
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .fetch_all(pool)
            .await
        })
    }

    /// Revokes every token of one device; the device (and its keys) stays.
    pub async fn revoke_device_tokens(&self, user_id: &str, device_id: &str) -> Result<()> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            for table in ["access_tokens", "refresh_tokens"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"
                )))
                .bind(user_id)
                .bind(device_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
