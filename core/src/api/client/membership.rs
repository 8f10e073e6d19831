//! Room membership (spec: "Room membership"): join, invite, leave, forget,
//! kick, ban, unban, knock, and the membership listings.

use axum::extract::State;
use myelin_plugin_api::Callback;
use ruma::{
    OwnedEventId, OwnedRoomId, RoomId, RoomOrAliasId, UserId,
    api::client::knock::knock_room::v3 as knock_room,
    api::client::membership::{
        ban_user::v3 as ban_user, forget_room::v3 as forget_room, invite_user::v3 as invite_user,
        join_room_by_id::v3 as join_room_by_id,
        join_room_by_id_or_alias::v3 as join_by_id_or_alias, joined_rooms::v3 as joined_rooms,
        kick_user::v3 as kick_user, leave_room::v3 as leave_room, unban_user::v3 as unban_user,
    },
};
use serde_json::Value;

use super::room_access::{find_room, membership};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        plugins::check,
        ruma::{Ruma, RumaResponse},
    },
    rooms::{membership::member_content, pdu::EventDraft},
    state::AppState,
};

/// Sends `target`'s new membership as `sender`, through the room's
/// authorization rules; returns the member event's ID.
pub async fn change_membership(
    state: &AppState,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    new_membership: &str,
    reason: Option<&str>,
    extra: Option<Value>,
) -> ApiResult<OwnedEventId> {
    // A room an admin blocked can only be left (Synapse's rule).
    if !matches!(new_membership, "leave" | "ban")
        && state.storage.is_room_blocked(room_id.as_str()).await?
    {
        return Err(MatrixError::forbidden(
            "This room has been blocked on this server",
        ));
    }
    find_room(state, room_id).await?;
    let mut content = member_content(&state.storage, target, new_membership, reason).await?;
    if let (Some(content), Some(Value::Object(extra))) = (content.as_object_mut(), extra) {
        content.extend(extra);
    }
    let draft = EventDraft::state("m.room.member", target.as_str(), content);
    let pdu = state
        .rooms
        .with_room(room_id, async |room| {
            room.append(sender, &draft, None).await
        })
        .await?;
    Ok(pdu.event_id.clone())
}

/// A membership change a plugin makes for a local user (the `actions`
/// grant), with the checks the user's own request would get: `join` only
/// for oneself (with `user_may_join_room`), `invite` of an existing user
/// (with `user_may_invite`), `leave` (a kick when `target` is someone
/// else), `ban`, `knock`.
pub async fn act_on_membership(
    state: &AppState,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    new_membership: &str,
    extra: Option<Value>,
) -> ApiResult<OwnedEventId> {
    match new_membership {
        "join" | "knock" if sender != target => {
            return Err(MatrixError::forbidden(format!(
                "{sender} cannot {new_membership} for {target}"
            )));
        }
        "join" => check_join(state, room_id, sender).await?,
        "invite" => {
            check_local_user(state, target).await?;
            check_invite(state, room_id, sender, target).await?;
        }
        "leave" | "ban" | "knock" => {}
        other => {
            return Err(MatrixError::invalid_param(format!(
                "Unknown membership {other}"
            )));
        }
    }
    change_membership(state, room_id, sender, target, new_membership, None, extra).await
}

/// A room ID, or the room an alias on this server points at.
pub async fn resolve_room(state: &AppState, room: &RoomOrAliasId) -> ApiResult<OwnedRoomId> {
    match <&RoomId>::try_from(room) {
        Ok(room_id) => Ok(room_id.to_owned()),
        Err(alias) => {
            let (room_id, _) = state
                .storage
                .alias(alias.as_str())
                .await?
                .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
            RoomId::parse(room_id).map_err(|_| MatrixError::internal())
        }
    }
}

