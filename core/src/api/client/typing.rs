//! `PUT /rooms/{roomId}/typing/{userId}` (spec: "Typing Notifications").

use axum::extract::State;
use ruma::api::client::typing::create_typing_event::v3::{self as create_typing, Typing};

use super::{filter::require_self, room_access::require_joined};
use crate::{
    api::{
        error::ApiResult,
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
    streams::{Stream, notifier::WakeKey},
};

pub async fn set_typing(
    State(state): State<AppState>,
    req: Ruma<create_typing::Request>,
) -> ApiResult<RumaResponse<create_typing::Response>> {
    let user = &req.session().user_id;
    let body = &req.body;
    require_self(user, &body.user_id)?;
    require_joined(&state, &body.room_id, user).await?;
    let timeout = match &body.state {
        Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    let live = &state.live;
    if live.typing.set(&body.room_id, user, timeout, || {
        live.positions.bump(Stream::Typing)
    }) {
        live.notifier.wake(&[WakeKey::Room(body.room_id.clone())]);
    }
    Ok(RumaResponse(create_typing::Response::new()))
}
