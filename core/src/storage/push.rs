//! Push: what the rules decided per user and event (the source of unread
//! counts and `/notifications`), and the users' pushers.

use std::{collections::HashMap, sync::Arc};

use sqlx::Row;

use super::{Result, Storage, now_ms, read, to_completion, write};

/// A push-rule outcome for one local user, stored with the event.
#[derive(Debug, Clone)]
pub struct PushActionRow {
    pub user_id: String,
    /// `main` outside threads, else the thread root's event ID.
    pub thread_id: String,
    pub notify: bool,
    pub highlight: bool,
    /// The actions as JSON, for `/notifications` and pushers.
    pub actions: String,
}

/// Unread counts per `(room, thread)`.
pub type UnreadByThread = HashMap<(String, String), UnreadCounts>;

/// Unread counts of one room and thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnreadCounts {
    pub notifications: i64,
    pub highlights: i64,
}

#[derive(Debug, Clone)]
pub struct NotificationRow {
    pub event_id: String,
    pub room_id: String,
    pub actions: String,
    pub ts: i64,
    pub stream_ordering: i64,
    pub read: bool,
}

#[derive(Debug, Clone)]
pub struct PusherRow {
    pub user_id: String,
    pub device_id: Option<String>,
    pub kind: String,
    pub app_id: String,
    pub pushkey: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The pusher's `data` object as JSON (`url`, `format`, ...).
    pub data: String,
}

/// The stream ordering of the user's latest read receipt covering
/// `a.thread_id` in `a.room_id` (an unthreaded receipt covers every thread).
const READ_UP_TO: &str = "COALESCE((SELECT MAX(r.event_stream_ordering) FROM receipts r
     WHERE r.user_id = a.user_id AND r.room_id = a.room_id
       AND r.receipt_type IN ('m.read', 'm.read.private')
       AND (r.thread_id = '' OR r.thread_id = a.thread_id)), 0)";

macro_rules! pusher_rows {
    ($rows:expr) => {
        $rows
            .iter()
            .map(|row| {
                Ok(PusherRow {
                    user_id: row.try_get("user_id")?,
                    device_id: row.try_get("device_id")?,
                    kind: row.try_get("kind")?,
                    app_id: row.try_get("app_id")?,
                    pushkey: row.try_get("pushkey")?,
                    app_display_name: row.try_get("app_display_name")?,
                    device_display_name: row.try_get("device_display_name")?,
                    profile_tag: row.try_get("profile_tag")?,
                    lang: row.try_get("lang")?,
                    data: row.try_get("data")?,
                })
            })
            .collect()
    };
}

/// Users per `IN (...)` list, well under every backend's parameter limit.
const USERS_PER_QUERY: usize = 1_000;

const PUSHER_COLUMNS: &str = "user_id, device_id, kind, app_id, pushkey, app_display_name,
    device_display_name, profile_tag, lang, data";

impl Storage {
    /// Unread notification and highlight counts per `(room, thread)` for
    /// everything after the user's read receipts.
    pub async fn unread_counts(&self, user_id: &str) -> Result<Arc<UnreadByThread>> {
        self.caches
            .unread
            .get_or_load(&user_id.to_owned(), async {
                Ok(Arc::new(self.unread_counts_uncached(user_id).await?))
            })
            .await
    }

