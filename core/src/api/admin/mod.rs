//! Admin endpoints: Synapse-compatible ones under `/_synapse/admin`, and
//! Myelin's own under `/_myelin/admin`.

pub mod plugins;
pub mod register;

use axum::{
    Router,
    extract::FromRequestParts,
    routing::{get, post},
};
use http::request::Parts;

use super::{
    error::MatrixError,
    ruma::{access_token, authenticate, missing_token},
};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/_synapse/admin/v1/register",
            get(register::get_nonce).post(register::register_with_shared_secret),
        )
        .route("/_myelin/admin/v1/plugins", get(plugins::list))
        .route("/_myelin/admin/v1/plugins/reload", post(plugins::reload))
}

/// A request from a server admin's access token; 401 without a valid token,
/// 403 for anyone else.
pub struct ServerAdmin;

impl FromRequestParts<AppState> for ServerAdmin {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, MatrixError> {
        let token = access_token(parts).ok_or_else(missing_token)?;
        let session = authenticate(state, token).await?;
        let user = state.storage.user(session.user_id.as_str()).await?;
        if !user.is_some_and(|u| u.is_admin) {
            return Err(MatrixError::forbidden("You are not a server admin"));
        }
        Ok(Self)
    }
}
