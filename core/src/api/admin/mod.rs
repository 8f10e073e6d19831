//! Admin endpoints: Synapse-compatible ones under `/_synapse/admin`, and
//! Myelin's own under `/_myelin/admin`.

pub mod deactivate;
pub mod plugins;
pub mod register;
pub mod rooms;
pub mod users;

use axum::{
    Router,
    extract::{FromRequest, FromRequestParts, Request},
    routing::{delete, get, post},
};
use http::{StatusCode, request::Parts};
use ruma::{OwnedUserId, api::error::ErrorKind};
use serde::de::DeserializeOwned;

use super::{
    error::MatrixError,
    ruma::{MAX_JSON_BODY, access_token, authenticate, missing_token, read_body},
};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/_synapse/admin/v1/register",
            get(register::get_nonce).post(register::register_with_shared_secret),
        )
        .route(
            "/_synapse/admin/v1/rooms/{room_id}",
            delete(rooms::delete_room),
        )
        .route(
            "/_synapse/admin/v2/rooms/{room_id}",
            delete(rooms::start_room_deletion),
        )
        .route(
            "/_synapse/admin/v2/rooms/{room_id}/delete_status",
            get(rooms::room_deletion_status),
        )
        .route(
            "/_synapse/admin/v2/rooms/delete_status/{delete_id}",
            get(rooms::deletion_status),
        )
        .route(
            "/_synapse/admin/v1/deactivate/{user_id}",
            post(deactivate::deactivate),
        )
        .route(
            "/_synapse/admin/v2/users/{user_id}",
            get(users::get_user).put(users::put_user),
        )
        .route("/_myelin/admin/v1/plugins", get(plugins::list))
        .route("/_myelin/admin/v1/plugins/reload", post(plugins::reload))
}

/// A request from a server admin's access token; 401 without a valid token,
/// 403 for anyone else.
pub struct ServerAdmin {
    pub user_id: OwnedUserId,
}

impl FromRequestParts<AppState> for ServerAdmin {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, MatrixError> {
        let token = access_token(parts).ok_or_else(missing_token)?;
        let session = authenticate(state, token).await?;
        let user = state.storage.user(session.user_id.as_str()).await?;
        if !user.is_some_and(|u| u.is_admin) {
            return Err(MatrixError::forbidden("You are not a server admin"));
        }
        Ok(Self {
            user_id: session.user_id.clone(),
        })
    }
}

/// A JSON object body, as Synapse's admin API reads one
/// (`parse_json_object_from_request`): 400 `M_NOT_JSON` for a body that is
/// not JSON (an empty one included), `M_BAD_JSON` for JSON that is not an
/// object or whose fields have the wrong types.
pub struct JsonObject<T>(pub T);

/// As [`JsonObject`], with an empty body read as `{}` (Synapse's
/// `allow_empty_body`).
pub struct OptionalJsonObject<T>(pub T);

async fn json_object<T: DeserializeOwned>(
    req: Request,
    allow_empty: bool,
) -> Result<T, MatrixError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts, body, MAX_JSON_BODY).await?;
    let value: serde_json::Value = if allow_empty && bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(&bytes).map_err(|_| {
            MatrixError::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::NotJson,
                "Content not JSON.",
            )
        })?
    };
    if !value.is_object() {
        return Err(MatrixError::bad_json("Content must be a JSON object."));
    }
    serde_json::from_value(value).map_err(|e| MatrixError::bad_json(e.to_string()))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonObject<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, MatrixError> {
        json_object(req, false).await.map(Self)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonObject<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, MatrixError> {
        json_object(req, true).await.map(Self)
    }
}

/// A user ID from the path that must be a user of this server: 400
/// `M_INVALID_PARAM` for a malformed ID, 400 `M_UNKNOWN` with `message` for
/// another server's user (Synapse's answers).
pub fn local_user_id(
    state: &AppState,
    user_id: &str,
    message: &str,
) -> Result<OwnedUserId, MatrixError> {
    let user_id = ruma::UserId::parse(user_id)
        .map_err(|_| MatrixError::invalid_param(format!("Invalid user ID {user_id}")))?;
    if user_id.server_name() != state.server_name {
        return Err(MatrixError::unknown(StatusCode::BAD_REQUEST, message));
    }
    Ok(user_id)
}