    async fn unread_counts_uncached(&self, user_id: &str) -> Result<UnreadByThread> {
        let sql = format!(
            "SELECT a.room_id, a.thread_id,
                 SUM(CASE WHEN a.notify THEN 1 ELSE 0 END) AS notifications,
                 SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END) AS highlights
             FROM event_push_actions a
             WHERE a.user_id = $1 AND a.stream_ordering > {READ_UP_TO}
             GROUP BY a.room_id, a.thread_id"
        );
        read!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(user_id).fetch_all(pool).await?;
            let mut counts = HashMap::with_capacity(rows.len());
            for row in rows {
                counts.insert(
                    (row.try_get("room_id")?, row.try_get("thread_id")?),
                    UnreadCounts {
                        notifications: row.try_get::<Option<i64>, _>("notifications")?.unwrap_or_default(),
                        highlights: row.try_get::<Option<i64>, _>("highlights")?.unwrap_or_default(),
                    },
                );
            }
            Ok(counts)
        })
    }

    /// The user's notifications before stream position `before`, newest first.
    pub async fn notifications(
        &self,
        user_id: &str,
        before: i64,
        limit: i64,
        only_highlights: bool,
    ) -> Result<Vec<NotificationRow>> {
        let highlight = if only_highlights {
            "AND a.highlight"
        } else {
            ""
        };
        let sql = format!(
            "SELECT a.event_id, a.room_id, a.actions, a.ts, a.stream_ordering,
                 CAST(CASE WHEN a.stream_ordering <= {READ_UP_TO} THEN 1 ELSE 0 END AS BIGINT) AS is_read
             FROM event_push_actions a
             WHERE a.user_id = $1 AND a.notify AND a.stream_ordering < $2 {highlight}
             ORDER BY a.stream_ordering DESC LIMIT $3"
        );
        read!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(user_id).bind(before).bind(limit).fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(NotificationRow {
                        event_id: row.try_get("event_id")?,
                        room_id: row.try_get("room_id")?,
                        actions: row.try_get("actions")?,
                        ts: row.try_get("ts")?,
                        stream_ordering: row.try_get("stream_ordering")?,
                        read: row.try_get::<i64, _>("is_read")? == 1,
                    })
                })
                .collect()
        })
    }

    /// Adds or replaces a pusher. Unless `append`, the same app and pushkey
    /// are removed from every other user, as the spec asks.
    pub async fn set_pusher(&self, pusher: &PusherRow, append: bool) -> Result<()> {
        let (this, pusher) = (self.clone(), pusher.clone());
        to_completion(async move { this.set_pusher_inner(&pusher, append).await }).await
    }

    async fn set_pusher_inner(&self, pusher: &PusherRow, append: bool) -> Result<()> {
        let displaced: Vec<String> = write!(self, pool => {
            let mut tx = pool.begin().await?;
            let displaced = if append {
                Vec::new()
            } else {
                sqlx::query_scalar(
                    "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3
                     RETURNING user_id",
                )
                .bind(&pusher.app_id)
                .bind(&pusher.pushkey)
                .bind(&pusher.user_id)
                .fetch_all(&mut *tx)
                .await?
            };
            sqlx::query(sqlx::AssertSqlSafe(&*format!(
                "INSERT INTO pushers ({PUSHER_COLUMNS}, created_ts)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET
                     device_id = excluded.device_id, kind = excluded.kind,
                     app_display_name = excluded.app_display_name,
                     device_display_name = excluded.device_display_name,
                     profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data"
            )))
            .bind(&pusher.user_id)
            .bind(&pusher.device_id)
            .bind(&pusher.kind)
            .bind(&pusher.app_id)
            .bind(&pusher.pushkey)
            .bind(&pusher.app_display_name)
            .bind(&pusher.device_display_name)
            .bind(&pusher.profile_tag)
            .bind(&pusher.lang)
            .bind(&pusher.data)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(displaced)
        })?;
        // The setter, and whoever had this app and pushkey before.
        for user in displaced.iter().chain([&pusher.user_id]) {
            self.caches.pushers.invalidate(user.as_str());
        }
        Ok(())
    }

    pub async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<()> {
        let this = self.clone();
        let (user_id, app_id, pushkey) =
            (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
        to_completion(async move {
            write!(this, pool => {
                sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                    .bind(&user_id)
                    .bind(&app_id)
                    .bind(&pushkey)
                    .execute(pool)
                    .await
                    .map(drop)
            })?;
            this.caches.pushers.invalidate(user_id.as_str());
            Ok(())
        })
        .await
    }

    /// The pushers of any of these users: those not cached in one query.
    pub async fn pushers_of(&self, user_ids: &[&str]) -> Result<Vec<PusherRow>> {
        let mut rows = Vec::new();
        let mut missing = Vec::new();
        for &user in user_ids {
            match self.caches.pushers.get(user) {
                Ok(theirs) => rows.extend(theirs.iter().cloned()),
                Err(ticket) => missing.push((user, ticket)),
            }
        }
        if missing.is_empty() {
            return Ok(rows);
        }
        let users: Vec<&str> = missing.iter().map(|(user, _)| *user).collect();
        let found = self.pushers_uncached(&users).await?;
        for (user, ticket) in missing {
            let theirs = found.iter().filter(|p| p.user_id == user).cloned();
            self.caches
                .pushers
                .fill(ticket, user.to_owned(), theirs.collect());
        }
        rows.extend(found);
        Ok(rows)
    }

    async fn pushers_uncached(&self, user_ids: &[&str]) -> Result<Vec<PusherRow>> {
        let mut rows = Vec::new();
        for users in user_ids.chunks(USERS_PER_QUERY) {
            read!(self, pool => {
                let mut query = sqlx::QueryBuilder::new(format!(
                    "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id IN ("
                ));
                let mut list = query.separated(", ");
                for user in users {
                    list.push_bind(*user);
                }
                query.push(") ORDER BY created_ts");
                let found = query.build().fetch_all(pool).await?;
                let found: Result<Vec<PusherRow>> = pusher_rows!(found);
                rows.extend(found?);
            });
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::PusherRow;
    use crate::{config::DatabaseTarget, storage::Storage};

    fn pusher(user_id: &str, device_id: &str, pushkey: &str) -> PusherRow {
        PusherRow {
            user_id: user_id.to_owned(),
            device_id: Some(device_id.to_owned()),
            kind: "http".to_owned(),
            app_id: "org.example.app".to_owned(),
            pushkey: pushkey.to_owned(),
            app_display_name: "Example".to_owned(),
            device_display_name: "Phone".to_owned(),
            profile_tag: None,
            lang: "en".to_owned(),
            data: r#"{"url":"https://push.example.org/_matrix/push/v1/notify"}"#.to_owned(),
        }
    }

    async fn set(storage: &Storage, user_id: &str, device_id: &str, pushkey: &str, append: bool) {
        let pusher = pusher(user_id, device_id, pushkey);
        storage.set_pusher(&pusher, append).await.unwrap();
    }

    async fn pushkeys(storage: &Storage, users: &[&str]) -> Vec<(String, String)> {
        let mut found: Vec<_> = storage
            .pushers_of(users)
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.user_id, p.pushkey))
            .collect();
        found.sort();
        found
    }

    /// Each change of a user's pushers reaches the next lookup, though the
    /// lookup before it (which found none) was kept.
    #[tokio::test]
    async fn kept_pushers_follow_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let target = DatabaseTarget::Sqlite(dir.path().join("push.db"));
        let storage = Storage::open(&target).await.unwrap();
        let (bob, carol) = ("@bob:x", "@carol:x");
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(u, k)| (u.to_string(), k.to_string()))
                .collect()
        };
        assert!(pushkeys(&storage, &[bob, carol]).await.is_empty());

        set(&storage, bob, "PHONE", "key-1", false).await;
        assert_eq!(
            pushkeys(&storage, &[bob, carol]).await,
            owned(&[(bob, "key-1")])
        );
        // Without `append`, Carol takes the pushkey from Bob.
        set(&storage, carol, "TABLET", "key-1", false).await;
        assert_eq!(
            pushkeys(&storage, &[bob, carol]).await,
            owned(&[(carol, "key-1")])
        );
        storage
            .delete_pusher(carol, "org.example.app", "key-1")
            .await
            .unwrap();
        assert!(pushkeys(&storage, &[carol]).await.is_empty());

        set(&storage, bob, "PHONE", "key-2", true).await;
        assert_eq!(pushkeys(&storage, &[bob]).await, owned(&[(bob, "key-2")]));
        storage
            .delete_devices(bob, &["PHONE".to_owned()])
            .await
            .unwrap();
        assert!(pushkeys(&storage, &[bob]).await.is_empty());

        // Deactivation takes every pusher of the account.
        set(&storage, bob, "LAPTOP", "key-3", false).await;
        assert_eq!(pushkeys(&storage, &[bob]).await, owned(&[(bob, "key-3")]));
        storage.deactivate_user(bob).await.unwrap();
        assert!(pushkeys(&storage, &[bob]).await.is_empty());
    }
}
