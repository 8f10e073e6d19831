//! Reporting content (spec: "Reporting content"): stored for the admin API.

use axum::extract::State;
use ruma::api::client::room::{
    report_content::v3 as report_content, report_room::v3 as report_room,
};

use super::room_access::{event_in_room, find_room, membership};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
};

/// `POST /rooms/{roomId}/report/{eventId}`: 404 unless the reporter is in
/// the room and the event is there, so reports reveal nothing.
pub async fn report_event(
    State(state): State<AppState>,
    req: Ruma<report_content::Request>,
) -> ApiResult<RumaResponse<report_content::Response>> {
    let body = &req.body;
    let user = &req.session().user_id;
    let not_found = || MatrixError::not_found("Event not found");
    find_room(&state, &body.room_id)
        .await
        .map_err(|_| not_found())?;
    if membership(&state, &body.room_id, user).await? != "join" {
        return Err(not_found());
    }
    event_in_room(&state, &body.room_id, &body.event_id).await?;
    state
        .storage
        .report_event(
            body.room_id.as_str(),
            Some(body.event_id.as_str()),
            user.as_str(),
            body.reason.as_deref(),
        )
        .await?;
    Ok(RumaResponse(report_content::Response::new()))
}

/// `POST /rooms/{roomId}/report`
pub async fn report_room(
    State(state): State<AppState>,
    req: Ruma<report_room::Request>,
) -> ApiResult<RumaResponse<report_room::Response>> {
    let body = &req.body;
    find_room(&state, &body.room_id).await?;
    state
        .storage
        .report_event(
            body.room_id.as_str(),
            None,
            req.session().user_id.as_str(),
            Some(&body.reason),
        )
        .await?;
    Ok(RumaResponse(report_room::Response::new()))
}
