//! Devices: one per login session.

use sqlx::Row;

use super::{Result, Storage, now_ms, read, to_completion, write};

#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

fn device_from_row<R: Row>(row: &R) -> Result<DeviceRecord>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(DeviceRecord {
        device_id: row.try_get("device_id")?,
        display_name: row.try_get("display_name")?,
        last_seen_ts: row.try_get("last_seen_ts")?,
        last_seen_ip: row.try_get("last_seen_ip")?,
    })
}

impl Storage {
    /// Creates the device, or keeps it (and its name) if it already exists.
    pub async fn upsert_device(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        ip: Option<&str>,
    ) -> Result<()> {
        write!(self, pool => {
            sqlx::query(
                "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_ts)
                 VALUES ($1, $2, $3, $4, $5, $4)
                 ON CONFLICT (user_id, device_id) DO UPDATE
                 SET last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(display_name)
            .bind(now_ms())
            .bind(ip)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn devices(&self, user_id: &str) -> Result<Vec<DeviceRecord>> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT device_id, display_name, last_seen_ts, last_seen_ip
                 FROM devices WHERE user_id = $1 ORDER BY device_id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(device_from_row).collect()
        })
    }

    pub async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRecord>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT device_id, display_name, last_seen_ts, last_seen_ip
                 FROM devices WHERE user_id = $1 AND device_id = $2",
            )
            .bind(user_id)
            .bind(device_id)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(device_from_row).transpose()
        })
    }

    /// Renames a device; `Ok(false)` when it does not exist.
    pub async fn rename_device(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<bool> {
        write!(self, pool => {
            let done = sqlx::query(
                "UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3",
            )
            .bind(name)
            .bind(user_id)
            .bind(device_id)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Deletes the devices and, through the foreign keys, their tokens;
    /// their pushers, undelivered to-device messages and keys go with them.
    pub async fn delete_devices(&self, user_id: &str, device_ids: &[String]) -> Result<()> {
        let (this, user_id, device_ids) = (self.clone(), user_id.to_owned(), device_ids.to_vec());
        to_completion(async move { this.delete_devices_inner(&user_id, &device_ids).await }).await
    }

    async fn delete_devices_inner(&self, user_id: &str, device_ids: &[String]) -> Result<()> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            for device_id in device_ids {
                for table in ["devices", "pushers", "to_device_inbox", "device_keys", "one_time_keys", "fallback_keys"] {
                    sqlx::query(sqlx::AssertSqlSafe(&*format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2")))
                        .bind(user_id)
                        .bind(device_id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            self.caches.pushers.invalidate(user_id);
            for device_id in device_ids {
                let device = (user_id.to_owned(), device_id.clone());
                self.caches.key_counts.invalidate(&device);
                self.caches.empty_inboxes.invalidate(&device);
            }
            Ok(())
        })
    }
}
