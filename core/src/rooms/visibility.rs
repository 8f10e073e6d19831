//! Which events a user may see (spec: "History visibility").

use std::collections::{HashMap, hash_map::Entry};

use ruma::{RoomId, UserId, events::TimelineEventType};

use crate::storage::{Storage, rooms::StoredEvent};

/// What decides whether one event is visible to one user.
struct AtEvent {
    visibility: String,
    membership: String,
}

/// The spec's rules; `joined_later` is whether the user joined the room at
/// some point after the event.
fn visible(at: &AtEvent, joined_later: bool) -> bool {
    match (at.visibility.as_str(), at.membership.as_str()) {
        ("world_readable", _) | (_, "join") => true,
        ("joined", _) => false,
        ("invited", membership) => membership == "invite",
        // `shared`, and unknown values as the spec says.
        _ => joined_later,
    }
}

/// Keeps the events of one room that `user` may see, in order. The state
/// after each event decides; a user always sees their own membership events.
///
/// `current_join` is the stream position of the user's current membership
/// event when the caller knows it is a join: events from there on are
/// visible without reading the user's membership history.
pub async fn filter_visible(
    storage: &Storage,
    user: &UserId,
    room_id: &RoomId,
    events: Vec<StoredEvent>,
    current_join: Option<i64>,
) -> sqlx::Result<Vec<StoredEvent>> {
    if current_join.is_some_and(|at| events.iter().all(|e| e.stream_ordering >= at)) {
        return Ok(events);
    }
    let memberships = storage
        .membership_positions(room_id.as_str(), user.as_str())
        .await?;
    let last_join = memberships
        .iter()
        .rev()
        .find(|(_, m)| m == "join")
        .map(|(at, _)| *at);
    // Joined now and since `joined_at`: every later event is visible
    // without looking at the state.
    let joined_at = memberships
        .last()
        .filter(|(_, m)| m == "join")
        .map(|(at, _)| *at);
    let mut by_group: HashMap<i64, AtEvent> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        if event.pdu.kind == TimelineEventType::RoomMember
            && event.pdu.state_key.as_deref() == Some(user.as_str())
        {
            out.push(event);
            continue;
        }
        if joined_at.is_some_and(|at| event.stream_ordering >= at) {
            out.push(event);
            continue;
        }
        let at = match by_group.entry(event.state_group) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                entry.insert(state_for_visibility(storage, event.state_group, user).await?)
            }
        };
        let joined_later = last_join.is_some_and(|join| join > event.stream_ordering);
        if visible(at, joined_later) {
            out.push(event);
        }
    }
    Ok(out)
}

async fn state_for_visibility(
    storage: &Storage,
    group: i64,
    user: &UserId,
) -> sqlx::Result<AtEvent> {
    let content_field =
        async |kind: &str, state_key: &str, field: &str| -> sqlx::Result<Option<String>> {
            let Some(event_id) = storage.state_entry_at_group(group, kind, state_key).await? else {
                return Ok(None);
            };
            Ok(storage
                .event(&event_id)
                .await?
                .and_then(|e| e.pdu.content_str(field)))
        };
    Ok(AtEvent {
        visibility: content_field("m.room.history_visibility", "", "history_visibility")
            .await?
            .unwrap_or_else(|| "shared".to_owned()),
        membership: content_field("m.room.member", user.as_str(), "membership")
            .await?
            .unwrap_or_else(|| "leave".to_owned()),
    })
}
