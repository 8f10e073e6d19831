//! Users' identities at single sign-on providers (`user_external_ids`).

use sqlx::Row;

use super::{Result, Storage, read, write};

impl Storage {
    /// The user that `external_id` at `auth_provider` was mapped to.
    pub async fn user_by_external_id(
        &self,
        auth_provider: &str,
        external_id: &str,
    ) -> Result<Option<String>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT user_id FROM user_external_ids WHERE auth_provider = $1 AND external_id = $2",
            )
            .bind(auth_provider)
            .bind(external_id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| row.try_get("user_id")).transpose()
        })
    }

    /// Records that `external_id` at `auth_provider` is `user_id`.
    pub async fn record_external_id(
        &self,
        auth_provider: &str,
        external_id: &str,
        user_id: &str,
    ) -> Result<()> {
        write!(self, pool => {
            sqlx::query(
                "INSERT INTO user_external_ids (auth_provider, external_id, user_id) VALUES ($1, $2, $3)",
            )
            .bind(auth_provider)
            .bind(external_id)
            .bind(user_id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }
}
