//! Users' third-party identifiers (`user_threepids`).

use sqlx::Row;

use super::{Result, Storage, is_unique_violation, read, write};

/// One of a user's third-party identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threepid {
    pub medium: String,
    pub address: String,
    pub validated_at: i64,
    pub added_at: i64,
}

impl Storage {
    /// The user's third-party identifiers, by medium and address.
    pub async fn user_threepids(&self, user_id: &str) -> Result<Vec<Threepid>> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT medium, address, validated_at, added_at FROM user_threepids
                 WHERE user_id = $1 ORDER BY medium, address",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(Threepid {
                        medium: row.try_get("medium")?,
                        address: row.try_get("address")?,
                        validated_at: row.try_get("validated_at")?,
                        added_at: row.try_get("added_at")?,
                    })
                })
                .collect()
        })
    }

    /// The user a third-party identifier belongs to.
    pub async fn user_by_threepid(&self, medium: &str, address: &str) -> Result<Option<String>> {
        read!(self, pool => {
            sqlx::query_scalar("SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2")
                .bind(medium)
                .bind(address)
                .fetch_optional(pool)
                .await
        })
    }

    /// Binds an identifier to the user; `Ok(false)` when it belongs to
    /// someone already (or to this user).
    pub async fn add_threepid(&self, user_id: &str, threepid: &Threepid) -> Result<bool> {
        write!(self, pool => {
            let result = sqlx::query(
                "INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user_id)
            .bind(&threepid.medium)
            .bind(&threepid.address)
            .bind(threepid.validated_at)
            .bind(threepid.added_at)
            .execute(pool)
            .await;
            match result {
                Ok(_) => Ok(true),
                Err(err) if is_unique_violation(&err) => Ok(false),
                Err(err) => Err(err),
            }
        })
    }

    /// Removes one of the user's identifiers; `Ok(false)` when the user had
    /// no such identifier.
    pub async fn delete_threepid(
        &self,
        user_id: &str,
        medium: &str,
        address: &str,
    ) -> Result<bool> {
        write!(self, pool => {
            let deleted = sqlx::query(
                "DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3",
            )
            .bind(user_id)
            .bind(medium)
            .bind(address)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(deleted > 0)
        })
    }
}
