//! `DELETE /_synapse/admin/v1/rooms/{roomId}`: Synapse's Delete Room API
//! (version 1, synchronous): shut a room down — its local users leave it,
//! and are moved to a new room when `new_room_user_id` is given — block
//! it, and purge it from the database.

use axum::{
    Json,
    extract::{Path, State},
};
use http::StatusCode;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{JsonObject, ServerAdmin};
use crate::{
    api::{
        client::{events::append_checked, membership::change_membership},
        error::{ApiResult, MatrixError},
        plugin_hooks,
    },
    rooms::{
        create::{Preset, RoomSpec, create_room},
        pdu::EventDraft,
    },
    state::AppState,
};

/// Synapse's defaults for the room users are moved to.
const DEFAULT_ROOM_NAME: &str = "Content Violation Notification";
const DEFAULT_MESSAGE: &str = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.";

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct DeleteRoom {
    new_room_user_id: Option<String>,
    room_name: Option<String>,
    message: Option<String>,
    block: bool,
    purge: bool,
    force_purge: bool,
}

impl Default for DeleteRoom {
    fn default() -> Self {
        Self {
            new_room_user_id: None,
            room_name: None,
            message: None,
            block: false,
            purge: true,
            force_purge: false,
        }
    }
}

/// What the shutdown did, as Synapse answers.
#[derive(Debug, Default)]
struct Shutdown {
    kicked_users: Vec<String>,
    failed_to_kick_users: Vec<String>,
    local_aliases: Vec<String>,
    new_room_id: Option<OwnedRoomId>,
}

impl Shutdown {
    fn to_json(&self) -> Value {
        json!({
            "kicked_users": self.kicked_users,
            "failed_to_kick_users": self.failed_to_kick_users,
            "local_aliases": self.local_aliases,
            "new_room_id": self.new_room_id,
        })
    }
}

