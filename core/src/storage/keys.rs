//! The keys devices publish for end-to-end encryption: identity keys,
//! one-time and fallback keys, cross-signing keys and detached signatures.
//! Each key is stored as the JSON text its owner uploaded.

use std::collections::HashMap;

use sqlx::Row;

use super::{Result, Storage, read, to_completion, write};

/// A one-time or fallback key: `<algorithm>:<key_id>` and its JSON.
#[derive(Debug, Clone)]
pub struct OneTimeKeyRow {
    pub algorithm: String,
    pub key_id: String,
    pub json: String,
}

/// A device's identity keys, with the device's display name.
#[derive(Debug, Clone)]
pub struct DeviceKeysRow {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    pub json: String,
}

#[derive(Debug, Clone)]
pub struct CrossSigningKeyRow {
    pub user_id: String,
    /// `master`, `self_signing` or `user_signing`.
    pub key_type: String,
    pub public_key: String,
    pub json: String,
}

/// A signature made by `signer_key_id` of `signer_user_id` over the key
/// `target_key_id` (a device ID or a cross-signing public key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySignatureRow {
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub target_user_id: String,
    pub target_key_id: String,
    pub signature: String,
}

/// One-time keys left per algorithm, and the algorithms whose fallback key
/// has not been handed out yet.
#[derive(Debug, Clone, Default)]
pub struct KeyCounts {
    pub one_time: Vec<(String, i64)>,
    pub unused_fallback: Vec<String>,
}

