//! Room aliases and the room directory (spec: "Room aliases", "Listing
//! rooms").

use axum::extract::State;
use ruma::{
    RoomAliasId, RoomId, UInt,
    api::client::{
        alias::{
            create_alias::v3 as create_alias, delete_alias::v3 as delete_alias,
            get_alias::v3 as get_alias,
        },
        directory::{
            get_public_rooms::v3 as get_public_rooms,
            get_public_rooms_filtered::v3 as get_public_rooms_filtered,
            get_room_visibility::v3 as get_room_visibility,
            set_room_visibility::v3 as set_room_visibility,
        },
        room::{Visibility, aliases::v3 as room_aliases},
    },
    directory::{PublicRoomsChunk, PublicRoomsChunkInit},
    room::JoinRuleKind,
};

use super::{
    create_room::alias_in_use,
    room_access::{find_room, require_joined},
};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        plugins::check,
        ruma::{Ruma, RumaResponse},
    },
    rooms::power::PowerLevels,
    state::AppState,
};

fn require_local_alias(state: &AppState, alias: &RoomAliasId) -> ApiResult<()> {
    if alias.server_name() != state.server_name {
        return Err(MatrixError::invalid_param("Alias must be on this server"));
    }
    Ok(())
}

/// Whether `user` may manage the room's aliases and directory entry: a
/// server admin, or a member with the power to set its canonical alias.
async fn may_manage(state: &AppState, room_id: &RoomId, user: &ruma::UserId) -> ApiResult<bool> {
    if state
        .storage
        .user(user.as_str())
        .await?
        .is_some_and(|u| u.is_admin)
    {
        return Ok(true);
    }
    if require_joined(state, room_id, user).await.is_err() {
        return Ok(false);
    }
    let user = user.to_owned();
    Ok(state
        .rooms
        .with_room(room_id, async |room| {
            let levels = PowerLevels::of(room.head);
            Ok(levels.user(&user) >= levels.for_event("m.room.canonical_alias", true))
        })
        .await?)
}

/// `PUT /directory/room/{roomAlias}`
pub async fn put_alias(
    State(state): State<AppState>,
    req: Ruma<create_alias::Request>,
) -> ApiResult<RumaResponse<create_alias::Response>> {
    let body = &req.body;
    require_local_alias(&state, &body.room_alias)?;
    find_room(&state, &body.room_id).await?;
    let user = &req.session().user_id;
    require_joined(&state, &body.room_id, user).await?;
    check(
        state
            .plugins
            .current()
            .user_may_create_room_alias(user.as_str(), body.room_alias.as_str())
            .await,
    )?;
    if !state
        .storage
        .create_alias(
            body.room_alias.as_str(),
            body.room_id.as_str(),
            req.session().user_id.as_str(),
        )
        .await?
    {
        return Err(alias_in_use());
    }
    Ok(RumaResponse(create_alias::Response::new()))
}

