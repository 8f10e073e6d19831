//! Which single sign-on session a device logged in through
//! (`device_auth_providers`), for back-channel logout.

use sqlx::Row;

use super::{Result, Storage, read, write};

impl Storage {
    /// Records that the device logged in through `session_id` at
    /// `auth_provider`, replacing what an earlier login of the same device
    /// recorded.
    pub async fn record_device_auth_provider(
        &self,
        user_id: &str,
        device_id: &str,
        auth_provider: &str,
        session_id: &str,
    ) -> Result<()> {
        write!(self, pool => {
            sqlx::query(
                "INSERT INTO device_auth_providers (user_id, device_id, auth_provider_id, auth_provider_session_id)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, device_id) DO UPDATE
                 SET auth_provider_id = excluded.auth_provider_id,
                     auth_provider_session_id = excluded.auth_provider_session_id",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(auth_provider)
            .bind(session_id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The `(user_id, device_id)` pairs that logged in through `auth_provider`:
    /// in the session `session_id` when given, and of `user_id` when given.
    pub async fn devices_by_auth_provider_session(
        &self,
        auth_provider: &str,
        session_id: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT user_id, device_id FROM device_auth_providers
                 WHERE auth_provider_id = $1
                   AND ($2 IS NULL OR auth_provider_session_id = $2)
                   AND ($3 IS NULL OR user_id = $3)
                 ORDER BY user_id, device_id",
            )
            .bind(auth_provider)
            .bind(session_id)
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| Ok((row.try_get("user_id")?, row.try_get("device_id")?)))
                .collect()
        })
    }
}
