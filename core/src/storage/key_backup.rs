//! Server-side backup of room keys (spec: "Server-side key backups"): the
//! server keeps versions and encrypted session keys it cannot read.

use sqlx::Row;

use super::{Result, Storage, read, write};

/// Advances a version's etag when its keys changed; evaluates to the etag.
macro_rules! bump_etag {
    ($tx:expr, $user_id:expr, $version:expr, $changed:expr) => {{
        if $changed {
            sqlx::query(
                "UPDATE room_key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
            )
            .bind($user_id)
            .bind($version)
            .execute(&mut *$tx)
            .await?;
        }
        sqlx::query_scalar::<_, i64>(
            "SELECT etag FROM room_key_backup_versions WHERE user_id = $1 AND version = $2",
        )
        .bind($user_id)
        .bind($version)
        .fetch_one(&mut *$tx)
        .await?
    }};
}

#[derive(Debug, Clone)]
pub struct BackupVersion {
    pub version: i64,
    /// The `{algorithm, auth_data}` JSON the client created it with.
    pub algorithm: String,
    pub etag: i64,
    pub count: i64,
}

/// One backed-up session key; `json` is the `KeyBackupData` as uploaded.
#[derive(Debug, Clone)]
pub struct BackedUpSession {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub json: String,
}

impl BackedUpSession {
    /// The spec's rule for two copies of one session key: a verified key
    /// beats an unverified one, then the lower first message index (it
    /// decrypts more), then the lower forwarded count.
    fn better_than(&self, stored: &BackedUpSession) -> bool {
        (
            !self.is_verified,
            self.first_message_index,
            self.forwarded_count,
        ) < (
            !stored.is_verified,
            stored.first_message_index,
            stored.forwarded_count,
        )
    }
}

/// Which keys of a version a read or delete covers.
#[derive(Debug, Clone, Copy)]
pub enum BackupScope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

impl BackupScope<'_> {
    /// The extra condition, on parameters `$3` and `$4`.
    fn condition(&self) -> &'static str {
        match self {
            BackupScope::All => "",
            BackupScope::Room(_) => " AND room_id = $3",
            BackupScope::Session(..) => " AND room_id = $3 AND session_id = $4",
        }
    }

    fn params(&self) -> Vec<&str> {
        match *self {
            BackupScope::All => vec![],
            BackupScope::Room(room) => vec![room],
            BackupScope::Session(room, session) => vec![room, session],
        }
    }
}

fn session_from_row<R: Row>(row: &R) -> Result<BackedUpSession>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(BackedUpSession {
        room_id: row.try_get("room_id")?,
        session_id: row.try_get("session_id")?,
        first_message_index: row.try_get("first_message_index")?,
        forwarded_count: row.try_get("forwarded_count")?,
        is_verified: row.try_get::<i64, _>("is_verified")? != 0,
        json: row.try_get("json")?,
    })
}

