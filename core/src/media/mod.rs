//! The media repository: files under `media_store_path` (`files`),
//! metadata in the database (`storage::media`), thumbnails made once per
//! image and kept (`thumbnail`), and URL previews (`preview`). Only local
//! media exist: without federation, other servers' media are not fetched.

pub mod files;
pub mod preview;
pub mod thumbnail;

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use parking_lot::Mutex;
use rand::{Rng, distributions::Alphanumeric};
use tokio::sync::Semaphore;

use self::{
    files::{Files, Received},
    preview::UrlPreviewer,
};
use crate::{
    config::Config,
    storage::{
        Storage,
        media::{LocalMedia, ThumbnailRecord, UploadedFile},
        now_ms,
    },
};

/// How often a download of a reserved media ID looks for its upload.
const UPLOAD_POLL: Duration = Duration::from_millis(500);

pub struct Media {
    pub files: Files,
    /// One lock per media ID in use: an upload to a reserved ID, or the
    /// generation of a media's thumbnails.
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Thumbnailing is CPU- and memory-heavy: at most one image per core.
    thumbnailing: Semaphore,
    pub previewer: Option<UrlPreviewer>,
}

/// What the client said about an upload.
pub struct Upload {
    pub content_type: String,
    pub upload_name: Option<String>,
}

/// A local media ID as a download finds it.
pub enum Lookup {
    Ready(LocalMedia),
    NotFound,
    /// Reserved by `/create` and still empty when the wait ended.
    NotYetUploaded,
}

/// Synapse's media IDs: 24 random letters and digits.
pub fn new_media_id() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl Media {
    pub fn open(config: &Config) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            files: Files::open(&config.media_store_path())?,
            locks: Mutex::default(),
            thumbnailing: Semaphore::new(cores),
            previewer: UrlPreviewer::from_config(config),
        })
    }

    /// The lock of one media ID, shared by everyone asking for it now.
    pub fn lock(&self, media_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock();
        if let Some(lock) = locks.get(media_id).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() >= 1024 {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(media_id.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Stores a received file under a new media ID for `user_id`.
    pub async fn store(
        &self,
        storage: &Storage,
        config: &Config,
        user_id: &str,
        upload: Upload,
        received: Received,
    ) -> Result<String, StoreError> {
        let media_id = new_media_id();
        let file = uploaded_file(upload, &received);
        self.files
            .keep(received, self.files.content_path(&media_id))
            .await?;
        storage
            .insert_local_media(
                &media_id,
                user_id,
                now_ms(),
                config.enable_authenticated_media,
                &file,
            )
            .await?;
        Ok(media_id)
    }

    /// Fills a media ID reserved by `/create`; the caller holds its lock and
    /// has checked that it is still empty.
    pub async fn store_reserved(
        &self,
        storage: &Storage,
        media_id: &str,
        upload: Upload,
        received: Received,
    ) -> Result<bool, StoreError> {
        let file = uploaded_file(upload, &received);
        self.files
            .keep(received, self.files.content_path(media_id))
            .await?;
        Ok(storage.complete_pending_media(media_id, &file).await?)
    }

    /// A media ID's record, waiting up to `timeout` for the upload of a
    /// reserved one (as Synapse does). Reserved IDs expire unused after
    /// `unused_expiration_time`.
    pub async fn lookup(
        &self,
        storage: &Storage,
        config: &Config,
        media_id: &str,
        timeout: Duration,
    ) -> Result<Lookup, sqlx::Error> {
        if !files::valid_media_id(media_id) {
            return Ok(Lookup::NotFound);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(media) = storage.local_media(media_id).await? else {
                return Ok(Lookup::NotFound);
            };
            if media.size.is_some() {
                return Ok(Lookup::Ready(media));
            }
            if is_expired(config, &media) {
                return Ok(Lookup::NotFound);
            }
            if tokio::time::Instant::now() + UPLOAD_POLL > deadline {
                return Ok(Lookup::NotYetUploaded);
            }
            tokio::time::sleep(UPLOAD_POLL).await;
        }
    }

    /// The stored thumbnails of a media, generating them first if this is
    /// the first request for one. Media that are not images we can
    /// thumbnail have none.
    pub async fn thumbnails(
        &self,
        storage: &Storage,
        config: &Config,
        media: &LocalMedia,
    ) -> Result<Vec<ThumbnailRecord>, StoreError> {
        let id = &media.media_id;
        if media.thumbnailed {
            return Ok(storage.media_thumbnails(id).await?);
        }
        let Some(output_type) = media
            .content_type
            .as_deref()
            .and_then(thumbnail::output_type)
        else {
            return Ok(Vec::new());
        };
        let lock = self.lock(id);
        let _generating = lock.lock().await;
        // Whoever held the lock before may have made them.
        if storage
            .local_media(id)
            .await?
            .is_some_and(|m| m.thumbnailed)
        {
            return Ok(storage.media_thumbnails(id).await?);
        }
        let _core = self
            .thumbnailing
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let source = self.files.content_path(id);
        let sizes = config.thumbnail_sizes.clone();
        let max_pixels = config.max_image_pixels.0;
        let generated = tokio::task::spawn_blocking(move || {
            thumbnail::generate(&source, output_type, &sizes, max_pixels)
        })
        .await
        .map_err(std::io::Error::other)?;
        let records = match generated {
            Ok(thumbnails) => {
                let mut records = Vec::with_capacity(thumbnails.len());
                for t in thumbnails {
                    let r = &t.record;
                    let path = self.files.thumbnail_path(
                        id,
                        r.width,
                        r.height,
                        &r.content_type,
                        &r.method,
                    );
                    write_durably(path, t.bytes).await?;
                    records.push(t.record);
                }
                records
            }
            Err(err) => {
                tracing::info!(media_id = %id, error = %err, "media not thumbnailed");
                Vec::new()
            }
        };
        storage.store_media_thumbnails(id, &records).await?;
        Ok(records)
    }
}

pub fn is_expired(config: &Config, media: &LocalMedia) -> bool {
    media.size.is_none()
        && media.created_ts + (config.unused_expiration_time.0.as_millis() as i64) < now_ms()
}

fn uploaded_file(upload: Upload, received: &Received) -> UploadedFile {
    UploadedFile {
        content_type: upload.content_type,
        upload_name: upload.upload_name,
        size: received.size as i64,
        sha256: received.sha256.clone(),
    }
}

async fn write_durably(path: std::path::PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let dir = path.parent().expect("store paths have a parent");
        std::fs::create_dir_all(dir)?;
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&bytes)?;
        file.sync_all()
    })
    .await
    .map_err(std::io::Error::other)?
}
