//! Receipts, presence, send-to-device messages and device-list changes:
//! the streams besides the timeline and account data.

use sqlx::Row;

use super::{Result, Storage, now_ms, read, streams::next_position, to_completion, write};
use crate::streams::Stream;

#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub room_id: String,
    pub receipt_type: String,
    pub user_id: String,
    /// Empty for an unthreaded receipt.
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

#[derive(Debug, Clone)]
pub struct PresenceRow {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
}

#[derive(Debug, Clone)]
pub struct ToDeviceRow {
    pub stream_id: i64,
    pub sender: String,
    pub kind: String,
    pub content: String,
}

/// One send-to-device message to queue.
#[derive(Clone)]
pub struct ToDeviceMessage {
    pub user_id: String,
    pub device_id: String,
    pub content: String,
}

macro_rules! receipt_rows {
    ($rows:expr) => {
        $rows
            .iter()
            .map(|row| {
                Ok(ReceiptRow {
                    room_id: row.try_get("room_id")?,
                    receipt_type: row.try_get("receipt_type")?,
                    user_id: row.try_get("user_id")?,
                    thread_id: row.try_get("thread_id")?,
                    event_id: row.try_get("event_id")?,
                    ts: row.try_get("ts")?,
                })
            })
            .collect()
    };
}

impl Storage {
    /// Records a receipt unless the user already has one of this type and
    /// thread at a later event. Returns the receipts-stream position, or
    /// `None` when nothing changed.
    pub async fn set_receipt(
        &self,
        receipt: &ReceiptRow,
        event_stream_ordering: i64,
    ) -> Result<Option<i64>> {
        let (this, receipt) = (self.clone(), receipt.clone());
        to_completion(async move {
            this.set_receipt_inner(&receipt, event_stream_ordering)
                .await
        })
        .await
    }