/// `IN ($first, $first + 1, ...)` for `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Storage {
    pub async fn device_keys(&self, user_id: &str, device_id: &str) -> Result<Option<String>> {
        read!(self, pool => {
            sqlx::query_scalar("SELECT json FROM device_keys WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(pool)
                .await
        })
    }

    /// Stores a device's identity keys, replacing what it had.
    pub async fn set_device_keys(&self, user_id: &str, device_id: &str, json: &str) -> Result<()> {
        write!(self, pool => {
            sqlx::query(
                "INSERT INTO device_keys (user_id, device_id, json) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET json = excluded.json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(json)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The identity keys of the users' devices that still exist.
    pub async fn device_keys_of(&self, user_ids: &[String]) -> Result<Vec<DeviceKeysRow>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT k.user_id, k.device_id, d.display_name, k.json
             FROM device_keys k JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
             WHERE k.user_id IN ({}) ORDER BY k.user_id, k.device_id",
            placeholders(1, user_ids.len())
        );
        read!(self, pool => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(&*sql));
            for user in user_ids {
                query = query.bind(user);
            }
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(DeviceKeysRow {
                        user_id: row.try_get("user_id")?,
                        device_id: row.try_get("device_id")?,
                        display_name: row.try_get("display_name")?,
                        json: row.try_get("json")?,
                    })
                })
                .collect()
        })
    }

    /// The device's stored one-time keys among `keys`, by `(algorithm, key_id)`.
    pub async fn existing_one_time_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[OneTimeKeyRow],
    ) -> Result<HashMap<(String, String), String>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        // One query for the whole upload (clients send dozens of keys).
        let sql = format!(
            "SELECT algorithm, key_id, json FROM one_time_keys
             WHERE user_id = $1 AND device_id = $2 AND algorithm || ':' || key_id IN ({})",
            placeholders(3, keys.len())
        );
        read!(self, pool => {
            let mut query = sqlx::query_as::<_, (String, String, String)>(sqlx::AssertSqlSafe(&*sql))
                .bind(user_id)
                .bind(device_id);
            for key in keys {
                query = query.bind(format!("{}:{}", key.algorithm, key.key_id));
            }
            let rows = query.fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|(algorithm, key_id, json)| ((algorithm, key_id), json))
                .collect())
        })
    }

    /// Adds one-time keys (a key already stored is left as it is) and
    /// replaces the fallback keys of the algorithms given.
    pub async fn add_device_keys(
        &self,
        user_id: &str,
        device_id: &str,
        one_time: &[OneTimeKeyRow],
        fallback: &[OneTimeKeyRow],
    ) -> Result<()> {
        let this = self.clone();
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let (one_time, fallback) = (one_time.to_vec(), fallback.to_vec());
        to_completion(async move {
            this.add_device_keys_inner(&user_id, &device_id, &one_time, &fallback)
                .await
        })
        .await
    }

    async fn add_device_keys_inner(
        &self,
        user_id: &str,
        device_id: &str,
        one_time: &[OneTimeKeyRow],
        fallback: &[OneTimeKeyRow],
    ) -> Result<()> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            for key in one_time {
                sqlx::query(
                    "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, json)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(&key.algorithm)
                .bind(&key.key_id)
                .bind(&key.json)
                .execute(&mut *tx)
                .await?;
            }
            for key in fallback {
                sqlx::query(
                    "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, json, used)
                     VALUES ($1, $2, $3, $4, $5, 0)
                     ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
                     SET key_id = excluded.key_id, json = excluded.json, used = 0",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(&key.algorithm)
                .bind(&key.key_id)
                .bind(&key.json)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            self.caches
                .key_counts
                .invalidate(&(user_id.to_owned(), device_id.to_owned()));
            Ok(())
        })
    }

    /// What `/sync` and `/keys/upload` report about a device's keys.
    pub async fn key_counts(&self, user_id: &str, device_id: &str) -> Result<KeyCounts> {
        self.caches
            .key_counts
            .get_or_load(&(user_id.to_owned(), device_id.to_owned()), async {
                self.key_counts_uncached(user_id, device_id).await
            })
            .await
    }

    async fn key_counts_uncached(&self, user_id: &str, device_id: &str) -> Result<KeyCounts> {
        read!(self, pool => {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT algorithm, COUNT(*), CAST(0 AS BIGINT) FROM one_time_keys
                 WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
                 UNION ALL
                 SELECT algorithm, CAST(0 AS BIGINT), CAST(1 AS BIGINT) FROM fallback_keys
                 WHERE user_id = $1 AND device_id = $2 AND used = 0",
            )
            .bind(user_id)
            .bind(device_id)
            .fetch_all(pool)
            .await?;
            let mut counts = KeyCounts::default();
            for (algorithm, count, is_fallback) in rows {
                if is_fallback == 1 {
                    counts.unused_fallback.push(algorithm);
                } else {
                    counts.one_time.push((algorithm, count));
                }
            }
            Ok(counts)
        })
    }

    /// Takes one of the device's one-time keys of the algorithm, or else
    /// hands out its fallback key (which stays, marked used).
    pub async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>> {
        let this = self.clone();
        let device = (user_id.to_owned(), device_id.to_owned());
        let algorithm = algorithm.to_owned();
        to_completion(async move {
            let claimed = this
                .claim_key_uncached(&device.0, &device.1, &algorithm)
                .await;
            this.caches.key_counts.invalidate(&device);
            claimed
        })
        .await
    }

    async fn claim_key_uncached(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>> {
        write!(self, pool => {
            // Two claims may race for the same row; the loser tries the next.
            loop {
                let claimed: Option<(String, String)> = sqlx::query_as(
                    "DELETE FROM one_time_keys
                     WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id =
                       (SELECT key_id FROM one_time_keys
                        WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                        ORDER BY key_id LIMIT 1)
                     RETURNING key_id, json",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(algorithm)
                .fetch_optional(pool)
                .await?;
                if claimed.is_some() {
                    return Ok(claimed);
                }
                let left: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM one_time_keys
                     WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 LIMIT 1",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(algorithm)
                .fetch_optional(pool)
                .await?;
                if left.is_none() {
                    break;
                }
            }
            sqlx::query_as(
                "UPDATE fallback_keys SET used = 1
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                 RETURNING key_id, json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(pool)
            .await
        })
    }

    pub async fn cross_signing_keys(&self, user_ids: &[String]) -> Result<Vec<CrossSigningKeyRow>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT user_id, key_type, public_key, json FROM cross_signing_keys WHERE user_id IN ({})",
            placeholders(1, user_ids.len())
        );
        read!(self, pool => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(&*sql));
            for user in user_ids {
                query = query.bind(user);
            }
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(CrossSigningKeyRow {
                        user_id: row.try_get("user_id")?,
                        key_type: row.try_get("key_type")?,
                        public_key: row.try_get("public_key")?,
                        json: row.try_get("json")?,
                    })
                })
                .collect()
        })
    }

    /// Replaces some of a user's cross-signing keys. Signatures made with
    /// replaced keys stay, naming key IDs nobody trusts any more.
    pub async fn set_cross_signing_keys(&self, keys: &[CrossSigningKeyRow]) -> Result<()> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            for key in keys {
                sqlx::query(
                    "INSERT INTO cross_signing_keys (user_id, key_type, public_key, json) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (user_id, key_type) DO UPDATE
                     SET public_key = excluded.public_key, json = excluded.json",
                )
                .bind(&key.user_id)
                .bind(&key.key_type)
                .bind(&key.public_key)
                .bind(&key.json)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn add_key_signatures(&self, signatures: &[KeySignatureRow]) -> Result<()> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            for sig in signatures {
                sqlx::query(
                    "INSERT INTO key_signatures
                       (signer_user_id, signer_key_id, target_user_id, target_key_id, signature)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
                     DO UPDATE SET signature = excluded.signature",
                )
                .bind(&sig.signer_user_id)
                .bind(&sig.signer_key_id)
                .bind(&sig.target_user_id)
                .bind(&sig.target_key_id)
                .bind(&sig.signature)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Detached signatures over the keys of these users.
    pub async fn key_signatures_on(&self, user_ids: &[String]) -> Result<Vec<KeySignatureRow>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT signer_user_id, signer_key_id, target_user_id, target_key_id, signature
             FROM key_signatures WHERE target_user_id IN ({})",
            placeholders(1, user_ids.len())
        );
        read!(self, pool => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(&*sql));
            for user in user_ids {
                query = query.bind(user);
            }
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(KeySignatureRow {
                        signer_user_id: row.try_get("signer_user_id")?,
                        signer_key_id: row.try_get("signer_key_id")?,
                        target_user_id: row.try_get("target_user_id")?,
                        target_key_id: row.try_get("target_key_id")?,
                        signature: row.try_get("signature")?,
                    })
                })
                .collect()
        })
    }

    /// Membership events in `(since, upto]` in rooms the user has (or had)
    /// a membership in: `(room, member, membership)`. The source of
    /// `device_lists.changed` for new room-mates and of `device_lists.left`.
    pub async fn membership_changes_between(
        &self,
        user_id: &str,
        since: i64,
        upto: i64,
    ) -> Result<Vec<(String, String, String)>> {
        // Forgotten rooms too: leaving one may end sharing a room with someone.
        let user_rooms = self.memberships_of(user_id).await?;
        let rooms = user_rooms
            .memberships
            .iter()
            .map(|(room, _, _)| room.as_str())
            .chain(user_rooms.forgotten.iter().map(String::as_str))
            .collect();
        if let Some(changes) = self
            .caches
            .recent
            .read()
            .member_events_between(since, upto, &rooms)
        {
            return Ok(changes);
        }
        read!(self, pool => {
            let rows: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT e.room_id, e.state_key, e.json FROM events e
                 WHERE e.type = 'm.room.member' AND e.stream_ordering > $2 AND e.stream_ordering <= $3
                   AND e.room_id IN (SELECT room_id FROM current_state
                                     WHERE type = 'm.room.member' AND state_key = $1)
                 ORDER BY e.stream_ordering",
            )
            .bind(user_id)
            .bind(since)
            .bind(upto)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(room, member, json)| {
                    let membership = serde_json::from_str::<serde_json::Value>(&json)
                        .ok()
                        .and_then(|pdu| pdu["content"]["membership"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    (room, member, membership)
                })
                .collect())
        })
    }
}
