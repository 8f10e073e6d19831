//! Uploads (spec: "Content repository"): `POST /upload`, and the
//! asynchronous pair `POST /_matrix/media/v1/create` + `PUT
//! /upload/{serverName}/{mediaId}`.
//!
//! Bodies are not read by the `Ruma` extractor (which buffers up to the
//! JSON limit): they are streamed to a temporary file, counted as they
//! come, and refused with 413 as soon as they pass `max_upload_size` — or
//! before a byte is read when `Content-Length` already says so. The spam
//! checkers see the first MiB, the type and the length; a refused or
//! failed upload leaves nothing behind.

use axum::{
    extract::{Path, Query, Request, State, rejection::PathRejection},
    response::{IntoResponse, Response},
};
use http::{StatusCode, header, request::Parts};
use myelin_plugin_api::Callback;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedMxcUri, UInt,
    api::client::{
        authenticated_media::get_media_config::v1 as get_media_config,
        media::{create_content::v3 as create_content, create_mxc_uri::v1 as create_mxc_uri},
    },
    api::error::ErrorKind,
};
use serde::Deserialize;

use super::internal;
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        plugins,
        ruma::{Ruma, RumaResponse, access_token, authenticate, missing_token},
    },
    auth::tokens::Session,
    media::{Upload, files::ReceiveError, is_expired, new_media_id},
    state::AppState,
    storage::now_ms,
};

/// What `check_media_file_for_spam` sees of a file (the WIT's promise).
const SPAM_PREFIX: usize = 1024 * 1024;

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