    async fn set_receipt_inner(
        &self,
        receipt: &ReceiptRow,
        event_stream_ordering: i64,
    ) -> Result<Option<i64>> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT event_stream_ordering FROM receipts
                 WHERE room_id = $1 AND receipt_type = $2 AND user_id = $3 AND thread_id = $4",
            )
            .bind(&receipt.room_id)
            .bind(&receipt.receipt_type)
            .bind(&receipt.user_id)
            .bind(&receipt.thread_id)
            .fetch_optional(&mut *tx)
            .await?;
            if existing.is_some_and(|at| at >= event_stream_ordering) {
                return Ok(None);
            }
            let position = next_position!(tx, Stream::Receipts);
            sqlx::query(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id,
                     event_stream_ordering, ts, stream_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE
                 SET event_id = excluded.event_id, event_stream_ordering = excluded.event_stream_ordering,
                     ts = excluded.ts, stream_id = excluded.stream_id",
            )
            .bind(&receipt.room_id)
            .bind(&receipt.receipt_type)
            .bind(&receipt.user_id)
            .bind(&receipt.thread_id)
            .bind(&receipt.event_id)
            .bind(event_stream_ordering)
            .bind(receipt.ts)
            .bind(position)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            // What the user has read decides their unread counts.
            self.caches.unread.invalidate(receipt.user_id.as_str());
            Ok(Some(position))
        })
    }

    /// Receipts written in `(since, upto]`, in every room.
    pub async fn receipts_since(&self, since: i64, upto: i64) -> Result<Vec<ReceiptRow>> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts
                 WHERE stream_id > $1 AND stream_id <= $2 ORDER BY stream_id",
            )
            .bind(since)
            .bind(upto)
            .fetch_all(pool)
            .await?;
            receipt_rows!(rows)
        })
    }

    /// The receipts of all these rooms up to `upto`, in one query per
    /// thousand rooms.
    pub async fn receipts_in_rooms(&self, room_ids: &[&str], upto: i64) -> Result<Vec<ReceiptRow>> {
        let mut out = Vec::new();
        for rooms in room_ids.chunks(1_000) {
            read!(self, pool => {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts
                     WHERE stream_id <= ",
                );
                query.push_bind(upto).push(" AND room_id IN (");
                let mut list = query.separated(", ");
                for room in rooms {
                    list.push_bind(*room);
                }
                query.push(") ORDER BY stream_id");
                let rows = query.build().fetch_all(pool).await?;
                let rows: Result<Vec<ReceiptRow>> = receipt_rows!(rows);
                out.extend(rows?);
            });
        }
        Ok(out)
    }

    /// Stores a user's presence; returns its presence-stream position.
    pub async fn set_presence(
        &self,
        user_id: &str,
        state: &str,
        status_msg: Option<&str>,
    ) -> Result<i64> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let position = next_position!(tx, Stream::Presence);
            sqlx::query(
                "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_id)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,
                     status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,
                     stream_id = excluded.stream_id",
            )
            .bind(user_id)
            .bind(state)
            .bind(status_msg)
            .bind(now_ms())
            .bind(position)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(position)
        })
    }

    pub async fn presence(&self, user_id: &str) -> Result<Option<PresenceRow>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT user_id, state, status_msg, last_active_ts FROM presence WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| presence_row(&row)).transpose()
        })
    }

    /// Presence written in `(since, upto]`.
    pub async fn presence_since(&self, since: i64, upto: i64) -> Result<Vec<PresenceRow>> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT user_id, state, status_msg, last_active_ts FROM presence
                 WHERE stream_id > $1 AND stream_id <= $2",
            )
            .bind(since)
            .bind(upto)
            .fetch_all(pool)
            .await?;
            rows.iter().map(presence_row).collect()
        })
    }

    /// Queues send-to-device messages of one request. Returns the last
    /// position, or `None` if this transaction ID was already used.
    pub async fn queue_to_device(
        &self,
        sender: (&str, &str),
        txn_id: &str,
        kind: &str,
        messages: &[ToDeviceMessage],
    ) -> Result<Option<i64>> {
        let this = self.clone();
        let (user, device) = (sender.0.to_owned(), sender.1.to_owned());
        let (txn_id, kind, messages) = (txn_id.to_owned(), kind.to_owned(), messages.to_vec());
        to_completion(async move {
            this.queue_to_device_inner((&user, &device), &txn_id, &kind, &messages)
                .await
        })
        .await
    }

    async fn queue_to_device_inner(
        &self,
        sender: (&str, &str),
        txn_id: &str,
        kind: &str,
        messages: &[ToDeviceMessage],
    ) -> Result<Option<i64>> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let fresh = sqlx::query(
                "INSERT INTO to_device_txns (user_id, device_id, txn_id) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(sender.0)
            .bind(sender.1)
            .bind(txn_id)
            .execute(&mut *tx)
            .await?
            .rows_affected() == 1;
            if !fresh {
                return Ok(None);
            }
            let mut last = None;
            for message in messages {
                let position = next_position!(tx, Stream::ToDevice);
                sqlx::query(
                    "INSERT INTO to_device_inbox (stream_id, user_id, device_id, sender, type, content)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(position)
                .bind(&message.user_id)
                .bind(&message.device_id)
                .bind(sender.0)
                .bind(kind)
                .bind(&message.content)
                .execute(&mut *tx)
                .await?;
                last = Some(position);
            }
            tx.commit().await?;
            for message in messages {
                self.caches
                    .empty_inboxes
                    .invalidate(&(message.user_id.clone(), message.device_id.clone()));
            }
            Ok(Some(last.unwrap_or_default()))
        })
    }

    /// A device's waiting messages up to position `upto`, oldest first.
    /// An inbox found empty is remembered until a message is queued to it.
    pub async fn to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<ToDeviceRow>> {
        let inbox = (user_id.to_owned(), device_id.to_owned());
        let Err(ticket) = self.caches.empty_inboxes.get(&inbox) else {
            return Ok(Vec::new());
        };
        // Read past `upto`, so that "empty" means the whole inbox.
        let mut messages = self
            .oldest_to_device_messages(user_id, device_id, limit)
            .await?;
        if messages.is_empty() {
            self.caches.empty_inboxes.fill(ticket, inbox, ());
        }
        messages.retain(|message| message.stream_id <= upto);
        Ok(messages)
    }

    async fn oldest_to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        limit: i64,
    ) -> Result<Vec<ToDeviceRow>> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT stream_id, sender, type, content FROM to_device_inbox
                 WHERE user_id = $1 AND device_id = $2 ORDER BY stream_id LIMIT $3",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(ToDeviceRow {
                        stream_id: row.try_get("stream_id")?,
                        sender: row.try_get("sender")?,
                        kind: row.try_get("type")?,
                        content: row.try_get("content")?,
                    })
                })
                .collect()
        })
    }

    /// Deletes the messages a device acknowledged (those up to `upto`).
    pub async fn delete_to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
    ) -> Result<()> {
        write!(self, pool => {
            sqlx::query("DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3")
                .bind(user_id)
                .bind(device_id)
                .bind(upto)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Records that a user's devices changed; returns the stream position.
    pub async fn record_device_list_change(&self, user_id: &str) -> Result<i64> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let position = next_position!(tx, Stream::DeviceLists);
            sqlx::query("INSERT INTO device_list_changes (stream_id, user_id) VALUES ($1, $2)")
                .bind(position)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(position)
        })
    }

    /// Users whose devices changed in `(since, upto]`.
    pub async fn device_list_changes_since(&self, since: i64, upto: i64) -> Result<Vec<String>> {
        read!(self, pool => {
            sqlx::query_scalar(
                "SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > $1 AND stream_id <= $2",
            )
            .bind(since)
            .bind(upto)
            .fetch_all(pool)
            .await
        })
    }
}

fn presence_row<R: Row>(row: &R) -> Result<PresenceRow>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PresenceRow {
        user_id: row.try_get("user_id")?,
        state: row.try_get("state")?,
        status_msg: row.try_get("status_msg")?,
        last_active_ts: row.try_get("last_active_ts")?,
    })
}
