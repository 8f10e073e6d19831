//! Synapse's Delete Room API: shut a room down — its local users leave it,
//! and are moved to a new room when `new_room_user_id` is given — block
//! it, and purge it from the database. Version 1
//! (`DELETE /_synapse/admin/v1/rooms/{roomId}`) answers when it is done;
//! version 2 (`DELETE /_synapse/admin/v2/rooms/{roomId}`) answers at once
//! with a `delete_id` whose progress `.../delete_status` reports.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{Path, State},
};
use http::StatusCode;
use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
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

#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Default, Clone)]
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
    let room_id = parse_room_id(&room_id)?;
    plugin_hooks::check_can_shutdown_room(&state, admin.user_id.as_str(), room_id.as_str()).await?;
    let _running = Running::begin(&state, &room_id)?;
    let shutdown = shut_down(&state, &admin.user_id, &room_id, &body, |_| {}).await?;
    Ok(Json(shutdown.to_json()))
}

/// How long a finished deletion's status is kept, as in Synapse.
const FINISHED_KEPT: Duration = Duration::from_secs(24 * 60 * 60);

/// The rooms being deleted (by either version), and version 2's tasks,
/// running and finished, by `delete_id`. Kept in memory: like Synapse's,
/// the statuses are gone after a restart.
#[derive(Default)]
pub struct RoomDeletions {
    running: Mutex<HashSet<OwnedRoomId>>,
    tasks: Mutex<HashMap<String, Deletion>>,
}

struct Deletion {
    room_id: OwnedRoomId,
    status: &'static str,
    error: Option<String>,
    shutdown: Shutdown,
    finished: Option<Instant>,
}

impl Deletion {
    fn to_json(&self) -> Value {
        let mut status = json!({
            "status": self.status,
            "shutdown_room": self.shutdown.to_json(),
        });
        if let Some(error) = &self.error {
            status["error"] = error.as_str().into();
        }
        status
    }

    fn finish(&mut self, outcome: ApiResult<Shutdown>) {
        match outcome {
            Ok(shutdown) => {
                self.status = "complete";
                self.shutdown = shutdown;
            }
            Err(err) => {
                self.status = "failed";
                self.error = Some(err.message().to_owned());
            }
        }
        self.finished = Some(Instant::now());
    }
}

impl RoomDeletions {
    /// The tasks, without those finished more than a day ago.
    fn tasks(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Deletion>> {
        let mut tasks = self.tasks.lock();
        tasks.retain(|_, task| task.finished.is_none_or(|at| at.elapsed() < FINISHED_KEPT));
        tasks
    }

    fn update(&self, delete_id: &str, change: impl FnOnce(&mut Deletion)) {
        if let Some(task) = self.tasks.lock().get_mut(delete_id) {
            change(task);
        }
    }
}

/// A deletion under way. While it lives, another deletion of the room is
/// refused; when it is dropped — a panic included — a version 2 task that
/// did not finish is marked failed.
struct Running {
    state: AppState,
    room_id: OwnedRoomId,
    delete_id: Option<String>,
}

impl Running {
    fn begin(state: &AppState, room_id: &RoomId) -> ApiResult<Self> {
        if !state
            .room_deletions
            .running
            .lock()
            .insert(room_id.to_owned())
        {
            return Err(MatrixError::unknown(
                StatusCode::BAD_REQUEST,
                format!("History purge already in progress for {room_id}"),
            ));
        }
        Ok(Self {
            state: state.clone(),
            room_id: room_id.to_owned(),
            delete_id: None,
        })
    }

    /// Makes this a version 2 task, reported under the returned ID.
    fn report(&mut self) -> String {
        let delete_id = crate::auth::oidc::random_token(16);
        self.state.room_deletions.tasks().insert(
            delete_id.clone(),
            Deletion {
                room_id: self.room_id.clone(),
                status: "shutting_down",
                error: None,
                shutdown: Shutdown::default(),
                finished: None,
            },
        );
        self.delete_id = Some(delete_id.clone());
        delete_id
    }

