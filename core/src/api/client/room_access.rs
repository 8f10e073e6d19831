//! What every room endpoint shares: finding the room, checking the user's
//! membership, and serving events as clients see them (redacted where a
//! redaction applies).

use std::collections::HashMap;

use ruma::{EventId, RoomId, UserId, room_version_rules::RoomVersionRules, serde::Raw};

use crate::{
    api::error::{ApiResult, MatrixError},
    rooms::{
        AppendError, create::CreateError, pdu::PduError, versions, visibility::filter_visible,
    },
    state::AppState,
    storage::rooms::{RoomRecord, StoredEvent},
};

impl From<AppendError> for MatrixError {
    fn from(err: AppendError) -> Self {
        match err {
            AppendError::UnknownRoom => MatrixError::not_found("Unknown room"),
            AppendError::Forbidden(reason) => MatrixError::forbidden(reason),
            AppendError::Pdu(PduError::TooLarge) => MatrixError::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                ruma::api::error::ErrorKind::TooLarge,
                "Event is over 65536 bytes",
            ),
            AppendError::Pdu(PduError::Invalid(reason)) => MatrixError::bad_json(reason),
            AppendError::Storage(err) => err.into(),
            AppendError::WriteFailed => MatrixError::internal(),
            AppendError::Resolution(reason) => {
                tracing::error!(%reason, "state resolution failed");
                MatrixError::internal()
            }
            AppendError::Refused { errcode, message } => {
                crate::api::plugins::refusal(&errcode, &message)
            }
        }
    }
}

impl From<CreateError> for MatrixError {
    fn from(err: CreateError) -> Self {
        match err {
            CreateError::BadJson(reason) => MatrixError::bad_json(reason),
            CreateError::Append(err) => err.into(),
            CreateError::Storage(err) => err.into(),
        }
    }
}

/// Room IDs are `!opaque:server`, or in version 12 `!` and the create
/// event's reference hash (43 characters of URL-safe base64); ruma accepts
/// any `!`-prefixed string, so the rest is checked here.
pub fn check_room_id(room_id: &RoomId) -> ApiResult<()> {
    let hash = room_id.as_str().trim_start_matches('!');
    let derived = hash.len() == 43
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if room_id.server_name().is_none() && !derived {
        return Err(MatrixError::invalid_param(format!(
            "Malformed room ID {room_id}"
        )));
    }
    Ok(())
}

/// The room and its version's rules; 404 when this server has no such room.
pub async fn find_room(
    state: &AppState,
    room_id: &RoomId,
) -> ApiResult<(RoomRecord, RoomVersionRules)> {
    check_room_id(room_id)?;
    let room = state
        .storage
        .room(room_id.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Unknown room"))?;
    let (_, rules) = versions::supported(&room.room_version).ok_or_else(MatrixError::internal)?;
    Ok((room, rules))
}

/// The user's current membership (`"leave"` when they never had one).
pub async fn membership(state: &AppState, room_id: &RoomId, user: &UserId) -> ApiResult<String> {
    Ok(state
        .storage
        .membership(room_id.as_str(), user.as_str())
        .await?
        .map(|(membership, _)| membership)
        .unwrap_or_else(|| "leave".to_owned()))
}

/// 403 unless the user is joined to the room.
pub async fn require_joined(state: &AppState, room_id: &RoomId, user: &UserId) -> ApiResult<()> {
    if membership(state, room_id, user).await? != "join" {
        return Err(MatrixError::forbidden(format!(
            "{user} is not in room {room_id}"
        )));
    }
    Ok(())
}

/// The events in client format, each redacted if a redaction applies.
pub async fn serve<T>(
    state: &AppState,
    rules: &RoomVersionRules,
    events: &[StoredEvent],
) -> ApiResult<Vec<Raw<T>>> {
    Ok(client_events(state, rules, events)
        .await?
        .into_iter()
        .map(|value| {
            Raw::from_json(serde_json::value::to_raw_value(&value).expect("JSON values serialize"))
        })
        .collect())
}

/// As [`serve`], as JSON values for callers that add to them.
pub async fn client_events(
    state: &AppState,
    rules: &RoomVersionRules,
    events: &[StoredEvent],
) -> ApiResult<Vec<serde_json::Value>> {
    let redaction_ids: Vec<String> = events
        .iter()
        .filter_map(|e| e.redacted_by.clone())
        .collect();
    let redactions: HashMap<String, StoredEvent> = if redaction_ids.is_empty() {
        HashMap::new()
    } else {
        state
            .storage
            .events(&redaction_ids)
            .await?
            .into_iter()
            .map(|e| (e.pdu.event_id.to_string(), e))
            .collect()
    };
    Ok(events
        .iter()
        .map(|event| {
            let because = event
                .redacted_by
                .as_ref()
                .and_then(|id| redactions.get(id))
                .map(|r| &*r.pdu);
            event.pdu.to_client(rules, because)
        })
        .collect())
}

/// Parses a pagination token (`s<position>`, or a bare number); a sync
/// token's leading timeline position serves as one too.
pub fn parse_token(token: &str) -> ApiResult<i64> {
    let position = token.split('_').next().unwrap_or_default();
    position
        .strip_prefix('s')
        .unwrap_or(position)
        .parse()
        .map_err(|_| MatrixError::invalid_param(format!("Invalid pagination token `{token}`")))
}

pub fn token(position: i64) -> String {
    format!("s{position}")
}

/// The state a user may read: the current state (`None`) while joined, the
/// state when they left otherwise; 403 when they were never in the room.
pub async fn readable_state_group(
    state: &AppState,
    room_id: &RoomId,
    user: &UserId,
) -> ApiResult<Option<i64>> {
    match state
        .storage
        .membership(room_id.as_str(), user.as_str())
        .await?
    {
        Some((m, _)) if m == "join" => Ok(None),
        Some((_, event_id)) => {
            let event = state
                .storage
                .event(&event_id)
                .await?
                .ok_or_else(MatrixError::internal)?;
            Ok(Some(event.state_group))
        }
        None => Err(MatrixError::forbidden(format!(
            "{user} is not in room {room_id}"
        ))),
    }
}

/// An event of this room; 404 when there is none.
pub async fn event_in_room(
    state: &AppState,
    room_id: &RoomId,
    event_id: &EventId,
) -> ApiResult<StoredEvent> {
    state
        .storage
        .event(event_id.as_str())
        .await?
        .filter(|e| e.pdu.room_id == room_id)
        .ok_or_else(|| MatrixError::not_found("Event not found"))
}

/// An event of this room the user may see; 404 otherwise, so that its
/// existence is not revealed.
pub async fn visible_event_in_room(
    state: &AppState,
    user: &UserId,
    room_id: &RoomId,
    event_id: &EventId,
) -> ApiResult<StoredEvent> {
    let event = event_in_room(state, room_id, event_id).await?;
    filter_visible(&state.storage, user, room_id, vec![event], None)
        .await?
        .pop()
        .ok_or_else(|| MatrixError::not_found("Event not found"))
}
