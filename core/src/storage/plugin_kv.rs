//! Plugins' key-value stores (the `kv` grant): one namespace per plugin.

use sqlx::Row;

use super::{Result, Storage, read, write};

impl Storage {
    pub async fn plugin_kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>> {
        read!(self, pool => {
            sqlx::query_scalar("SELECT value FROM plugin_kv WHERE plugin = $1 AND key = $2")
                .bind(plugin)
                .bind(key)
                .fetch_optional(pool)
                .await
        })
    }

    /// Stores the value unless the plugin's keys and values would then
    /// exceed `quota_bytes`; `Ok(false)` when over quota.
    pub async fn plugin_kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        quota_bytes: u64,
    ) -> Result<bool> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let used: i64 = sqlx::query_scalar(
                "SELECT COALESCE(SUM(octet_length(key) + octet_length(value)), 0)
                 FROM plugin_kv WHERE plugin = $1 AND key <> $2",
            )
            .bind(plugin)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            let needed = used as u64 + key.len() as u64 + value.len() as u64;
            if needed > quota_bytes {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO plugin_kv (plugin, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
            )
            .bind(plugin)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn plugin_kv_delete(&self, plugin: &str, key: &str) -> Result<()> {
        write!(self, pool => {
            sqlx::query("DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2")
                .bind(plugin)
                .bind(key)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// The plugin's keys starting with `prefix`, in order.
    pub async fn plugin_kv_list(&self, plugin: &str, prefix: &str) -> Result<Vec<String>> {
        read!(self, pool => {
            let rows = sqlx::query("SELECT key FROM plugin_kv WHERE plugin = $1 ORDER BY key")
                .bind(plugin)
                .fetch_all(pool)
                .await?;
            let mut keys = Vec::new();
            for row in rows {
                let key: String = row.try_get("key")?;
                if key.starts_with(prefix) {
                    keys.push(key);
                }
            }
            Ok(keys)
        })
    }
}
