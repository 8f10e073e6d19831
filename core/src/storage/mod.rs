//! The one storage layer: every SQL statement the server runs lives under here.
//!
//! Two backends are first-class: SQLite (embedded, WAL, the default) and
//! PostgreSQL. Statements are written once with `$n` placeholders, which both
//! drivers accept, and run against whichever pool is open.

mod accounts;
pub mod admin;
mod aliases;
mod cache;
mod device_auth_providers;
mod devices;
pub mod ephemeral;
mod external_ids;
pub mod key_backup;
pub mod keys;
pub mod media;
mod plugin_kv;
pub mod push;
pub mod rooms;
mod streams;
pub mod threepids;
mod tokens;
pub mod user_data;

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use self::cache::Caches;
pub use self::{
    accounts::{NewUser, Profile, UserRecord},
    devices::DeviceRecord,
    tokens::{AccessTokenRecord, RefreshTokenRecord},
};
use crate::config::DatabaseTarget;

pub type Result<T> = std::result::Result<T, sqlx::Error>;

#[derive(Clone)]
enum Db {
    /// SQLite allows one writer at a time: writes go through a single
    /// connection so they queue in-process instead of contending for the lock.
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
    },
    Postgres(PgPool),
}

/// Handle to the homeserver database; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    db: Db,
    caches: Arc<Caches>,
}

/// Runs `$body` with `$pool` bound to the pool that serves reads.
macro_rules! read {
    ($storage:expr, $pool:ident => $body:expr) => {
        match &$storage.db {
            $crate::storage::Db::Sqlite { read: $pool, .. } => $body,
            $crate::storage::Db::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$pool` bound to the pool that serves writes.
macro_rules! write {
    ($storage:expr, $pool:ident => $body:expr) => {
        match &$storage.db {
            $crate::storage::Db::Sqlite { write: $pool, .. } => $body,
            $crate::storage::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use {read, write};

impl Storage {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub async fn open(target: &DatabaseTarget) -> anyhow::Result<Self> {
        let db = match target {
            DatabaseTarget::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                let options = SqliteConnectOptions::from_str("sqlite://")?
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a commit is on disk before the client hears 200.
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10))
                    // Checkpoints run in the background (`checkpoint_wal`),
                    // not inside whichever commit fills the log.
                    .pragma("wal_autocheckpoint", "0");
                // An SQLite connection lives in this process and cannot hang
                // up, so the pools skip sqlx's ping on every acquire: it is a
                // round trip to the connection's thread before each query.
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .test_before_acquire(false)
                    .connect_with(options.clone())
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&write).await?;
                let read = SqlitePoolOptions::new()
                    .max_connections(4)
                    .min_connections(1)
                    .test_before_acquire(false)
                    .connect_with(options.clone().read_only(true))
                    .await?;
                tokio::spawn(checkpoint_wal(write.clone()));
                Db::Sqlite { read, write }
            }
            DatabaseTarget::Postgres {
                url,
                max_connections,
            } => {
                let pool = PgPoolOptions::new()
                    .max_connections(*max_connections)
                    .min_connections(1)
                    .connect(url)
                    .await?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                Db::Postgres(pool)
            }
        };
        let storage = Self {
            db,
            caches: Arc::default(),
        };
        let last_event = storage.last_event_position().await?;
        storage.caches.recent.write().start_after(last_event);
        Ok(storage)
    }
}

/// How often the SQLite write-ahead log is copied into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Copies the SQLite write-ahead log into the database file every
/// [`CHECKPOINT_INTERVAL`], for as long as the server runs.
///
/// Left to SQLite, the commit that fills the log to 1,000 pages runs the
/// checkpoint itself, so that message's sender, and everyone waiting for
/// the message, waits for the copy and the database file's fsync. Here the
/// checkpoint is part of no commit: it takes the write connection between
/// two (writes that arrive meanwhile wait for it, as behind any write).
/// Nothing is appended to the log while it runs, so it copies all of it
/// unless a reader still needs older pages, and the next write starts the
/// log over. On a connection of its own it would chase a busy writer, never
/// reach the end, and the log would grow without end. A commit is durable
/// in the log before any checkpoint, so their timing changes nothing else.
async fn checkpoint_wal(write: SqlitePool) {
    let mut interval = tokio::time::interval(CHECKPOINT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !write.is_closed() {
        interval.tick().await;
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&write)
            .await
        {
            tracing::warn!(error = %err, "could not checkpoint the SQLite write-ahead log");
        }
    }
}

/// Runs a write, and the cache changes that follow its commit, in a task of
/// its own: a request dropped while its write commits must not leave the
/// caches behind the database.
async fn to_completion<T: Send + 'static>(
    write: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(write)
        .await
        .unwrap_or(Err(sqlx::Error::WorkerCrashed))
}

/// Milliseconds since the Unix epoch, as stored in `*_ts` columns.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Whether an error is a unique-constraint violation (a row already exists).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}
