//! Per-user data clients store on the server: filters and account data
//! (which also holds tags and push rules).

use std::sync::Arc;

use sqlx::Row;

use super::{Result, Storage, read, streams::next_position, write};
use crate::streams::Stream;

/// One piece of account data; `room_id` is empty for global data.
#[derive(Debug, Clone)]
pub struct AccountDataRow {
    pub room_id: String,
    pub kind: String,
    pub content: String,
}

impl Storage {
    /// Saves a filter; returns its new ID (per user, counting from 0).
    pub async fn create_filter(&self, user_id: &str, json: &str) -> Result<i64> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let next: i64 = sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(filter_id) FROM filters WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?
            .map_or(0, |max| max + 1);
            sqlx::query("INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3)")
                .bind(user_id)
                .bind(next)
                .bind(json)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(next)
        })
    }

    /// A user's filter, as stored. Only found filters are cached: an unknown
    /// ID may be created later.
    pub async fn filter(&self, user_id: &str, filter_id: i64) -> Result<Option<Arc<str>>> {
        let key = (user_id.to_owned(), filter_id);
        let ticket = match self.caches.filters.get(&key) {
            Ok(json) => return Ok(Some(json)),
            Err(ticket) => ticket,
        };
        let json: Option<String> = read!(self, pool => {
            sqlx::query_scalar("SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2")
                .bind(user_id)
                .bind(filter_id)
                .fetch_optional(pool)
                .await
        })?;
        let json = json.map(Arc::<str>::from);
        if let Some(json) = &json {
            self.caches.filters.fill(ticket, key, json.clone());
        }
        Ok(json)
    }

    /// Stores account data; returns its account-data stream position.
    pub async fn set_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        kind: &str,
        content: &str,
    ) -> Result<i64> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let position = next_position!(tx, Stream::AccountData);
            sqlx::query(
                "INSERT INTO account_data (user_id, room_id, type, content, stream_id)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_id, room_id, type)
                 DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
            )
            .bind(user_id)
            .bind(room_id)
            .bind(kind)
            .bind(content)
            .bind(position)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(position)
        })
    }

    pub async fn account_data(
        &self,
        user_id: &str,
        room_id: &str,
        kind: &str,
    ) -> Result<Option<String>> {
        read!(self, pool => {
            sqlx::query_scalar(
                "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
            )
            .bind(user_id)
            .bind(room_id)
            .bind(kind)
            .fetch_optional(pool)
            .await
        })
    }

    /// The user's account data written after position `since` (all of it
    /// when `since` is 0), up to `upto`.
    pub async fn account_data_since(
        &self,
        user_id: &str,
        since: i64,
        upto: i64,
    ) -> Result<Vec<AccountDataRow>> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT room_id, type, content FROM account_data
                 WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3 ORDER BY stream_id",
            )
            .bind(user_id)
            .bind(since)
            .bind(upto)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(AccountDataRow {
                        room_id: row.try_get("room_id")?,
                        kind: row.try_get("type")?,
                        content: row.try_get("content")?,
                    })
                })
                .collect()
        })
    }
}
