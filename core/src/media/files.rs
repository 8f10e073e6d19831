//! The media store on disk, laid out as Synapse lays it out so that an
//! operator recognises it: `local_content/ab/cd/efgh…` for a media ID
//! `abcdefgh…`, `local_thumbnails/ab/cd/efgh…/<w>-<h>-<type>-<subtype>-<method>`
//! for its thumbnails. Uploads stream into `tmp/` and are renamed into
//! place only once complete, synced and accepted.

use std::{
    io,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub struct Files {
    root: PathBuf,
}

/// A complete upload in the temporary directory; deleted when dropped
/// unless [`Files::keep`] moves it into the store.
pub struct Received {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    pub size: u64,
    pub sha256: String,
    /// The first bytes, for the spam checkers.
    pub prefix: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the content is larger than {0} bytes")]
    TooLarge(u64),
    #[error("could not read the content: {0}")]
    Body(String),
    #[error("could not write the content: {0}")]
    Io(#[from] io::Error),
}

/// Media IDs become path components: only IDs that cannot climb out of
/// the store (and are long enough to shard) are looked up at all.
pub fn valid_media_id(media_id: &str) -> bool {
    (5..=255).contains(&media_id.len())
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Files {
    /// Creates the store's directories and empties `tmp/` (what is left
    /// there is from uploads a crash interrupted).
    pub fn open(root: &Path) -> io::Result<Self> {
        let files = Self {
            root: root.to_owned(),
        };
        let tmp = files.tmp();
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        for dir in [
            tmp,
            root.join("local_content"),
            root.join("local_thumbnails"),
        ] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(files)
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn sharded(&self, top: &str, media_id: &str) -> PathBuf {
        debug_assert!(valid_media_id(media_id));
        self.root
            .join(top)
            .join(&media_id[0..2])
            .join(&media_id[2..4])
            .join(&media_id[4..])
    }

    pub fn content_path(&self, media_id: &str) -> PathBuf {
        self.sharded("local_content", media_id)
    }

    pub fn thumbnail_path(
        &self,
        media_id: &str,
        width: i64,
        height: i64,
        content_type: &str,
        method: &str,
    ) -> PathBuf {
        let (top, sub) = content_type.split_once('/').unwrap_or((content_type, ""));
        self.sharded("local_thumbnails", media_id)
            .join(format!("{width}-{height}-{top}-{sub}-{method}"))
    }

    /// Streams `body` into a temporary file, hashing and counting as it
    /// goes, and gives up as soon as it passes `limit` bytes.
    pub async fn receive<E: std::fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>>,
        limit: u64,
        prefix_cap: usize,
    ) -> Result<Received, ReceiveError> {
        let tmp = self.tmp();
        let (file, path) = tokio::task::spawn_blocking(move || {
            tempfile::NamedTempFile::new_in(tmp).map(tempfile::NamedTempFile::into_parts)
        })
        .await
        .map_err(io::Error::other)??;
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut prefix = Vec::new();
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ReceiveError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(ReceiveError::TooLarge(limit));
            }
            if prefix.len() < prefix_cap {
                let take = (prefix_cap - prefix.len()).min(chunk.len());
                prefix.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(Received {
            file,
            path,
            size,
            sha256: hex::encode(hasher.finalize()),
            prefix,
        })
    }

    /// Moves a received file to `dest`, durably: the data is synced before
    /// the rename and the directory after, so a 200 means it is on disk.
    pub async fn keep(&self, received: Received, dest: PathBuf) -> io::Result<()> {
        let Received { file, path, .. } = received;
        file.sync_all().await?;
        drop(file);
        tokio::task::spawn_blocking(move || {
            let dir = dest.parent().expect("store paths have a parent");
            std::fs::create_dir_all(dir)?;
            path.persist(&dest).map_err(|e| e.error)?;
            std::fs::File::open(dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)?
    }
}
