//! Reading a room's history and membership (spec: "Getting events for a
//! room", "Room membership"): `/messages`, `/context`, `/members`,
//! `/joined_members`, `/timestamp_to_event`.

use std::{collections::BTreeMap, sync::Arc};

use axum::extract::State;
use ruma::{
    OwnedUserId, RoomId, UserId,
    api::{
        Direction,
        client::{
            context::get_context::v3 as get_context,
            filter::{LazyLoadOptions, RoomEventFilter},
            membership::{
                get_member_events::v3 as get_member_events,
                joined_members::v3::{self as joined_members, RoomMember},
            },
            message::get_message_events::v3 as get_message_events,
            room::get_event_by_timestamp::v1 as timestamp_to_event,
        },
    },
};

use super::room_access::{
    find_room, parse_token, readable_state_group, require_joined, serve, token,
    visible_event_in_room,
};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    rooms::{filter, visibility::filter_visible},
    state::AppState,
    storage::rooms::StoredEvent,
};

/// The most events one page returns, whatever the client asks.
const MAX_PAGE: u64 = 1000;

/// 403 unless the user is or was in the room (history visibility then
/// decides event by event).
async fn require_member_once(state: &AppState, room_id: &RoomId, user: &UserId) -> ApiResult<()> {
    let world_readable = state
        .storage
        .current_state_event(room_id.as_str(), "m.room.history_visibility", "")
        .await?
        .and_then(|e| e.pdu.content_str("history_visibility"))
        .is_some_and(|v| v == "world_readable");
    if state
        .storage
        .membership(room_id.as_str(), user.as_str())
        .await?
        .is_none()
        && !world_readable
    {
        return Err(MatrixError::forbidden(format!(
            "{user} is not in room {room_id}"
        )));
    }
    Ok(())
}

