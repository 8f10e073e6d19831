//! Presence (spec: "Presence"): users' online state, shown to those who
//! share a room with them.

use std::time::Duration;

use axum::extract::State;
use ruma::{
    OwnedRoomId, OwnedUserId, UserId,
    api::client::presence::{get_presence::v3 as get_presence, set_presence::v3 as set_presence},
    presence::PresenceState,
};

use super::filter::require_self;
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    state::AppState,
    storage::now_ms,
    streams::{Stream, notifier::WakeKey},
};

/// The longest a status message may be.
const MAX_STATUS_MSG: usize = 1024;

/// Stores a user's presence and wakes the syncs of everyone sharing a room.
pub async fn publish(
    state: &AppState,
    user: &UserId,
    presence: &str,
    status_msg: Option<&str>,
) -> ApiResult<()> {
    let position = state
        .storage
        .set_presence(user.as_str(), presence, status_msg)
        .await?;
    let mut keys = vec![WakeKey::User(user.to_owned())];
    for room in state
        .storage
        .rooms_with_membership(user.as_str(), "join")
        .await?
    {
        if let Ok(room) = OwnedRoomId::try_from(room) {
            keys.push(WakeKey::Room(room));
        }
    }
    state.live.publish(Stream::Presence, position, &keys);
    state
        .sync_caches
        .presence
        .lock()
        .insert(user.to_owned(), presence.to_owned());
    wake_routed(state, user, presence, status_msg);
    Ok(())
}

/// Presence routers (`get_users_for_states`): wakes the syncs of the local
/// users a plugin routes this update to, in the background so the user
/// setting their presence does not wait. What those syncs then show comes
/// from `get_interested_users`, as in Synapse.
fn wake_routed(state: &AppState, user: &UserId, presence: &str, status_msg: Option<&str>) {
    let plugins = state.plugins.current();
    if !plugins.routes_presence() {
        return;
    }
    let update = myelin_plugin_api::PresenceState {
        user_id: user.to_string(),
        presence: presence.to_owned(),
        status_msg: status_msg.map(str::to_owned),
        last_active_ago: Some(0),
        currently_active: Some(presence == "online"),
    };
    let state = state.clone();
    tokio::spawn(async move {
        let routed = plugins.get_users_for_states(&[update]).await;
        let keys: Vec<WakeKey> = routed
            .into_keys()
            .filter_map(|user| OwnedUserId::try_from(user).ok())
            .filter(|user| user.server_name() == state.server_name)
            .map(WakeKey::User)
            .collect();
        state.live.notifier.wake(&keys);
    });
}

/// `PUT /presence/{userId}/status`
pub async fn set(
    State(state): State<AppState>,
    req: Ruma<set_presence::Request>,
) -> ApiResult<RumaResponse<set_presence::Response>> {
    let user = &req.session().user_id;
    let body = &req.body;
    require_self(user, &body.user_id)?;
    if body
        .status_msg
        .as_ref()
        .is_some_and(|m| m.len() > MAX_STATUS_MSG)
    {
        return Err(MatrixError::invalid_param("status_msg is too long"));
    }
    let presence = match &body.presence {
        PresenceState::Online => "online",
        PresenceState::Unavailable => "unavailable",
        PresenceState::Offline => "offline",
        _ => return Err(MatrixError::invalid_param("Unknown presence state")),
    };
    if state.config.presence.enabled {
        publish(&state, user, presence, body.status_msg.as_deref()).await?;
    }
    Ok(RumaResponse(set_presence::Response::new()))
}

/// `GET /presence/{userId}/status`: for the user themselves and anyone who
/// shares a room with them.
pub async fn get(
    State(state): State<AppState>,
    req: Ruma<get_presence::Request>,
) -> ApiResult<RumaResponse<get_presence::Response>> {
    let requester = &req.session().user_id;
    let target = &req.body.user_id;
    if requester != target
        && !state
            .storage
            .users_sharing_rooms(requester.as_str())
            .await?
            .iter()
            .any(|u| u == target.as_str())
    {
        return Err(MatrixError::forbidden(format!(
            "You do not share a room with {target}"
        )));
    }
    if state.storage.user(target.as_str()).await?.is_none() {
        return Err(MatrixError::not_found(format!("Unknown user {target}")));
    }
    let row = state.storage.presence(target.as_str()).await?;
    let mut response = get_presence::Response::new(
        row.as_ref()
            .map(|r| PresenceState::from(r.state.as_str()))
            .unwrap_or(PresenceState::Offline),
    );
    if let Some(row) = row {
        response.status_msg = row.status_msg;
        response.currently_active = Some(row.state == "online");
        response.last_active_ago = Some(Duration::from_millis(
            (now_ms() - row.last_active_ts).max(0) as u64,
        ));
    }
    Ok(RumaResponse(response))
}
