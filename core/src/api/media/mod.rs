//! The content repository's endpoints: uploads (`upload`), downloads and
//! thumbnails (`download`, and `legacy` for `/_matrix/media/{r0,v3}`),
//! configuration and URL previews. Served on listeners with the `client`
//! or `media` resource.

pub mod download;
pub mod legacy;
pub mod upload;

use axum::{
    Router,
    extract::State,
    routing::{post, put},
};
use ruma::api::{
    Metadata,
    client::{
        authenticated_media::{
            get_content::v1 as get_content, get_content_as_filename::v1 as get_content_as_filename,
            get_content_thumbnail::v1 as get_content_thumbnail,
            get_media_config::v1 as get_media_config, get_media_preview::v1 as get_media_preview,
        },
        media::{
            create_content::v3 as create_content, create_content_async::v3 as create_content_async,
            create_mxc_uri::v1 as create_mxc_uri,
        },
    },
    path_builder::PathBuilder,
};
use serde_json::{Map, Value};

use super::{
    RumaRouter,
    error::{ApiResult, MatrixError},
    ruma::{Ruma, RumaResponse},
};
use crate::{media::preview::PreviewError, state::AppState};

#[allow(deprecated)]
pub fn router() -> Router<AppState> {
    use ruma::api::client::media as old;
    let mut router = Router::new()
        .endpoint::<create_mxc_uri::Request, _, _>(upload::create_mxc_uri)
        .endpoint::<get_content::Request, _, _>(download::download)
        .endpoint::<get_content_as_filename::Request, _, _>(download::download_as)
        .endpoint::<get_content_thumbnail::Request, _, _>(download::thumbnail)
        .endpoint::<get_media_config::Request, _, _>(upload::config)
        .endpoint::<get_media_preview::Request, _, _>(preview)
        .endpoint::<old::get_content::v3::Request, _, _>(legacy::download)
        .endpoint::<old::get_content_as_filename::v3::Request, _, _>(legacy::download_as)
        .endpoint::<old::get_content_thumbnail::v3::Request, _, _>(legacy::thumbnail)
        .endpoint::<old::get_media_config::v3::Request, _, _>(legacy::config)
        .endpoint::<old::get_media_preview::v3::Request, _, _>(legacy::preview);
    // Upload bodies are streamed by the handlers, not parsed by `Ruma`, so
    // these take ruma's paths but not its extractor. Synapse also serves
    // the v1 path.
    for path in create_content::Request::PATH_BUILDER
        .all_paths()
        .chain(["/_matrix/media/v1/upload"])
    {
        router = router.route(path, post(upload::upload));
    }
    for path in create_content_async::Request::PATH_BUILDER.all_paths() {
        router = router.route(path, put(upload::upload_to_id));
    }
    router
}

/// `GET /_matrix/client/v1/media/preview_url`
async fn preview(
    State(state): State<AppState>,
    req: Ruma<get_media_preview::Request>,
) -> ApiResult<RumaResponse<get_media_preview::Response>> {
    let og = preview_for(&state, req.session().user_id.as_str(), &req.body.url).await?;
    let response = get_media_preview::Response::from_serialize(&og).map_err(internal)?;
    Ok(RumaResponse(response))
}

/// A preview, or the error Synapse gives: 404 `M_UNRECOGNIZED` when
/// previews are off, 403 for a blocked IP literal, 502 when the page
/// cannot be had (no permitted address, too large, upstream error).
async fn preview_for(state: &AppState, user_id: &str, url: &str) -> ApiResult<Map<String, Value>> {
    let Some(previewer) = &state.media.previewer else {
        return Err(MatrixError::unrecognized(http::StatusCode::NOT_FOUND));
    };
    previewer
        .preview(&state.media, &state.storage, &state.config, user_id, url)
        .await
        .map_err(|err| {
            use http::StatusCode;
            let message = err.to_string();
            match err {
                PreviewError::BadUrl(_) => MatrixError::invalid_param(message),
                PreviewError::Blocked => MatrixError::unknown(StatusCode::FORBIDDEN, message),
                PreviewError::TooLarge(_) => MatrixError::new(
                    StatusCode::BAD_GATEWAY,
                    ruma::api::error::ErrorKind::TooLarge,
                    message,
                ),
                PreviewError::Unresolvable | PreviewError::Upstream(_) => {
                    MatrixError::unknown(StatusCode::BAD_GATEWAY, message)
                }
                PreviewError::Internal(_) => internal(message),
            }
        })
}

/// A failure that is ours, not the client's: logged, answered 500.
fn internal(err: impl std::fmt::Display) -> MatrixError {
    tracing::error!(error = %err, "media request failed");
    MatrixError::internal()
}