/// A page of visible, filtered events after (`forward`) or before a position.
/// Returns the events and the position the next page starts from, if any.
/// `current_join` as for [`filter_visible`].
#[allow(clippy::too_many_arguments)]
pub(crate) async fn page(
    state: &AppState,
    room_id: &RoomId,
    user: &UserId,
    mut from: i64,
    to: Option<i64>,
    forward: bool,
    limit: usize,
    event_filter: &RoomEventFilter,
    current_join: Option<i64>,
) -> ApiResult<(Vec<StoredEvent>, Option<i64>)> {
    let mut out = Vec::new();
    // A few rounds at most, so a filter matching nothing cannot scan a whole room.
    for _ in 0..8 {
        let want = (limit - out.len()) as i64;
        let (lower, upper) = if forward {
            (from, to)
        } else {
            (from + 1, to.map(|t| t + 1))
        };
        // One event more than wanted tells whether the room has more, so
        // a page that ends exactly at the last event says so.
        let want = want.max(1);
        let mut batch = state
            .storage
            .room_events(room_id.as_str(), lower, upper, forward, want + 1)
            .await?;
        let exhausted = batch.len() as i64 <= want;
        batch.truncate(want as usize);
        if let Some(last) = batch.last() {
            from = if forward {
                last.stream_ordering
            } else {
                last.stream_ordering - 1
            };
        }
        let matching = batch
            .into_iter()
            .filter(|e| filter::matches(event_filter, &e.pdu))
            .collect();
        out.extend(filter_visible(&state.storage, user, room_id, matching, current_join).await?);
        if exhausted {
            return Ok((out, None));
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok((out, Some(from)))
}

/// Member events of the senders of `events`, for lazy-loading clients.
async fn lazy_members(
    state: &AppState,
    room_id: &RoomId,
    events: &[StoredEvent],
    filter: &RoomEventFilter,
) -> ApiResult<Vec<StoredEvent>> {
    if matches!(filter.lazy_load_options, LazyLoadOptions::Disabled) {
        return Ok(Vec::new());
    }
    let mut senders: Vec<&UserId> = events.iter().map(|e| &*e.pdu.sender).collect();
    senders.sort();
    senders.dedup();
    let mut out = Vec::new();
    for sender in senders {
        if let Some(event) = state
            .storage
            .current_state_event(room_id.as_str(), "m.room.member", sender.as_str())
            .await?
        {
            out.push(event);
        }
    }
    Ok(out)
}

/// `GET /rooms/{roomId}/messages`
pub async fn get_messages(
    State(state): State<AppState>,
    req: Ruma<get_message_events::Request>,
) -> ApiResult<RumaResponse<get_message_events::Response>> {
    let body = &req.body;
    let user = &req.session().user_id;
    let (_, rules) = find_room(&state, &body.room_id).await?;
    require_member_once(&state, &body.room_id, user).await?;
    let forward = body.dir == Direction::Forward;
    let from = match &body.from {
        Some(from) => parse_token(from)?,
        None if forward => 0,
        None => state.storage.room_max_stream(body.room_id.as_str()).await?,
    };
    let to = body.to.as_deref().map(parse_token).transpose()?;
    let limit = u64::from(body.filter.limit.unwrap_or(body.limit)).clamp(1, MAX_PAGE) as usize;
    let (events, next) = page(
        &state,
        &body.room_id,
        user,
        from,
        to,
        forward,
        limit,
        &body.filter,
        None,
    )
    .await?;
    let mut response = get_message_events::Response::new();
    response.start = token(from);
    response.end = next.map(token);
    response.state = serve(
        &state,
        &rules,
        &lazy_members(&state, &body.room_id, &events, &body.filter).await?,
    )
    .await?;
    response.chunk = serve(&state, &rules, &events).await?;
    Ok(RumaResponse(response))
}

/// `GET /rooms/{roomId}/context/{eventId}`
pub async fn get_context(
    State(state): State<AppState>,
    req: Ruma<get_context::Request>,
) -> ApiResult<RumaResponse<get_context::Response>> {
    let body = &req.body;
    let user = &req.session().user_id;
    let (_, rules) = find_room(&state, &body.room_id).await?;
    require_member_once(&state, &body.room_id, user).await?;
    let event = visible_event_in_room(&state, user, &body.room_id, &body.event_id).await?;
    let limit = u64::from(body.filter.limit.unwrap_or(body.limit)).min(MAX_PAGE) as usize;
    let before_limit = limit / 2;
    let after_limit = limit - before_limit;
    let position = event.stream_ordering;
    let (before, _) = if before_limit > 0 {
        page(
            &state,
            &body.room_id,
            user,
            position - 1,
            None,
            false,
            before_limit,
            &body.filter,
            None,
        )
        .await?
    } else {
        (Vec::new(), None)
    };
    let (after, _) = if after_limit > 0 {
        page(
            &state,
            &body.room_id,
            user,
            position,
            None,
            true,
            after_limit,
            &body.filter,
            None,
        )
        .await?
    } else {
        (Vec::new(), None)
    };
    let state_ids = state.storage.state_at_group(event.state_group).await?;
    let mut state_events = state
        .storage
        .events(&state_ids.values().cloned().collect::<Vec<_>>())
        .await?;
    state_events.sort_by_key(|e| e.stream_ordering);

    let mut response = get_context::Response::new();
    response.start = Some(token(
        before
            .last()
            .map_or(position - 1, |e| e.stream_ordering - 1),
    ));
    response.end = Some(token(after.last().map_or(position, |e| e.stream_ordering)));
    response.events_before = serve(&state, &rules, &before).await?;
    response.events_after = serve(&state, &rules, &after).await?;
    response.event = serve(&state, &rules, std::slice::from_ref(&event))
        .await?
        .pop();
    response.state = serve(&state, &rules, &state_events).await?;
    Ok(RumaResponse(response))
}

/// `GET /rooms/{roomId}/members`: the member list at `at`, or now; a user
/// who left sees it as it was when they left.
pub async fn get_members(
    State(state): State<AppState>,
    req: Ruma<get_member_events::Request>,
) -> ApiResult<RumaResponse<get_member_events::Response>> {
    let body = &req.body;
    let user = &req.session().user_id;
    let room_id = &body.room_id;
    let (_, rules) = find_room(&state, room_id).await?;
    let group = readable_state_group(&state, room_id, user).await?;
    let group = match &body.at {
        Some(at) => {
            let position = parse_token(at)?;
            let at_event = state
                .storage
                .room_events(room_id.as_str(), position + 1, None, false, 1)
                .await?;
            match (at_event.first(), group) {
                (Some(event), Some(left)) => Some(event.state_group.min(left)),
                (Some(event), None) => Some(event.state_group),
                (None, group) => group,
            }
        }
        None => group,
    };
    let ids = match group {
        Some(group) => Arc::unwrap_or_clone(state.storage.state_at_group(group).await?),
        None => state.storage.current_state_ids(room_id.as_str()).await?,
    };
    let member_ids: Vec<String> = ids
        .into_iter()
        .filter(|((kind, _), _)| kind == "m.room.member")
        .map(|(_, id)| id)
        .collect();
    let mut members = state.storage.events(&member_ids).await?;
    members.retain(|e| {
        let m = e.pdu.content_str("membership").unwrap_or_default();
        body.membership
            .as_ref()
            .is_none_or(|want| want.as_str() == m)
            && body
                .not_membership
                .as_ref()
                .is_none_or(|not| not.as_str() != m)
    });
    members.sort_by(|a, b| a.pdu.state_key.cmp(&b.pdu.state_key));
    Ok(RumaResponse(get_member_events::Response::new(
        serve(&state, &rules, &members).await?,
    )))
}

/// `GET /rooms/{roomId}/joined_members`
pub async fn get_joined_members(
    State(state): State<AppState>,
    req: Ruma<joined_members::Request>,
) -> ApiResult<RumaResponse<joined_members::Response>> {
    let room_id = &req.body.room_id;
    find_room(&state, room_id).await?;
    require_joined(&state, room_id, &req.session().user_id).await?;
    let ids: Vec<String> = state
        .storage
        .current_state_ids(room_id.as_str())
        .await?
        .into_iter()
        .filter(|((kind, _), _)| kind == "m.room.member")
        .map(|(_, id)| id)
        .collect();
    let mut joined: BTreeMap<OwnedUserId, RoomMember> = BTreeMap::new();
    for event in state.storage.events(&ids).await? {
        if event.pdu.content_str("membership").as_deref() != Some("join") {
            continue;
        }
        let Some(user) = event
            .pdu
            .state_key
            .as_deref()
            .and_then(|k| UserId::parse(k).ok())
        else {
            continue;
        };
        let mut member = RoomMember::new();
        member.display_name = event.pdu.content_str("displayname");
        member.avatar_url = event.pdu.content_str("avatar_url").map(Into::into);
        joined.insert(user, member);
    }
    Ok(RumaResponse(joined_members::Response::new(joined)))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
pub async fn timestamp_to_event(
    State(state): State<AppState>,
    req: Ruma<timestamp_to_event::Request>,
) -> ApiResult<RumaResponse<timestamp_to_event::Response>> {
    let body = &req.body;
    let user = &req.session().user_id;
    find_room(&state, &body.room_id).await?;
    require_member_once(&state, &body.room_id, user).await?;
    let forward = body.dir == Direction::Forward;
    let ts = i64::try_from(u64::from(body.ts.get())).unwrap_or(i64::MAX);
    let not_found = || MatrixError::not_found("No event found in that direction");
    let event = state
        .storage
        .event_near_ts(body.room_id.as_str(), ts, forward)
        .await?
        .ok_or_else(not_found)?;
    let event = filter_visible(&state.storage, user, &body.room_id, vec![event], None)
        .await?
        .pop()
        .ok_or_else(not_found)?;
    Ok(RumaResponse(timestamp_to_event::Response::new(
        event.pdu.event_id.clone(),
        event.pdu.origin_server_ts,
    )))
}