/// `GET /directory/room/{roomAlias}`
pub async fn get_alias(
    State(state): State<AppState>,
    req: Ruma<get_alias::Request>,
) -> ApiResult<RumaResponse<get_alias::Response>> {
    let (room_id, _) = state
        .storage
        .alias(req.body.room_alias.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    let room_id = RoomId::parse(room_id).map_err(|_| MatrixError::internal())?;
    Ok(RumaResponse(get_alias::Response::new(
        room_id,
        vec![state.server_name.clone()],
    )))
}

/// `DELETE /directory/room/{roomAlias}`: by its creator, or whoever may
/// manage the room's aliases.
pub async fn delete_alias(
    State(state): State<AppState>,
    req: Ruma<delete_alias::Request>,
) -> ApiResult<RumaResponse<delete_alias::Response>> {
    let user = &req.session().user_id;
    let alias = &req.body.room_alias;
    let (room_id, creator) = state
        .storage
        .alias(alias.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    let room_id = RoomId::parse(room_id).map_err(|_| MatrixError::internal())?;
    if creator != user.as_str() && !may_manage(&state, &room_id, user).await? {
        return Err(MatrixError::forbidden("You may not delete this alias"));
    }
    state.storage.delete_alias(alias.as_str()).await?;
    Ok(RumaResponse(delete_alias::Response::new()))
}

/// `GET /rooms/{roomId}/aliases`
pub async fn get_room_aliases(
    State(state): State<AppState>,
    req: Ruma<room_aliases::Request>,
) -> ApiResult<RumaResponse<room_aliases::Response>> {
    let room_id = &req.body.room_id;
    find_room(&state, room_id).await?;
    require_joined(&state, room_id, &req.session().user_id).await?;
    let aliases = state
        .storage
        .room_aliases(room_id.as_str())
        .await?
        .into_iter()
        .filter_map(|a| RoomAliasId::parse(a).ok())
        .collect();
    Ok(RumaResponse(room_aliases::Response::new(aliases)))
}

/// `GET /directory/list/room/{roomId}`
pub async fn get_visibility(
    State(state): State<AppState>,
    req: Ruma<get_room_visibility::Request>,
) -> ApiResult<RumaResponse<get_room_visibility::Response>> {
    let (room, _) = find_room(&state, &req.body.room_id).await?;
    let visibility = if room.is_public {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(RumaResponse(get_room_visibility::Response::new(visibility)))
}

/// `PUT /directory/list/room/{roomId}`
pub async fn set_visibility(
    State(state): State<AppState>,
    req: Ruma<set_room_visibility::Request>,
) -> ApiResult<RumaResponse<set_room_visibility::Response>> {
    let room_id = &req.body.room_id;
    find_room(&state, room_id).await?;
    if !may_manage(&state, room_id, &req.session().user_id).await? {
        return Err(MatrixError::forbidden(
            "You may not change this room's visibility",
        ));
    }
    let public = match &req.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        other => {
            return Err(MatrixError::invalid_param(format!(
                "Unknown visibility {}",
                other.as_str()
            )));
        }
    };
    if public {
        let user = &req.session().user_id;
        check(
            state
                .plugins
                .current()
                .user_may_publish_room(user.as_str(), room_id.as_str())
                .await,
        )?;
    }
    if !state
        .plugins
        .current()
        .check_visibility_can_be_modified(room_id.as_str(), req.body.visibility.as_str())
        .await
    {
        return Err(MatrixError::forbidden(
            "Changing this room's visibility in the room directory is not allowed",
        ));
    }
    state
        .storage
        .set_room_public(room_id.as_str(), public)
        .await?;
    Ok(RumaResponse(set_room_visibility::Response::new()))
}

/// One directory entry, from the room's current state.
async fn chunk(
    state: &AppState,
    room_id: &str,
    joined: i64,
) -> ApiResult<Option<PublicRoomsChunk>> {
    let Ok(room_id) = RoomId::parse(room_id) else {
        return Ok(None);
    };
    let field = async |kind: &str, name: &str| -> ApiResult<Option<String>> {
        Ok(state
            .storage
            .current_state_event(room_id.as_str(), kind, "")
            .await?
            .and_then(|e| e.pdu.content_str(name)))
    };
    let join_rule = field("m.room.join_rules", "join_rule").await?;
    let mut chunk: PublicRoomsChunk = PublicRoomsChunkInit {
        num_joined_members: UInt::new_saturating(joined.max(0) as u64),
        room_id: room_id.clone(),
        world_readable: field("m.room.history_visibility", "history_visibility")
            .await?
            .as_deref()
            == Some("world_readable"),
        guest_can_join: field("m.room.guest_access", "guest_access")
            .await?
            .as_deref()
            == Some("can_join"),
    }
    .into();
    chunk.name = field("m.room.name", "name").await?;
    chunk.topic = field("m.room.topic", "topic").await?;
    chunk.canonical_alias = field("m.room.canonical_alias", "alias")
        .await?
        .and_then(|a| RoomAliasId::parse(a).ok());
    chunk.avatar_url = field("m.room.avatar", "url").await?.map(Into::into);
    chunk.join_rule = join_rule
        .map(|j| JoinRuleKind::from(j.as_str()))
        .unwrap_or(JoinRuleKind::Public);
    chunk.room_type = state
        .storage
        .current_state_event(room_id.as_str(), "m.room.create", "")
        .await?
        .and_then(|e| e.pdu.content_str("type"))
        .map(|t| t.as_str().into());
    Ok(Some(chunk))
}

/// The directory page both `/publicRooms` variants answer with; `since`
/// tokens are offsets into the (most members first) listing.
async fn public_rooms(
    state: &AppState,
    limit: Option<UInt>,
    since: Option<&str>,
    search: Option<&str>,
) -> ApiResult<(Vec<PublicRoomsChunk>, Option<String>, Option<String>, u64)> {
    let offset: usize = match since {
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| MatrixError::invalid_param("Invalid `since` token"))?,
        None => 0,
    };
    let search = search.map(str::to_lowercase).filter(|s| !s.is_empty());
    let mut all = Vec::new();
    for (room_id, joined) in state.storage.public_rooms().await? {
        let Some(chunk) = chunk(state, &room_id, joined).await? else {
            continue;
        };
        let matches = search.as_ref().is_none_or(|term| {
            [
                chunk.name.as_deref(),
                chunk.topic.as_deref(),
                chunk.canonical_alias.as_ref().map(|a| a.as_str()),
            ]
            .into_iter()
            .flatten()
            .any(|text| text.to_lowercase().contains(term.as_str()))
        });
        if matches {
            all.push(chunk);
        }
    }
    let total = all.len() as u64;
    let limit = limit.map_or(usize::MAX, |l| u64::from(l) as usize).max(1);
    let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
    let next = (offset + page.len() < total as usize).then(|| format!("o{}", offset + page.len()));
    let prev = (offset > 0).then(|| format!("o{}", offset.saturating_sub(limit)));
    Ok((page, next, prev, total))
}

/// `GET /publicRooms`
pub async fn get_public_rooms(
    State(state): State<AppState>,
    req: Ruma<get_public_rooms::Request>,
) -> ApiResult<RumaResponse<get_public_rooms::Response>> {
    let body = &req.body;
    let (chunk, next, prev, total) =
        public_rooms(&state, body.limit, body.since.as_deref(), None).await?;
    let mut response = get_public_rooms::Response::new(chunk);
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = Some(UInt::new_saturating(total));
    Ok(RumaResponse(response))
}

/// `POST /publicRooms`
pub async fn post_public_rooms(
    State(state): State<AppState>,
    req: Ruma<get_public_rooms_filtered::Request>,
) -> ApiResult<RumaResponse<get_public_rooms_filtered::Response>> {
    let body = &req.body;
    let (chunk, next, prev, total) = public_rooms(
        &state,
        body.limit,
        body.since.as_deref(),
        body.filter.generic_search_term.as_deref(),
    )
    .await?;
    let mut response = get_public_rooms_filtered::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = Some(UInt::new_saturating(total));
    Ok(RumaResponse(response))
}
