//! The legacy `/_matrix/media/{r0,v3}/*` endpoints, deprecated since
//! Matrix 1.11 but still used by older clients. Downloads and thumbnails
//! need no access token here; what they may serve is decided in
//! `download::find` (`enable_authenticated_media`).
#![allow(deprecated)]

use axum::{extract::State, response::Response};
use ruma::{
    UInt,
    api::client::media::{
        get_content::v3 as get_content, get_content_as_filename::v3 as get_content_as_filename,
        get_content_thumbnail::v3 as get_content_thumbnail,
        get_media_config::v3 as get_media_config, get_media_preview::v3 as get_media_preview,
    },
};

use super::{
    download::{Via, serve_content, serve_thumbnail},
    preview_for,
};
use crate::{
    api::{
        error::ApiResult,
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
};

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}`
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
        Via::Legacy,
    )
    .await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
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
        Via::Legacy,
    )
    .await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
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
        Via::Legacy,
    )
    .await
}

/// `GET /_matrix/media/v3/config`
pub async fn config(
    State(state): State<AppState>,
    _req: Ruma<get_media_config::Request>,
) -> RumaResponse<get_media_config::Response> {
    let size = UInt::try_from(state.config.max_upload_size.0).unwrap_or(UInt::MAX);
    RumaResponse(get_media_config::Response::new(size))
}

/// `GET /_matrix/media/v3/preview_url`
pub async fn preview(
    State(state): State<AppState>,
    req: Ruma<get_media_preview::Request>,
) -> ApiResult<RumaResponse<get_media_preview::Response>> {
    let og = preview_for(&state, req.session().user_id.as_str(), &req.body.url).await?;
    let response = get_media_preview::Response::from_serialize(&og).map_err(super::internal)?;
    Ok(RumaResponse(response))
}