/// Whether the spam checkers are asked about `user`'s action: a plugin
/// wants `callback`, and `user` is not a server admin (Synapse asks nothing
/// about admins' joins, invites and room creations).
pub(super) async fn spam_check_applies(
    state: &AppState,
    callback: Callback,
    user: &UserId,
) -> ApiResult<bool> {
    if !state.plugins.current().wants(callback) {
        return Ok(false);
    }
    let is_admin = state
        .storage
        .user(user.as_str())
        .await?
        .is_some_and(|u| u.is_admin);
    Ok(!is_admin)
}

/// Asks the plugins whether `user` may invite `target`; server admins are
/// not asked.
async fn check_invite(
    state: &AppState,
    room_id: &RoomId,
    user: &UserId,
    target: &UserId,
) -> ApiResult<()> {
    if !spam_check_applies(state, Callback::UserMayInvite, user).await? {
        return Ok(());
    }
    check(
        state
            .plugins
            .current()
            .user_may_invite(user.as_str(), target.as_str(), room_id.as_str())
            .await,
    )
}

/// Asks the plugins whether `user` may join; server admins are not asked.
async fn check_join(state: &AppState, room_id: &RoomId, user: &UserId) -> ApiResult<()> {
    if !spam_check_applies(state, Callback::UserMayJoinRoom, user).await? {
        return Ok(());
    }
    let is_invited = membership(state, room_id, user).await? == "invite";
    check(
        state
            .plugins
            .current()
            .user_may_join_room(user.as_str(), room_id.as_str(), is_invited)
            .await,
    )
}

/// Guests may join only rooms whose `m.room.guest_access` is `can_join`.
async fn check_guest_access(state: &AppState, room_id: &RoomId, is_guest: bool) -> ApiResult<()> {
    if !is_guest {
        return Ok(());
    }
    let allowed = state
        .storage
        .current_state_event(room_id.as_str(), "m.room.guest_access", "")
        .await?
        .and_then(|e| e.pdu.content_str("guest_access"))
        .is_some_and(|access| access == "can_join");
    if !allowed {
        return Err(MatrixError::new(
            http::StatusCode::FORBIDDEN,
            ruma::api::error::ErrorKind::GuestAccessForbidden,
            "Guest access is not allowed in this room",
        ));
    }
    Ok(())
}