/// `POST /_matrix/media/v3/upload`
pub async fn upload(State(state): State<AppState>, request: Request) -> Response {
    match store_upload(&state, request, None).await {
        Ok(media_id) => {
            let uri = OwnedMxcUri::from(format!("mxc://{}/{media_id}", state.server_name));
            RumaResponse(create_content::Response::new(uri)).into_response()
        }
        Err(err) => err.into_response(),
    }
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`: fills a media ID
/// from `/create`. Only its creator may, only once, and only before it
/// expires; a concurrent upload to the same ID gets 409 at once.
pub async fn upload_to_id(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let result = async {
        let Path((server_name, media_id)) =
            path.map_err(|_| MatrixError::invalid_param("Invalid path parameter encoding"))?;
        if server_name != state.server_name.as_str() {
            return Err(MatrixError::not_found("Non-local server name specified"));
        }
        store_upload(&state, request, Some(media_id)).await
    };
    match result.await {
        Ok(_) => axum::Json(serde_json::json!({})).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Authenticates, receives and stores one upload; into `reserved` (an ID
/// from `/create`) or under a new media ID. Returns the media ID.
async fn store_upload(
    state: &AppState,
    request: Request,
    reserved: Option<String>,
) -> ApiResult<String> {
    let (parts, body) = request.into_parts();
    let session = uploader(state, &parts).await?;
    let user_id = session.user_id.as_str();

    // Hold the reserved ID's lock for the whole upload; a second upload
    // to it while the first is running is refused like one after it.
    let lock = reserved.as_deref().map(|id| state.media.lock(id));
    let _uploading = match &lock {
        Some(lock) => Some(lock.try_lock().map_err(|_| cannot_overwrite())?),
        None => None,
    };
    if let Some(media_id) = &reserved {
        let media = if crate::media::files::valid_media_id(media_id) {
            state.storage.local_media(media_id).await?
        } else {
            None
        };
        let media = media.ok_or_else(|| MatrixError::not_found("Unknown media ID"))?;
        if media.user_id != user_id {
            return Err(MatrixError::forbidden(
                "Only the creator of the media ID can upload to it",
            ));
        }
        if media.size.is_some() {
            return Err(cannot_overwrite());
        }
        if is_expired(&state.config, &media) {
            return Err(MatrixError::not_found("Media ID has expired"));
        }
    }

    let limit = state.config.max_upload_size.0;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let query = Query::<UploadQuery>::try_from_uri(&parts.uri)
        .map_err(|e| MatrixError::invalid_param(e.body_text()))?;
    let upload = Upload {
        content_type: content_type(&parts)?,
        // An empty name is no name.
        upload_name: query.0.filename.filter(|name| !name.is_empty()),
    };

    let received = state
        .media
        .files
        .receive(body.into_data_stream(), limit, SPAM_PREFIX)
        .await
        .map_err(|err| match err {
            ReceiveError::TooLarge(_) => too_large(),
            ReceiveError::Body(message) => MatrixError::unknown(
                StatusCode::BAD_REQUEST,
                format!("Could not read the upload: {message}"),
            ),
            ReceiveError::Io(err) => internal(err),
        })?;

    let checks = state.plugins.current();
    if checks.wants(Callback::CheckMediaFileForSpam) {
        let verdict = checks
            .check_media_file_for_spam(&received.prefix, Some(&upload.content_type), received.size)
            .await;
        // Dropping `received` deletes the file.
        plugins::check(verdict)?;
    }

    match reserved {
        Some(media_id) => {
            let stored = state
                .media
                .store_reserved(&state.storage, &media_id, upload, received)
                .await
                .map_err(internal)?;
            if !stored {
                return Err(cannot_overwrite());
            }
            Ok(media_id)
        }
        None => state
            .media
            .store(&state.storage, &state.config, user_id, upload, received)
            .await
            .map_err(internal),
    }
}

/// `POST /_matrix/media/v1/create`: reserves a media ID for a later
/// upload; at most `max_pending_media_uploads` wait per user (429 with
/// the time until the oldest expires, as Synapse).
pub async fn create_mxc_uri(
    State(state): State<AppState>,
    req: Ruma<create_mxc_uri::Request>,
) -> ApiResult<RumaResponse<create_mxc_uri::Response>> {
    let session = req.session();
    refuse_guests(session)?;
    let media_id = new_media_id();
    let now = now_ms();
    let lifetime = state.config.unused_expiration_time.0.as_millis() as i64;
    let created = state
        .storage
        .create_pending_media(
            &media_id,
            session.user_id.as_str(),
            now,
            state.config.enable_authenticated_media,
            now - lifetime,
            state.config.max_pending_media_uploads,
        )
        .await?;
    if let Err(oldest) = created {
        let wait = (oldest + lifetime - now).max(0) as u64;
        return Err(MatrixError::limit_exceeded(
            std::time::Duration::from_millis(wait),
        ));
    }
    let uri = OwnedMxcUri::from(format!("mxc://{}/{media_id}", state.server_name));
    let mut response = create_mxc_uri::Response::new(uri);
    response.unused_expires_at = UInt::new((now + lifetime) as u64).map(MilliSecondsSinceUnixEpoch);
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v1/media/config`
pub async fn config(
    State(state): State<AppState>,
    _req: Ruma<get_media_config::Request>,
) -> RumaResponse<get_media_config::Response> {
    let size = UInt::try_from(state.config.max_upload_size.0).unwrap_or(UInt::MAX);
    RumaResponse(get_media_config::Response::new(size))
}

/// The uploading user, from the access token (guests may not upload).
async fn uploader(state: &AppState, parts: &Parts) -> ApiResult<Session> {
    let token = access_token(parts).ok_or_else(missing_token)?;
    let session = authenticate(state, token).await?;
    refuse_guests(&session)?;
    Ok(session)
}

fn refuse_guests(session: &Session) -> ApiResult<()> {
    if session.is_guest {
        return Err(MatrixError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest access not allowed",
        ));
    }
    Ok(())
}

fn content_type(parts: &Parts) -> ApiResult<String> {
    match parts.headers.get(header::CONTENT_TYPE) {
        None => Ok("application/octet-stream".to_owned()),
        Some(value) => value
            .to_str()
            .map(str::to_owned)
            .map_err(|_| MatrixError::invalid_param("Content-Type is not ASCII")),
    }
}

fn too_large() -> MatrixError {
    MatrixError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::TooLarge,
        "Upload request body is too large",
    )
}

fn cannot_overwrite() -> MatrixError {
    MatrixError::new(
        StatusCode::CONFLICT,
        ErrorKind::CannotOverwriteMedia,
        "Media ID already has content",
    )
}