    fn progress(&self, change: impl FnOnce(&mut Deletion)) {
        if let Some(delete_id) = &self.delete_id {
            self.state.room_deletions.update(delete_id, change);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.progress(|task| {
            if task.finished.is_none() {
                task.finish(Err(MatrixError::unknown(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The deletion stopped unexpectedly",
                )));
            }
        });
        self.state
            .room_deletions
            .running
            .lock()
            .remove(&self.room_id);
    }
}

/// `DELETE /_synapse/admin/v2/rooms/{roomId}`: the same deletion as
/// version 1, run in the background; answers `{"delete_id": ...}` once the
/// request is found valid: a legal room ID of a room this server knows,
/// `new_room_user_id` of this server, the plugins' consent
/// (`check_can_shutdown_room`), no deletion of the room under way. A
/// failure after that is the task's `error`.
pub async fn start_room_deletion(
    State(state): State<AppState>,
    admin: ServerAdmin,
    Path(room_id): Path<String>,
    JsonObject(body): JsonObject<DeleteRoom>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    new_room_user(&state, &body)?;
    if state.storage.room(room_id.as_str()).await?.is_none() {
        return Err(MatrixError::not_found(format!("Unknown room id {room_id}")));
    }
    plugin_hooks::check_can_shutdown_room(&state, admin.user_id.as_str(), room_id.as_str()).await?;
    let mut running = Running::begin(&state, &room_id)?;
    let delete_id = running.report();
    tracing::info!(%room_id, admin = %admin.user_id, %delete_id, "started deleting a room");
    tokio::spawn(async move {
        let outcome = shut_down(&state, &admin.user_id, &room_id, &body, |shutdown| {
            running.progress(|task| {
                task.shutdown = shutdown.clone();
                if body.purge {
                    task.status = "purging";
                }
            });
        })
        .await;
        if let Err(err) = &outcome {
            tracing::warn!(%room_id, error = ?err, "a room deletion failed");
        }
        running.progress(|task| task.finish(outcome));
    });
    Ok(Json(json!({ "delete_id": delete_id })))
}

/// `GET /_synapse/admin/v2/rooms/{roomId}/delete_status`: the room's
/// running deletions and those finished in the last 24 hours.
pub async fn room_deletion_status(
    State(state): State<AppState>,
    _admin: ServerAdmin,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let tasks = state.room_deletions.tasks();
    let results: Vec<Value> = tasks
        .iter()
        .filter(|(_, task)| task.room_id == room_id)
        .map(|(delete_id, task)| {
            let mut status = task.to_json();
            status["delete_id"] = delete_id.as_str().into();
            status
        })
        .collect();
    if results.is_empty() {
        return Err(MatrixError::not_found(format!(
            "No delete task for room_id '{room_id}' found"
        )));
    }
    Ok(Json(json!({ "results": results })))
}

/// `GET /_synapse/admin/v2/rooms/delete_status/{deleteId}`.
pub async fn deletion_status(
    State(state): State<AppState>,
    _admin: ServerAdmin,
    Path(delete_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let tasks = state.room_deletions.tasks();
    let task = tasks
        .get(&delete_id)
        .ok_or_else(|| MatrixError::not_found(format!("delete id '{delete_id}' not found")))?;
    Ok(Json(task.to_json()))
}

fn parse_room_id(room_id: &str) -> ApiResult<OwnedRoomId> {
    RoomId::parse(room_id)
        .map_err(|_| MatrixError::invalid_param(format!("{room_id} is not a legal room ID")))
}

/// `new_room_user_id`, which must be a user of this server (registered or
/// not, as in Synapse).
fn new_room_user(state: &AppState, body: &DeleteRoom) -> ApiResult<Option<OwnedUserId>> {
    body.new_room_user_id
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
        .transpose()
}

/// Both versions' steps, once the plugins agreed; `progress` hears what the
/// shutdown did once the users are out, before the purge starts.
async fn shut_down(
    state: &AppState,
    admin: &UserId,
    room_id: &RoomId,
    body: &DeleteRoom,
    progress: impl FnOnce(&Shutdown),
) -> ApiResult<Shutdown> {
    if body.block {
        state
            .storage
            .block_room(room_id.as_str(), admin.as_str())
            .await?;
        tracing::info!(%room_id, %admin, "blocked a room");
    }
    if state.storage.room(room_id.as_str()).await?.is_none() {
        if body.purge && !body.block {
            return Err(MatrixError::not_found(format!("Unknown room id {room_id}")));
        }
        return Ok(Shutdown::default());
    }
    let new_room_user = new_room_user(state, body)?;

    let mut result = Shutdown::default();
    if let Some(creator) = &new_room_user {
        let name = body.room_name.as_deref().unwrap_or(DEFAULT_ROOM_NAME);
        result.new_room_id = Some(new_room(state, creator, name).await?);
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
        match move_user(state, room_id, &user, result.new_room_id.as_deref()).await {
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
                    append_checked(state, room, creator, &draft, None).await
                })
                .await?;
            result.local_aliases = state
                .storage
                .move_room_aliases(room_id.as_str(), new_room_id.as_str(), admin.as_str())
                .await?;
        }
        _ => {
            state.storage.delete_room_aliases(room_id.as_str()).await?;
        }
    }
    tracing::info!(
        %room_id,
        %admin,
        kicked = result.kicked_users.len(),
        failed = result.failed_to_kick_users.len(),
        "shut down a room"
    );

    progress(&result);
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
        state.rooms.purge(room_id).await?;
        tracing::info!(%room_id, "purged a room");
    }
    Ok(result)
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
