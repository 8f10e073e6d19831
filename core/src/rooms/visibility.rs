//! Which events a user may see (spec: "History visibility").

use std::collections::HashMap;

use ruma::UserId;

use crate::storage::{Storage, rooms::StoredEvent};

/// What decides whether one event is visible to one user.
struct AtEvent {
    visibility: String,
    membership: String,
}

fn visible(at: &AtEvent, current_membership: &str) -> bool {
    match (at.visibility.as_str(), at.membership.as_str()) {
        ("world_readable", _) | (_, "join") => true,
        ("joined", _) => false,
        ("invited", membership) => membership == "invite",
        // `shared`, and unknown values as the spec says.
        _ => current_membership == "join",
    }
}

/// Keeps the events `user` may see, in order. The state after each event
/// decides; a user always sees their own membership events.
pub async fn filter_visible(
    storage: &Storage,
    user: &UserId,
    current_membership: &str,
    events: Vec<StoredEvent>,
) -> sqlx::Result<Vec<StoredEvent>> {
    let mut by_group: HashMap<i64, bool> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        if event.pdu.kind.to_string() == "m.room.member"
            && event.pdu.state_key.as_deref() == Some(user.as_str())
        {
            out.push(event);
            continue;
        }
        let allowed = match by_group.get(&event.state_group) {
            Some(allowed) => *allowed,
            None => {
                let at = state_for_visibility(storage, event.state_group, user).await?;
                let allowed = visible(&at, current_membership);
                by_group.insert(event.state_group, allowed);
                allowed
            }
        };
        if allowed {
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
