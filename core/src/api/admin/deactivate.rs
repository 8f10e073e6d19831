//! `POST /_synapse/admin/v1/deactivate/{userId}`: Synapse's Deactivate
//! Account API.

use axum::{
    Json,
    extract::{Path, State},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{OptionalJsonObject, ServerAdmin, local_user_id};
use crate::{
    api::{
        client::account::deactivate_account,
        error::{ApiResult, MatrixError},
    },
    state::AppState,
};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Deactivate {
    erase: bool,
}

/// Deactivates a local user as their own request would
/// ([`deactivate_account`]), with `by_admin`: the third-party rules plugins
/// may refuse (403 `M_FORBIDDEN`) and are told. `erase` clears the display
/// name and avatar. An empty body is `{}`. 404 `M_NOT_FOUND` for an
/// unknown user, 400 for another server's.
pub async fn deactivate(
    State(state): State<AppState>,
    admin: ServerAdmin,
    Path(user_id): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject<Deactivate>,
) -> ApiResult<Json<Value>> {
    let user = local_user_id(&state, &user_id, "Can only deactivate local users")?;
    if state.storage.user(user.as_str()).await?.is_none() {
        return Err(MatrixError::not_found("User not found"));
    }
    tracing::info!(admin = %admin.user_id, %user, "an admin deactivates an account");
    deactivate_account(&state, &user, true, body.erase).await?;
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}
