//! Downloads and thumbnails (spec: "Content repository"), through the
//! authenticated `/_matrix/client/v1/media/*` endpoints and the legacy
//! `/_matrix/media/*` ones. With `enable_authenticated_media` (the default),
//! media uploaded while it was on are not served by the legacy endpoints:
//! they answer 404, as Synapse does; media from before stay reachable there.
//!
//! Files are streamed from disk and served as Synapse serves them, plus
//! `X-Content-Type-Options: nosniff`: only types on Synapse's list of types
//! safe to render are `inline`, everything else is an `attachment`, under a
//! sandboxing `Content-Security-Policy`, so that nobody can host a page or a
//! script on the homeserver's origin.

use std::time::Duration;

use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderName, HeaderValue, StatusCode, header};
use ruma::{
    ServerName,
    api::client::authenticated_media::{
        get_content::v1 as get_content, get_content_as_filename::v1 as get_content_as_filename,
        get_content_thumbnail::v1 as get_content_thumbnail,
    },
    http_headers::{ContentDisposition, ContentDispositionType},
};
use tokio_util::io::ReaderStream;

use super::internal;
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::Ruma,
    },
    media::Lookup,
    state::AppState,
    storage::media::LocalMedia,
};

/// The longest a download waits for a reserved media ID's upload.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Read size when streaming a file.
const CHUNK: usize = 64 * 1024;

/// Types safe to show in a browser (Synapse's `INLINE_CONTENT_TYPES`;
/// SVG is deliberately absent).
const INLINE_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Text types served with a UTF-8 charset when they name none (Synapse's
/// `TEXT_CONTENT_TYPES`).
const TEXT_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/csv",
    "text/html",
    "text/calendar",
    "text/plain",
    "text/javascript",
    "application/json",
    "application/ld+json",
    "application/rtf",
    "image/svg+xml",
    "text/xml",
];

const SANDBOX_CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// Which family of endpoints a request came through.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Authenticated,
    Legacy,
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
pub async fn download(
    State(state): State<AppState>,
    req: Ruma<get_content::Request>,
) -> ApiResult<Response> {
    let body = req.body;
    serve_content(
        &state,
        &body.server_name,
        &body.media_id,
        None,
        body.timeout_ms,
        Via::Authenticated,
    )
    .await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
pub async fn download_as(
    State(state): State<AppState>,
    req: Ruma<get_content_as_filename::Request>,
) -> ApiResult<Response> {
    let body = req.body;
    serve_content(
        &state,
        &body.server_name,
        &body.media_id,
        Some(body.filename),
        body.timeout_ms,
        Via::Authenticated,
    )
    .await
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub async fn thumbnail(
    State(state): State<AppState>,
    req: Ruma<get_content_thumbnail::Request>,
) -> ApiResult<Response> {
    let body = req.body;
    let method = body.method.as_ref().map_or("scale", |m| m.as_str());
    serve_thumbnail(
        &state,
        &body.server_name,
        &body.media_id,
        (body.width.into(), body.height.into(), method),
        body.timeout_ms,
        Via::Authenticated,
    )
    .await
}

/// The media to serve: local, uploaded, and allowed through `via`.
pub async fn find(
    state: &AppState,
    server_name: &ServerName,
    media_id: &str,
    timeout: Duration,
    via: Via,
) -> ApiResult<LocalMedia> {
    if server_name != state.server_name {
        // Other servers' media come over federation, which Myelin does not
        // speak yet.
        return Err(MatrixError::not_found(
            "Remote media are not available on this server",
        ));
    }
    let lookup = state
        .media
        .lookup(
            &state.storage,
            &state.config,
            media_id,
            timeout.min(MAX_WAIT),
        )
        .await?;
    let media = match lookup {
        Lookup::Ready(media) => media,
        Lookup::NotFound => return Err(MatrixError::not_found("Media not found")),
        Lookup::NotYetUploaded => {
            return Err(MatrixError::new(
                StatusCode::GATEWAY_TIMEOUT,
                ruma::api::error::ErrorKind::NotYetUploaded,
                "Media has not been uploaded yet",
            ));
        }
    };
    if via == Via::Legacy && state.config.enable_authenticated_media && media.authenticated {
        return Err(MatrixError::not_found("Media not found"));
    }
    Ok(media)
}

pub async fn serve_content(
    state: &AppState,
    server_name: &ServerName,
    media_id: &str,
    filename: Option<String>,
    timeout: Duration,
    via: Via,
) -> ApiResult<Response> {
    let media = find(state, server_name, media_id, timeout, via).await?;
    let content_type = media
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let name = filename.or(media.upload_name.clone());
    serve_file(
        state.media.files.content_path(&media.media_id),
        content_type,
        name,
    )
    .await
}

pub async fn serve_thumbnail(
    state: &AppState,
    server_name: &ServerName,
    media_id: &str,
    (width, height, method): (u64, u64, &str),
    timeout: Duration,
    via: Via,
) -> ApiResult<Response> {
    let media = find(state, server_name, media_id, timeout, via).await?;
    let thumbnails = state
        .media
        .thumbnails(&state.storage, &state.config, &media)
        .await
        .map_err(internal)?;
    if thumbnails.is_empty() {
        // Synapse's answer when a media has no thumbnails (not an image it
        // can read, or too large).
        return Err(MatrixError::unknown(
            StatusCode::BAD_REQUEST,
            "Cannot find any thumbnails for the requested media: it is not an image in a supported format (image/jpeg, image/png, image/gif, image/webp) or thumbnailing failed",
        ));
    }
    // Synapse asks for PNG until clients can name their preference.
    let chosen = crate::media::thumbnail::select(&thumbnails, width, height, method, "image/png")
        .ok_or_else(|| MatrixError::not_found("No thumbnail matches the request"))?;
    let path = state.media.files.thumbnail_path(
        &media.media_id,
        chosen.width,
        chosen.height,
        &chosen.content_type,
        &chosen.method,
    );
    serve_file(path, &chosen.content_type, None).await
}

/// Streams a stored file with the headers that keep it harmless.
async fn serve_file(
    path: std::path::PathBuf,
    content_type: &str,
    filename: Option<String>,
) -> ApiResult<Response> {
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "media file missing from the store");
            return Err(MatrixError::not_found("Media not found"));
        }
        Err(err) => return Err(internal(err)),
    };
    let length = file.metadata().await.map_err(internal)?.len();
    let body = Body::from_stream(ReaderStream::with_capacity(file, CHUNK));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let served_type = if TEXT_CONTENT_TYPES.contains(&content_type.to_ascii_lowercase().as_str()) {
        format!("{content_type}; charset=UTF-8")
    } else {
        content_type.to_owned()
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::try_from(served_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    let disposition = if INLINE_CONTENT_TYPES.contains(&essence.as_str()) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let disposition = ContentDisposition::new(disposition).with_filename(filename);
    if let Ok(value) = HeaderValue::try_from(disposition.to_string()) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, SANDBOX_CSP),
        (
            HeaderName::from_static("x-content-security-policy"),
            "sandbox;",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "cross-origin",
        ),
        // Media never change: browsers keep them a day; shared caches
        // revalidate, so access checks keep applying (Synapse's choice).
        (
            header::CACHE_CONTROL,
            "public, max-age=86400, s-maxage=0, proxy-revalidate",
        ),
        (
            HeaderName::from_static("x-robots-tag"),
            "noindex, nofollow, noarchive, noimageindex",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}
