//! Filters (spec: "Filtering"): saved per user, referred to by ID in `/sync`.

use axum::extract::State;
use ruma::{
    UserId,
    api::client::filter::{
        FilterDefinition, create_filter::v3 as create_filter, get_filter::v3 as get_filter,
    },
};

use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
};

/// 403 unless the path's user is the requester.
pub fn require_self(requester: &UserId, path_user: &UserId) -> ApiResult<()> {
    if requester != path_user {
        return Err(MatrixError::forbidden(format!(
            "{requester} cannot act for {path_user}"
        )));
    }
    Ok(())
}

/// A saved filter; 404 `M_NOT_FOUND` for an ID this user never saved.
pub async fn load_filter(state: &AppState, user: &UserId, id: &str) -> ApiResult<FilterDefinition> {
    let not_found = || MatrixError::not_found(format!("Unknown filter `{id}`"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let json = state
        .storage
        .filter(user.as_str(), id)
        .await?
        .ok_or_else(not_found)?;
    serde_json::from_str(&json).map_err(|_| MatrixError::internal())
}

/// `POST /user/{userId}/filter`
pub async fn create(
    State(state): State<AppState>,
    req: Ruma<create_filter::Request>,
) -> ApiResult<RumaResponse<create_filter::Response>> {
    let user = &req.session().user_id;
    require_self(user, &req.body.user_id)?;
    let json = serde_json::to_string(&req.body.filter).map_err(|_| MatrixError::internal())?;
    let id = state.storage.create_filter(user.as_str(), &json).await?;
    Ok(RumaResponse(create_filter::Response::new(id.to_string())))
}

/// `GET /user/{userId}/filter/{filterId}`
pub async fn get(
    State(state): State<AppState>,
    req: Ruma<get_filter::Request>,
) -> ApiResult<RumaResponse<get_filter::Response>> {
    let user = &req.session().user_id;
    require_self(user, &req.body.user_id)?;
    let filter = load_filter(&state, user, &req.body.filter_id).await?;
    Ok(RumaResponse(get_filter::Response::new(filter)))
}
