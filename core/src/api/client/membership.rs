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

use super::{
    events::append_checked,
    room_access::{find_room, membership},
};
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
    let invitee = match &req.body.recipient {
        invite_user::InvitationRecipient::UserId(invitee) => invitee,
        invite_user::InvitationRecipient::ThirdPartyId(threepid) => {
            invite_by_threepid(&state, &req.body.room_id, user, threepid).await?;
            return Ok(RumaResponse(invite_user::Response::new()));
        }
        _ => return Err(MatrixError::bad_json("Unknown invite recipient")),
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

/// A third-party invite (spec: "Third-party invites"), in Synapse's order:
/// the spam checkers (`user_may_send_3pid_invite`) and the third-party
/// rules (`check_threepid_can_be_invited`) are asked first; then the
/// identity server says whom the identifier is bound to — that user is
/// invited as usual — or, bound to nobody, keeps the invite and tells the
/// identifier's owner, and an `m.room.third_party_invite` event records it.
async fn invite_by_threepid(
    state: &AppState,
    room_id: &RoomId,
    inviter: &UserId,
    threepid: &ruma::api::client::membership::Invite3pid,
) -> ApiResult<()> {
    let medium = threepid.medium.as_str();
    let address = if medium == "email" {
        threepid.address.to_lowercase()
    } else {
        threepid.address.clone()
    };
    let plugins = state.plugins.current();
    check(
        plugins
            .user_may_send_threepid_invite(inviter.as_str(), medium, &address, room_id.as_str())
            .await,
    )?;
    if !plugins
        .check_threepid_can_be_invited(medium, &address, room_id.as_str())
        .await
    {
        return Err(MatrixError::forbidden(
            "Cannot invite this third-party identifier",
        ));
    }
    find_room(state, room_id).await?;
    if membership(state, room_id, inviter).await? != "join" {
        return Err(MatrixError::forbidden(format!(
            "{inviter} is not in room {room_id}"
        )));
    }
    let id_server = threepid.id_server.as_str();
    let token = threepid.id_access_token.as_str();
    let unreachable = |err: crate::identity::IdentityError| {
        tracing::warn!(%id_server, error = %err, "identity server request failed");
        MatrixError::new(
            http::StatusCode::BAD_GATEWAY,
            ruma::api::error::ErrorKind::Unknown,
            format!("The identity server could not be asked: {err}"),
        )
    };
    let bound = state
        .identity
        .lookup(id_server, token, medium, &address)
        .await
        .map_err(unreachable)?;
    if let Some(user_id) = bound {
        let target = UserId::parse(user_id.as_str()).map_err(|_| MatrixError::internal())?;
        check_local_user(state, &target).await?;
        check_invite(state, room_id, inviter, &target).await?;
        change_membership(state, room_id, inviter, &target, "invite", None, None).await?;
        return Ok(());
    }
    let request = invite_request(state, room_id, inviter, medium, &address).await?;
    let stored = state
        .identity
        .store_invite(id_server, token, &request)
        .await
        .map_err(unreachable)?;
    let first_key = stored.public_keys.first().cloned().unwrap_or_default();
    let content = serde_json::json!({
        "display_name": stored.display_name,
        "key_validity_url": first_key["key_validity_url"],
        "public_key": first_key["public_key"],
        "public_keys": stored.public_keys,
    });
    let draft = EventDraft::state("m.room.third_party_invite", stored.token.as_str(), content);
    state
        .rooms
        .with_room(room_id, async |room| {
            append_checked(state, room, inviter, &draft, None).await
        })
        .await?;
    Ok(())
}

/// The `store-invite` request: the identifier, and what the invitation
/// e-mail shows of the room and the inviter.
async fn invite_request(
    state: &AppState,
    room_id: &RoomId,
    inviter: &UserId,
    medium: &str,
    address: &str,
) -> ApiResult<Value> {
    let storage = &state.storage;
    let field = async |kind: &str, state_key: &str, name: &str| -> ApiResult<Value> {
        Ok(storage
            .current_state_event(room_id.as_str(), kind, state_key)
            .await?
            .and_then(|event| event.pdu.content_str(name))
            .map_or(Value::Null, Value::from))
    };
    Ok(serde_json::json!({
        "medium": medium,
        "address": address,
        "room_id": room_id,
        "sender": inviter,
        "room_alias": field("m.room.canonical_alias", "", "alias").await?,
        "room_avatar_url": field("m.room.avatar", "", "url").await?,
        "room_join_rules": field("m.room.join_rules", "", "join_rule").await?,
        "room_name": field("m.room.name", "", "name").await?,
        "room_type": field("m.room.create", "", "type").await?,
        "sender_display_name": field("m.room.member", inviter.as_str(), "displayname").await?,
        "sender_avatar_url": field("m.room.member", inviter.as_str(), "avatar_url").await?,
    }))
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