pub async fn join_room_by_id(
    State(state): State<AppState>,
    req: Ruma<join_room_by_id::Request>,
) -> ApiResult<RumaResponse<join_room_by_id::Response>> {
    let user = &req.session().user_id;
    let room_id = &req.body.room_id;
    check_guest_access(&state, room_id, req.session().is_guest).await?;
    check_join(&state, room_id, user).await?;
    change_membership(
        &state,
        room_id,
        user,
        user,
        "join",
        req.body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(RumaResponse(join_room_by_id::Response::new(
        room_id.clone(),
    )))
}

pub async fn join_room_by_id_or_alias(
    State(state): State<AppState>,
    req: Ruma<join_by_id_or_alias::Request>,
) -> ApiResult<RumaResponse<join_by_id_or_alias::Response>> {
    let user = &req.session().user_id;
    let room_id = resolve_room(&state, &req.body.room_id_or_alias).await?;
    check_guest_access(&state, &room_id, req.session().is_guest).await?;
    check_join(&state, &room_id, user).await?;
    change_membership(
        &state,
        &room_id,
        user,
        user,
        "join",
        req.body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(RumaResponse(join_by_id_or_alias::Response::new(room_id)))
}

pub async fn knock(
    State(state): State<AppState>,
    req: Ruma<knock_room::Request>,
) -> ApiResult<RumaResponse<knock_room::Response>> {
    let user = &req.session().user_id;
    let room_id = resolve_room(&state, &req.body.room_id_or_alias).await?;
    change_membership(
        &state,
        &room_id,
        user,
        user,
        "knock",
        req.body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(RumaResponse(knock_room::Response::new(room_id)))
}

pub async fn invite(
    State(state): State<AppState>,
    req: Ruma<invite_user::Request>,
) -> ApiResult<RumaResponse<invite_user::Response>> {
    let user = &req.session().user_id;
    let invite_user::InvitationRecipient::UserId(invitee) = &req.body.recipient else {
        return Err(MatrixError::forbidden(
            "Third-party invites are not supported",
        ));
    };
    let target = &invitee.user_id;
    check_local_user(&state, target).await?;
    check_invite(&state, &req.body.room_id, user, target).await?;
    change_membership(
        &state,
        &req.body.room_id,
        user,
        target,
        "invite",
        invitee.reason.as_deref(),
        None,
    )
    .await?;
    Ok(RumaResponse(invite_user::Response::new()))
}

/// Invites and other actions on a user of this server need the user to exist.
async fn check_local_user(state: &AppState, user: &UserId) -> ApiResult<()> {
    if user.server_name() != state.server_name {
        return Err(MatrixError::forbidden("Federation is not supported yet"));
    }
    if state.storage.user(user.as_str()).await?.is_none() {
        return Err(MatrixError::not_found(format!("Unknown user {user}")));
    }
    Ok(())
}

pub async fn leave(
    State(state): State<AppState>,
    req: Ruma<leave_room::Request>,
) -> ApiResult<RumaResponse<leave_room::Response>> {
    let user = &req.session().user_id;
    change_membership(
        &state,
        &req.body.room_id,
        user,
        user,
        "leave",
        req.body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(RumaResponse(leave_room::Response::new()))
}

pub async fn forget(
    State(state): State<AppState>,
    req: Ruma<forget_room::Request>,
) -> ApiResult<RumaResponse<forget_room::Response>> {
    let user = &req.session().user_id;
    let room_id = &req.body.room_id;
    find_room(&state, room_id).await?;
    if matches!(
        membership(&state, room_id, user).await?.as_str(),
        "join" | "invite" | "knock"
    ) {
        return Err(MatrixError::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "Leave the room before forgetting it",
        ));
    }
    state
        .storage
        .forget_room(user.as_str(), room_id.as_str())
        .await?;
    Ok(RumaResponse(forget_room::Response::new()))
}

pub async fn kick(
    State(state): State<AppState>,
    req: Ruma<kick_user::Request>,
) -> ApiResult<RumaResponse<kick_user::Response>> {
    let sender = &req.session().user_id;
    let body = &req.body;
    change_membership(
        &state,
        &body.room_id,
        sender,
        &body.user_id,
        "leave",
        body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(RumaResponse(kick_user::Response::new()))
}

pub async fn ban(
    State(state): State<AppState>,
    req: Ruma<ban_user::Request>,
) -> ApiResult<RumaResponse<ban_user::Response>> {
    let sender = &req.session().user_id;
    let body = &req.body;
    change_membership(
        &state,
        &body.room_id,
        sender,
        &body.user_id,
        "ban",
        body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(RumaResponse(ban_user::Response::new()))
}

pub async fn unban(
    State(state): State<AppState>,
    req: Ruma<unban_user::Request>,
) -> ApiResult<RumaResponse<unban_user::Response>> {
    let sender = &req.session().user_id;
    let body = &req.body;
    let room_id = &body.room_id;
    if membership(&state, room_id, &body.user_id).await? != "ban" {
        return Err(MatrixError::forbidden(format!(
            "{} is not banned",
            body.user_id
        )));
    }
    change_membership(
        &state,
        room_id,
        sender,
        &body.user_id,
        "leave",
        body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(RumaResponse(unban_user::Response::new()))
}

pub async fn get_joined_rooms(
    State(state): State<AppState>,
    req: Ruma<joined_rooms::Request>,
) -> ApiResult<RumaResponse<joined_rooms::Response>> {
    let user = &req.session().user_id;
    let rooms = state
        .storage
        .rooms_with_membership(user.as_str(), "join")
        .await?
        .into_iter()
        .filter_map(|id| RoomId::parse(id).ok())
        .collect();
    Ok(RumaResponse(joined_rooms::Response::new(rooms)))
}
