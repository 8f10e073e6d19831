//! The `actions` grant: plugins acting for local users through the very
//! code paths of those users' own requests (membership checks, event auth,
//! third-party rules, spam checks), so a plugin can never do what the user
//! it acts for could not, and a refusal carries the error the user would
//! have got.

use std::sync::{Arc, OnceLock, Weak};

use myelin_plugin_api::{ActionBackend, ActionRefused, BoxFuture};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId, api::error::StandardErrorBody};
use serde_json::{Value, json};

use super::{
    client::{account_data, events::append_checked, membership::act_on_membership},
    error::{ApiResult, MatrixError},
};
use crate::{
    rooms::{
        create::{Preset, RoomSpec, create_room},
        pdu::EventDraft,
    },
    state::{AppState, Services},
    storage::{NewUser, Profile},
};

/// Account data tag Synapse puts on a user's server-notices room.
const SERVER_NOTICE_TAG: &str = "m.server_notice";

/// The server, reached from plugin calls. Plugins are loaded before the
/// server's state exists, so the state is attached afterwards; a weak
/// reference, since the state owns the plugins.
#[derive(Default)]
pub struct PluginActions {
    state: OnceLock<Weak<Services>>,
}

impl PluginActions {
    pub fn attach(&self, state: &AppState) {
        let _ = self.state.set(Arc::downgrade(&state.0));
    }

    fn state(&self) -> Result<AppState, ActionRefused> {
        self.state
            .get()
            .and_then(Weak::upgrade)
            .map(AppState)
            .ok_or_else(|| ActionRefused::Failed("the server is shutting down".into()))
    }
}

/// A Matrix error as the plugin sees it.
fn refused(err: MatrixError) -> ActionRefused {
    match err {
        MatrixError::Standard { kind, message, .. } => {
            let body = StandardErrorBody::new(kind, message);
            let json = serde_json::to_value(&body).unwrap_or_default();
            ActionRefused::Refused {
                errcode: json["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned(),
                message: body.message,
            }
        }
        MatrixError::Uiaa(_) => ActionRefused::Refused {
            errcode: "M_FORBIDDEN".into(),
            message: "This action needs user-interactive authentication".into(),
        },
    }
}

/// A user of this server who exists and is not deactivated: plugins act
/// for local users only.
async fn local_user(state: &AppState, user_id: &str) -> ApiResult<OwnedUserId> {
    let user = UserId::parse(user_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid user ID {user_id}: {e}")))?;
    if user.server_name() != state.server_name {
        return Err(MatrixError::invalid_param(format!(
            "{user_id} is not a user of this server"
        )));
    }
    match state.storage.user(user_id).await? {
        Some(record) if !record.deactivated => Ok(user),
        _ => Err(MatrixError::not_found(format!("Unknown user {user_id}"))),
    }
}

fn room_id(room_id: &str) -> ApiResult<OwnedRoomId> {
    RoomId::parse(room_id)
        .map_err(|e| MatrixError::invalid_param(format!("Invalid room ID {room_id}: {e}")))
}

fn json_object(content: &str) -> ApiResult<Value> {
    match serde_json::from_str(content) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(MatrixError::bad_json("Content must be a JSON object")),
    }
}

/// Runs an action and converts its error for the plugin.
async fn run<T>(
    actions: &PluginActions,
    action: impl AsyncFnOnce(AppState) -> ApiResult<T>,
) -> Result<T, ActionRefused> {
    let state = actions.state()?;
    action(state).await.map_err(refused)
}

impl ActionBackend for PluginActions {
    fn update_room_membership<'a>(
        &'a self,
        sender: &'a str,
        target: &'a str,
        room: &'a str,
        membership: &'a str,
        content: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, ActionRefused>> {
        Box::pin(run(self, async move |state| {
            let sender = local_user(&state, sender).await?;
            let target = UserId::parse(target)
                .map_err(|e| MatrixError::invalid_param(format!("Invalid user ID: {e}")))?;
            let extra = content.map(json_object).transpose()?;
            let event_id =
                act_on_membership(&state, &room_id(room)?, &sender, &target, membership, extra)
                    .await?;
            Ok(event_id.to_string())
        }))
    }

    fn send_event<'a>(
        &'a self,
        sender: &'a str,
        room: &'a str,
        event_type: &'a str,
        state_key: Option<&'a str>,
        content: &'a str,
    ) -> BoxFuture<'a, Result<String, ActionRefused>> {
        Box::pin(run(self, async move |state| {
            let sender = local_user(&state, sender).await?;
            let room_id = room_id(room)?;
            if matches!(event_type, "m.room.member" | "m.room.create") {
                return Err(MatrixError::invalid_param(format!(
                    "Use update-room-membership (not send-event) for {event_type}"
                )));
            }
            super::client::room_access::find_room(&state, &room_id).await?;
            let content = json_object(content)?;
            let draft = match state_key {
                Some(key) => EventDraft::state(event_type, key, content),
                None => EventDraft::message(event_type, content),
            };
            let event_id = state
                .rooms
                .with_room(&room_id, async |room| {
                    append_checked(&state, room, &sender, &draft, None).await
                })
                .await?;
            Ok(event_id.to_string())
        }))
    }

    fn get_account_data<'a>(
        &'a self,
        user_id: &'a str,
        room: Option<&'a str>,
        data_type: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ActionRefused>> {
        Box::pin(run(self, async move |state| {
            let user = local_user(&state, user_id).await?;
            let room = room.map(room_id).transpose()?;
            let room = room.as_ref().map_or("", |r| r.as_str());
            Ok(state
                .storage
                .account_data(user.as_str(), room, data_type)
                .await?)
        }))
    }

    fn set_account_data<'a>(
        &'a self,
        user_id: &'a str,
        room: Option<&'a str>,
        data_type: &'a str,
        content: &'a str,
    ) -> BoxFuture<'a, Result<(), ActionRefused>> {
        Box::pin(run(self, async move |state| {
            let user = local_user(&state, user_id).await?;
            let room = room.map(room_id).transpose()?;
            let content = json_object(content)?;
            if data_type == crate::push::PUSH_RULES_TYPE {
                return Err(MatrixError::bad_json(
                    "Push rules are changed through the push rules API",
                ));
            }
            account_data::store(&state, &user, room.as_deref(), data_type, &content).await
        }))
    }

    fn send_server_notice<'a>(
        &'a self,
        user_id: &'a str,
        content: &'a str,
    ) -> BoxFuture<'a, Result<String, ActionRefused>> {
        Box::pin(run(self, async move |state| {
            let user = local_user(&state, user_id).await?;
            let content = json_object(content)?;
            send_server_notice(&state, &user, content).await
        }))
    }
}

