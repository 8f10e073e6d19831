//! Sending and reading single events (spec: "Sending events to a room",
//! "Getting events for a room", "Redactions").

use std::sync::Arc;

use axum::extract::State;
use http::StatusCode;
use ruma::{
    RoomAliasId, RoomId, UserId,
    api::{
        client::{
            message::send_message_event::v3 as send_message,
            redact::redact_event::v3 as redact_event,
            room::get_room_event::v3 as get_room_event,
            state::{
                get_state_event_for_key::v3::{self as get_state_event, StateEventFormat},
                get_state_events::v3 as get_state_events,
                send_state_event::v3 as send_state,
            },
        },
        error::ErrorKind,
    },
    room_version_rules::RoomVersionRules,
};
use serde_json::{Value, json};

use myelin_plugin_api::{Callback, Verdict};

use super::room_access::{
    check_room_id, event_in_room, find_room, readable_state_group, serve, visible_event_in_room,
};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        plugins,
        ruma::{Ruma, RumaResponse},
    },
    auth::tokens::Session,
    rooms::{
        AppendError, RoomAppender, TxnKey,
        pdu::EventDraft,
        pdu::Pdu,
        power::{PowerLevels, check_integer_levels},
    },
    state::AppState,
    storage::rooms::StoredEvent,
};

fn content_object(raw: &serde_json::value::RawValue) -> ApiResult<Value> {
    match serde_json::from_str(raw.get()) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(MatrixError::bad_json("Event content must be a JSON object")),
    }
}

fn txn_key(session: &Session, txn_id: &str) -> TxnKey {
    (
        session.user_id.to_string(),
        session.device_id.to_string(),
        txn_id.to_owned(),
    )
}

/// Appends a client's event, once per transaction ID: a retry returns the
/// event the first attempt created.
async fn send_once(
    state: &AppState,
    room_id: &RoomId,
    session: &Session,
    txn_id: &str,
    draft: EventDraft,
) -> ApiResult<ruma::OwnedEventId> {
    if session.shadow_banned {
        return Ok(shadow_event_id());
    }
    let key = txn_key(session, txn_id);
    let user = &session.user_id;
    Ok(state
        .rooms
        .with_room(room_id, async |room| {
            // In flight or just written: the room remembers it.
            if let Some(event_id) = room.recent_txn(&key) {
                return Ok(event_id);
            }
            // Written longer ago: the database does. Almost every send is
            // new, so the event is built while that answer is on its way.
            let (earlier, prepared) =
                tokio::join!(biased; state.storage.txn_event(room_id.as_str(), &key), async {
                    room.prepare(user, &draft)
                },);
            if let Some(event_id) = earlier? {
                return ruma::EventId::parse(event_id)
                    .map_err(|err| AppendError::Storage(sqlx::Error::Decode(err.into())));
            }
            check_and_commit(state, room, user, &draft, prepared?, Some(key.clone())).await
        })
        .await?)
}

/// Appends a client's (or a plugin action's) event: built, authorized,
/// offered to the third-party rules and the spam checkers, then committed.
pub(crate) async fn append_checked(
    state: &AppState,
    room: &mut RoomAppender<'_>,
    sender: &UserId,
    draft: &EventDraft,
    txn: Option<TxnKey>,
) -> Result<ruma::OwnedEventId, AppendError> {
    let pdu = room.prepare(sender, draft)?;
    check_and_commit(state, room, sender, draft, pdu, txn).await
}

/// The plugins' part of [`append_checked`], for an event already prepared.
async fn check_and_commit(
    state: &AppState,
    room: &mut RoomAppender<'_>,
    sender: &UserId,
    draft: &EventDraft,
    pdu: Pdu,
    txn: Option<TxnKey>,
) -> Result<ruma::OwnedEventId, AppendError> {
    let pdu = room.allowed(sender, draft, pdu).await?;
    spam_check(state, &pdu).await?;
    Ok(room.commit(pdu, txn).event_id.clone())
}

/// Asks the spam-checking plugins about an event before it is appended.
async fn spam_check(state: &AppState, pdu: &Pdu) -> Result<(), AppendError> {
    if !state.plugins.current().wants(Callback::CheckEventForSpam) {
        return Ok(());
    }
    match state
        .plugins
        .current()
        .check_event_for_spam(&plugins::event(pdu))
        .await
    {
        Verdict::Allow => Ok(()),
        Verdict::Reject { errcode, message } => Err(AppendError::Refused { errcode, message }),
    }
}