/// `DELETE /_synapse/admin/v1/rooms/{roomId}`, in Synapse's order: the
/// third-party rules plugins are asked (`check_can_shutdown_room`; 403
/// `M_FORBIDDEN` and nothing changes when one refuses); the room is blocked
/// when asked (even a room this server does not know); then the local
/// users with a membership (joined, invited, knocking) leave it as
/// themselves (so the room's authorization rules and the plugins see
/// ordinary leaves) and forget it, joining the new room if there is one;
/// the room leaves the directory; its aliases move to the new room or are
/// deleted; and with `purge` (the default) every trace of it is removed.
/// An unknown room is 404 unless it was only to be blocked.
pub async fn delete_room(
    State(state): State<AppState>,
    admin: ServerAdmin,
    Path(room_id): Path<String>,
    JsonObject(body): JsonObject<DeleteRoom>,
) -> ApiResult<Json<Value>> {
    let room_id = RoomId::parse(&room_id)
        .map_err(|_| MatrixError::invalid_param(format!("{room_id} is not a legal room ID")))?;
    plugin_hooks::check_can_shutdown_room(&state, admin.user_id.as_str(), room_id.as_str()).await?;
    if body.block {
        state
            .storage
            .block_room(room_id.as_str(), admin.user_id.as_str())
            .await?;
        tracing::info!(%room_id, admin = %admin.user_id, "blocked a room");
    }
    if state.storage.room(room_id.as_str()).await?.is_none() {
        if body.purge && !body.block {
            return Err(MatrixError::not_found(format!("Unknown room id {room_id}")));
        }
        return Ok(Json(Shutdown::default().to_json()));
    }
    let new_room_user = body
        .new_room_user_id
        .as_deref()
        .map(|user| {
            UserId::parse(user)
                .ok()
                .filter(|user| user.server_name() == state.server_name)
                .ok_or_else(|| {
                    MatrixError::unknown(
                        StatusCode::BAD_REQUEST,
                        format!("User must be our own: {user}"),
                    )
                })
        })
        .transpose()?;

    let mut result = Shutdown::default();
    if let Some(creator) = &new_room_user {
        let name = body.room_name.as_deref().unwrap_or(DEFAULT_ROOM_NAME);
        result.new_room_id = Some(new_room(&state, creator, name).await?);
    }
    state
        .storage
        .set_room_public(room_id.as_str(), false)
        .await?;

    let local = state
        .storage
        .local_memberships_in(room_id.as_str(), state.server_name.as_str())
        .await?;
    for (user, membership) in local {
        if !matches!(membership.as_str(), "join" | "invite" | "knock") {
            continue;
        }
        let Ok(user) = UserId::parse(&user) else {
            continue;
        };
        match move_user(&state, &room_id, &user, result.new_room_id.as_deref()).await {
            Ok(()) => result.kicked_users.push(user.to_string()),
            Err(err) => {
                tracing::warn!(%room_id, %user, error = ?err, "could not remove a user from a room being shut down");
                result.failed_to_kick_users.push(user.to_string());
            }
        }
    }

    match (&new_room_user, &result.new_room_id) {
        (Some(creator), Some(new_room_id)) => {
            let message = body.message.as_deref().unwrap_or(DEFAULT_MESSAGE);
            let draft = EventDraft::message(
                "m.room.message",
                json!({ "msgtype": "m.text", "body": message }),
            );
            state
                .rooms
                .with_room(new_room_id, async |room| {
                    append_checked(&state, room, creator, &draft, None).await
                })
                .await?;
            result.local_aliases = state
                .storage
                .move_room_aliases(
                    room_id.as_str(),
                    new_room_id.as_str(),
                    admin.user_id.as_str(),
                )
                .await?;
        }
        _ => {
            state.storage.delete_room_aliases(room_id.as_str()).await?;
        }
    }
    tracing::info!(
        %room_id,
        admin = %admin.user_id,
        kicked = result.kicked_users.len(),
        failed = result.failed_to_kick_users.len(),
        "shut down a room"
    );

    if body.purge {
        if !body.force_purge {
            let still_joined = state
                .storage
                .local_memberships_in(room_id.as_str(), state.server_name.as_str())
                .await?
                .into_iter()
                .any(|(_, membership)| membership == "join");
            if still_joined {
                return Err(MatrixError::unknown(
                    StatusCode::BAD_REQUEST,
                    "Users are still joined to this room",
                ));
            }
        }
        state.rooms.purge(&room_id).await?;
        tracing::info!(%room_id, "purged a room");
    }
    Ok(Json(result.to_json()))
}

/// The room the users of a shut-down room are moved to, as Synapse makes
/// it: public, named `name`, created by `creator`, where the users moved in
/// have power level -10 and so cannot speak.
async fn new_room(state: &AppState, creator: &UserId, name: &str) -> ApiResult<OwnedRoomId> {
    let mut power_levels = Map::new();
    power_levels.insert("users_default".into(), (-10).into());
    let spec = RoomSpec {
        version: state.config.default_room_version.clone(),
        creator: creator.to_owned(),
        preset: Preset::PublicChat,
        is_public: false,
        creation_content: Map::new(),
        power_level_override: Some(power_levels),
        canonical_alias: None,
        initial_state: Vec::new(),
        name: Some(name.to_owned()),
        topic: None,
        invite: Vec::new(),
        is_direct: false,
    };
    Ok(create_room(&state.rooms, &state.storage, &state.server_name, spec).await?)
}

/// A local user leaves the room (as themselves), forgets it, and joins the
/// new room if there is one.
async fn move_user(
    state: &AppState,
    room_id: &RoomId,
    user: &UserId,
    new_room: Option<&RoomId>,
) -> ApiResult<()> {
    change_membership(state, room_id, user, user, "leave", None, None).await?;
    state
        .storage
        .forget_room(user.as_str(), room_id.as_str())
        .await?;
    if let Some(new_room) = new_room {
        change_membership(state, new_room, user, user, "join", None, None).await?;
    }
    Ok(())
}