/// Sends a notice from the server-notices user to `user`, in the room it
/// keeps with them (created, and `user` invited, on the first notice).
async fn send_server_notice(state: &AppState, user: &UserId, content: Value) -> ApiResult<String> {
    let Some(config) = &state.config.server_notices else {
        return Err(MatrixError::forbidden(
            "Server notices are not enabled (server_notices in the configuration)",
        ));
    };
    let system = UserId::parse(format!(
        "@{}:{}",
        config.system_mxid_localpart, state.server_name
    ))
    .map_err(|e| {
        MatrixError::invalid_param(format!("server_notices.system_mxid_localpart: {e}"))
    })?;
    if user == system {
        return Err(MatrixError::invalid_param(
            "The server-notices user cannot be sent notices",
        ));
    }
    let created = state
        .storage
        .create_user(&NewUser {
            user_id: system.to_string(),
            displayname: config.system_mxid_display_name.clone(),
            ..NewUser::default()
        })
        .await?;
    if created {
        super::plugin_hooks::user_registered(state, system.as_str()).await;
    }
    if created && config.system_mxid_avatar_url.is_some() {
        let profile = Profile {
            displayname: config.system_mxid_display_name.clone(),
            avatar_url: config.system_mxid_avatar_url.clone(),
        };
        state.storage.set_profile(system.as_str(), &profile).await?;
    }
    let room_id = match notices_room(state, &system, user).await? {
        Some(room_id) => room_id,
        None => {
            let spec = RoomSpec {
                version: state.config.default_room_version.clone(),
                creator: system.clone(),
                preset: Preset::PrivateChat,
                is_public: false,
                creation_content: Default::default(),
                // Only the server may speak there, as in Synapse.
                power_level_override: json!({ "events_default": 100 }).as_object().cloned(),
                canonical_alias: None,
                initial_state: Vec::new(),
                name: Some(config.room_name.clone()),
                topic: None,
                invite: vec![user.to_owned()],
                is_direct: false,
            };
            let room_id =
                create_room(&state.rooms, &state.storage, &state.server_name, spec).await?;
            let tags = json!({ "tags": { SERVER_NOTICE_TAG: { "order": 0.5 } } });
            account_data::store(state, user, Some(&room_id), "m.tag", &tags).await?;
            room_id
        }
    };
    let draft = EventDraft::message("m.room.message", content);
    let event_id = state
        .rooms
        .with_room(&room_id, async |room| {
            append_checked(state, room, &system, &draft, None).await
        })
        .await?;
    Ok(event_id.to_string())
}

/// The room the notices user shares with `user`: one it is joined to where
/// `user` is joined or invited.
async fn notices_room(
    state: &AppState,
    system: &UserId,
    user: &UserId,
) -> ApiResult<Option<OwnedRoomId>> {
    let rooms = state.storage.memberships_of(system.as_str()).await?;
    for (room, membership, _) in &rooms.memberships {
        if membership != "join" {
            continue;
        }
        let theirs = state.storage.membership(room, user.as_str()).await?;
        if theirs.is_some_and(|(m, _)| m == "join" || m == "invite") {
            return Ok(RoomId::parse(room).ok());
        }
    }
    Ok(None)
}