/// What a shadow-banned user hears back: a plausible event ID for an event
/// that is never stored, as Synapse does.
fn shadow_event_id() -> ruma::OwnedEventId {
    use rand::{Rng, distributions::Alphanumeric};
    let hash: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(43)
        .map(char::from)
        .collect();
    ruma::EventId::parse(format!("${hash}")).expect("a valid event ID")
}

/// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`
pub async fn send_message_event(
    State(state): State<AppState>,
    req: Ruma<send_message::Request>,
) -> ApiResult<RumaResponse<send_message::Response>> {
    let body = &req.body;
    // The hot path: the room itself is found (or not) under its lock.
    check_room_id(&body.room_id)?;
    let kind = body.event_type.to_string();
    if kind == "m.room.redaction" {
        return Err(MatrixError::bad_json("Use /redact to redact events"));
    }
    let draft = EventDraft::message(kind.as_str(), content_object(body.body.json())?);
    let event_id = send_once(
        &state,
        &body.room_id,
        req.session(),
        body.txn_id.as_str(),
        draft,
    )
    .await?;
    Ok(RumaResponse(send_message::Response::new(event_id)))
}

/// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn send_state_event(
    State(state): State<AppState>,
    req: Ruma<send_state::Request>,
) -> ApiResult<RumaResponse<send_state::Response>> {
    let body = &req.body;
    let user = &req.session().user_id;
    let (_, rules) = find_room(&state, &body.room_id).await?;
    let kind = body.event_type.to_string();
    let content = content_object(body.body.json())?;
    if req.session().shadow_banned {
        return Ok(RumaResponse(send_state::Response::new(shadow_event_id())));
    }
    check_state_content(&state, &rules, &body.room_id, &kind, &content).await?;
    let draft = EventDraft::state(kind.as_str(), body.state_key.as_str(), content);
    let event_id = state
        .rooms
        .with_room(&body.room_id, async |room| {
            // Setting state to what it already is sends nothing new.
            if let Some(current) = room
                .head
                .state_event(&kind.as_str().into(), &body.state_key)
                && current.sender == *user
                && current.content_value() == draft.content
            {
                return Ok(current.event_id.clone());
            }
            append_checked(&state, room, user, &draft, None).await
        })
        .await?;
    Ok(RumaResponse(send_state::Response::new(event_id)))
}