impl Storage {
    /// Creates a new version, which becomes the current one.
    pub async fn create_backup_version(&self, user_id: &str, algorithm: &str) -> Result<i64> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let last: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM room_key_backup_versions WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let version = last.unwrap_or_default() + 1;
            sqlx::query(
                "INSERT INTO room_key_backup_versions (user_id, version, algorithm, etag, deleted)
                 VALUES ($1, $2, $3, 0, 0)",
            )
            .bind(user_id)
            .bind(version)
            .bind(algorithm)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(version)
        })
    }

    /// The version asked for, or the current one; `None` if it does not
    /// exist or was deleted.
    pub async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<BackupVersion>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT v.version, v.algorithm, v.etag,
                        (SELECT COUNT(*) FROM room_key_backups k
                         WHERE k.user_id = v.user_id AND k.version = v.version) AS count
                 FROM room_key_backup_versions v
                 WHERE v.user_id = $1 AND v.deleted = 0 AND ($2 < 0 OR v.version = $2)
                 ORDER BY v.version DESC LIMIT 1",
            )
            .bind(user_id)
            .bind(version.unwrap_or(-1))
            .fetch_optional(pool)
            .await?;
            row.map(|row| {
                Ok(BackupVersion {
                    version: row.try_get("version")?,
                    algorithm: row.try_get("algorithm")?,
                    etag: row.try_get("etag")?,
                    count: row.try_get("count")?,
                })
            })
            .transpose()
        })
    }

    pub async fn update_backup_version(
        &self,
        user_id: &str,
        version: i64,
        algorithm: &str,
    ) -> Result<()> {
        write!(self, pool => {
            sqlx::query(
                "UPDATE room_key_backup_versions SET algorithm = $3
                 WHERE user_id = $1 AND version = $2 AND deleted = 0",
            )
            .bind(user_id)
            .bind(version)
            .bind(algorithm)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Deletes a version and its keys; `false` if there was no such version.
    pub async fn delete_backup_version(&self, user_id: &str, version: i64) -> Result<bool> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE room_key_backup_versions SET deleted = 1
                 WHERE user_id = $1 AND version = $2 AND deleted = 0",
            )
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM room_key_backups WHERE user_id = $1 AND version = $2")
                .bind(user_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        })
    }

    pub async fn backed_up_sessions(
        &self,
        user_id: &str,
        version: i64,
        scope: BackupScope<'_>,
    ) -> Result<Vec<BackedUpSession>> {
        let sql = format!(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, json
             FROM room_key_backups WHERE user_id = $1 AND version = $2{}
             ORDER BY room_id, session_id",
            scope.condition()
        );
        read!(self, pool => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(user_id).bind(version);
            for param in scope.params() {
                query = query.bind(param);
            }
            let rows = query.fetch_all(pool).await?;
            rows.iter().map(session_from_row).collect()
        })
    }

    /// Stores each session unless the backup already has a better copy;
    /// the version's etag changes when anything was stored. Returns the
    /// etag and the number of keys in the version.
    pub async fn back_up_sessions(
        &self,
        user_id: &str,
        version: i64,
        sessions: &[BackedUpSession],
    ) -> Result<(i64, i64)> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut changed = false;
            for session in sessions {
                let stored = sqlx::query(
                    "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, json
                     FROM room_key_backups
                     WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
                )
                .bind(user_id)
                .bind(version)
                .bind(&session.room_id)
                .bind(&session.session_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(stored) = stored.as_ref().map(session_from_row).transpose()?
                    && !session.better_than(&stored)
                {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO room_key_backups
                       (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, json)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE
                     SET first_message_index = excluded.first_message_index,
                         forwarded_count = excluded.forwarded_count,
                         is_verified = excluded.is_verified, json = excluded.json",
                )
                .bind(user_id)
                .bind(version)
                .bind(&session.room_id)
                .bind(&session.session_id)
                .bind(session.first_message_index)
                .bind(session.forwarded_count)
                .bind(i64::from(session.is_verified))
                .bind(&session.json)
                .execute(&mut *tx)
                .await?;
                changed = true;
            }
            let etag = bump_etag!(tx, user_id, version, changed);
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM room_key_backups WHERE user_id = $1 AND version = $2",
            )
            .bind(user_id)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((etag, count))
        })
    }

    /// Deletes keys from a version; returns its new etag and key count.
    pub async fn delete_backed_up_sessions(
        &self,
        user_id: &str,
        version: i64,
        scope: BackupScope<'_>,
    ) -> Result<(i64, i64)> {
        let sql = format!(
            "DELETE FROM room_key_backups WHERE user_id = $1 AND version = $2{}",
            scope.condition()
        );
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut query = sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(user_id).bind(version);
            for param in scope.params() {
                query = query.bind(param);
            }
            let changed = query.execute(&mut *tx).await?.rows_affected() > 0;
            let etag = bump_etag!(tx, user_id, version, changed);
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM room_key_backups WHERE user_id = $1 AND version = $2",
            )
            .bind(user_id)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((etag, count))
        })
    }
}
