//! The media repository's metadata: local media and their thumbnails. The
//! files themselves live under `media_store_path` (`crate::media::files`).

use sqlx::Row;

use super::{Result, Storage, read, write};

/// A local media ID; `size` is `None` while it waits for its upload.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    pub media_id: String,
    pub user_id: String,
    pub created_ts: i64,
    pub content_type: Option<String>,
    pub upload_name: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub authenticated: bool,
    pub thumbnailed: bool,
}

/// What an upload stored: the file's description.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    pub content_type: String,
    pub upload_name: Option<String>,
    pub size: i64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailRecord {
    pub width: i64,
    pub height: i64,
    pub method: String,
    pub content_type: String,
    pub size: i64,
}

fn media_from_row<R: Row>(row: &R) -> Result<LocalMedia>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(LocalMedia {
        media_id: row.try_get("media_id")?,
        user_id: row.try_get("user_id")?,
        created_ts: row.try_get("created_ts")?,
        content_type: row.try_get("content_type")?,
        upload_name: row.try_get("upload_name")?,
        size: row.try_get("size")?,
        sha256: row.try_get("sha256")?,
        authenticated: row.try_get("authenticated")?,
        thumbnailed: row.try_get("thumbnailed")?,
    })
}

fn thumbnail_from_row<R: Row>(row: &R) -> Result<ThumbnailRecord>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ThumbnailRecord {
        width: row.try_get("width")?,
        height: row.try_get("height")?,
        method: row.try_get("method")?,
        content_type: row.try_get("content_type")?,
        size: row.try_get("size")?,
    })
}

impl Storage {
    pub async fn local_media(&self, media_id: &str) -> Result<Option<LocalMedia>> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT media_id, user_id, created_ts, content_type, upload_name, size, sha256,
                        authenticated, thumbnailed
                 FROM local_media WHERE media_id = $1",
            )
            .bind(media_id)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(media_from_row).transpose()
        })
    }

    /// Records an upload that arrived with its media ID (`POST /upload`).
    pub async fn insert_local_media(
        &self,
        media_id: &str,
        user_id: &str,
        created_ts: i64,
        authenticated: bool,
        file: &UploadedFile,
    ) -> Result<()> {
        write!(self, pool => {
            sqlx::query(
                "INSERT INTO local_media
                   (media_id, user_id, created_ts, content_type, upload_name, size, sha256, authenticated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(media_id)
            .bind(user_id)
            .bind(created_ts)
            .bind(&file.content_type)
            .bind(&file.upload_name)
            .bind(file.size)
            .bind(&file.sha256)
            .bind(authenticated)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Reserves a media ID for a later upload (`POST /create`), unless the
    /// user already has `max_pending` IDs waiting since `live_since_ts`;
    /// their expired IDs are dropped first. `Err(oldest_created_ts)` when
    /// over the limit.
    pub async fn create_pending_media(
        &self,
        media_id: &str,
        user_id: &str,
        created_ts: i64,
        authenticated: bool,
        live_since_ts: i64,
        max_pending: usize,
    ) -> Result<std::result::Result<(), i64>> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "DELETE FROM local_media WHERE user_id = $1 AND size IS NULL AND created_ts < $2",
            )
            .bind(user_id)
            .bind(live_since_ts)
            .execute(&mut *tx)
            .await?;
            let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), MIN(created_ts) FROM local_media
                 WHERE user_id = $1 AND size IS NULL",
            )
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
            if pending as usize >= max_pending {
                return Ok(Err(oldest.unwrap_or(created_ts)));
            }
            sqlx::query(
                "INSERT INTO local_media (media_id, user_id, created_ts, authenticated)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(media_id)
            .bind(user_id)
            .bind(created_ts)
            .bind(authenticated)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    /// Fills a reserved media ID; `false` if it already had content.
    pub async fn complete_pending_media(
        &self,
        media_id: &str,
        file: &UploadedFile,
    ) -> Result<bool> {
        write!(self, pool => {
            let done = sqlx::query(
                "UPDATE local_media SET content_type = $2, upload_name = $3, size = $4, sha256 = $5
                 WHERE media_id = $1 AND size IS NULL",
            )
            .bind(media_id)
            .bind(&file.content_type)
            .bind(&file.upload_name)
            .bind(file.size)
            .bind(&file.sha256)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    pub async fn media_thumbnails(&self, media_id: &str) -> Result<Vec<ThumbnailRecord>> {
        read!(self, pool => {
            let rows = sqlx::query(
                "SELECT width, height, method, content_type, size
                 FROM local_media_thumbnails WHERE media_id = $1
                 ORDER BY width, height, method, content_type",
            )
            .bind(media_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(thumbnail_from_row).collect()
        })
    }

    /// Records the thumbnails generated for a media (possibly none, when it
    /// cannot be thumbnailed) so that they are never generated again.
    pub async fn store_media_thumbnails(
        &self,
        media_id: &str,
        thumbnails: &[ThumbnailRecord],
    ) -> Result<()> {
        write!(self, pool => {
            let mut tx = pool.begin().await?;
            for t in thumbnails {
                sqlx::query(
                    "INSERT INTO local_media_thumbnails
                       (media_id, width, height, method, content_type, size)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT DO NOTHING",
                )
                .bind(media_id)
                .bind(t.width)
                .bind(t.height)
                .bind(&t.method)
                .bind(&t.content_type)
                .bind(t.size)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE local_media SET thumbnailed = TRUE WHERE media_id = $1")
                .bind(media_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