/// Checks the client API makes on state content before the auth rules.
async fn check_state_content(
    state: &AppState,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    kind: &str,
    content: &Value,
) -> ApiResult<()> {
    match kind {
        "m.room.power_levels" if rules.authorization.integer_power_levels => {
            check_integer_levels(content).map_err(MatrixError::bad_json)
        }
        "m.room.canonical_alias" => {
            let mut aliases: Vec<&Value> = content.get("alias").into_iter().collect();
            if let Some(alt) = content.get("alt_aliases") {
                let Some(alt) = alt.as_array() else {
                    return Err(MatrixError::bad_json("`alt_aliases` must be an array"));
                };
                aliases.extend(alt);
            }
            for alias in aliases {
                let bad_alias = |why: &str| {
                    MatrixError::new(StatusCode::BAD_REQUEST, ErrorKind::BadAlias, why.to_owned())
                };
                let alias = alias
                    .as_str()
                    .and_then(|a| RoomAliasId::parse(a).ok())
                    .ok_or_else(|| MatrixError::invalid_param("Invalid room alias"))?;
                match state.storage.alias(alias.as_str()).await? {
                    Some((target, _)) if target == room_id.as_str() => {}
                    _ => return Err(bad_alias("Alias does not point to this room")),
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`
pub async fn redact(
    State(state): State<AppState>,
    req: Ruma<redact_event::Request>,
) -> ApiResult<RumaResponse<redact_event::Response>> {
    let body = &req.body;
    let session = req.session();
    let (_, rules) = find_room(&state, &body.room_id).await?;
    let target = event_in_room(&state, &body.room_id, &body.event_id).await?;
    let mut content = json!({});
    if let Some(reason) = &body.reason {
        content["reason"] = reason.as_str().into();
    }
    let mut draft = EventDraft::message("m.room.redaction", content);
    if rules.redaction.keep_room_redaction_redacts {
        // Room version 11 and later carry `redacts` in the content.
        draft.content["redacts"] = body.event_id.as_str().into();
    } else {
        draft.redacts = Some(body.event_id.clone());
    }
    if target.pdu.sender != session.user_id {
        let user = session.user_id.clone();
        state
            .rooms
            .with_room(&body.room_id, async |room| {
                let levels = PowerLevels::of(room.head);
                if levels.user(&user) < levels.redact() {
                    return Err(crate::rooms::AppendError::Forbidden(
                        "You don't have permission to redact events of other users".to_owned(),
                    ));
                }
                Ok(())
            })
            .await?;
    }
    let event_id = send_once(&state, &body.room_id, session, body.txn_id.as_str(), draft).await?;
    Ok(RumaResponse(redact_event::Response::new(event_id)))
}

async fn state_events(
    state: &AppState,
    room_id: &RoomId,
    user: &UserId,
) -> ApiResult<Vec<StoredEvent>> {
    let ids = match readable_state_group(state, room_id, user).await? {
        None => state.storage.current_state_ids(room_id.as_str()).await?,
        Some(group) => Arc::unwrap_or_clone(state.storage.state_at_group(group).await?),
    };
    let mut events = state
        .storage
        .events(&ids.into_values().collect::<Vec<_>>())
        .await?;
    events.sort_by_key(|e| e.stream_ordering);
    Ok(events)
}

/// `GET /rooms/{roomId}/state`
pub async fn get_state(
    State(state): State<AppState>,
    req: Ruma<get_state_events::Request>,
) -> ApiResult<RumaResponse<get_state_events::Response>> {
    let room_id = &req.body.room_id;
    let (_, rules) = find_room(&state, room_id).await?;
    let events = state_events(&state, room_id, &req.session().user_id).await?;
    Ok(RumaResponse(get_state_events::Response::new(
        serve(&state, &rules, &events).await?,
    )))
}

/// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn get_state_event(
    State(state): State<AppState>,
    req: Ruma<get_state_event::Request>,
) -> ApiResult<RumaResponse<get_state_event::Response>> {
    let body = &req.body;
    let room_id = &body.room_id;
    let (_, rules) = find_room(&state, room_id).await?;
    let kind = body.event_type.to_string();
    let event_id = match readable_state_group(&state, room_id, &req.session().user_id).await? {
        None => state
            .storage
            .current_state_ids(room_id.as_str())
            .await?
            .remove(&(kind, body.state_key.clone())),
        Some(group) => {
            state
                .storage
                .state_entry_at_group(group, &kind, &body.state_key)
                .await?
        }
    };
    let not_found = || MatrixError::not_found("Event not found");
    let event = state
        .storage
        .event(&event_id.ok_or_else(not_found)?)
        .await?
        .ok_or_else(not_found)?;
    let served: Vec<ruma::serde::Raw<Value>> =
        serve(&state, &rules, std::slice::from_ref(&event)).await?;
    let value: Value = served[0]
        .deserialize()
        .map_err(|_| MatrixError::internal())?;
    let out = match body.format {
        StateEventFormat::Event => value,
        _ => value.get("content").cloned().unwrap_or_else(|| json!({})),
    };
    let raw = serde_json::value::to_raw_value(&out).map_err(|_| MatrixError::internal())?;
    Ok(RumaResponse(get_state_event::Response::new(raw)))
}

/// `GET /rooms/{roomId}/event/{eventId}`: 404 as well when the user may not
/// see it, so its existence is not revealed.
pub async fn get_event(
    State(state): State<AppState>,
    req: Ruma<get_room_event::Request>,
) -> ApiResult<RumaResponse<get_room_event::Response>> {
    let body = &req.body;
    let user = &req.session().user_id;
    let (_, rules) = find_room(&state, &body.room_id).await?;
    let event = visible_event_in_room(&state, user, &body.room_id, &body.event_id).await?;
    let served = serve(&state, &rules, std::slice::from_ref(&event)).await?;
    let event = served
        .into_iter()
        .next()
        .ok_or_else(MatrixError::internal)?;
    Ok(RumaResponse(get_room_event::Response::new(event)))
}
