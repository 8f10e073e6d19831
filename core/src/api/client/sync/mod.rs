//! `GET /sync` (spec: "Syncing"): everything new for one device since its
//! last sync token, waiting up to `timeout` for something to arrive.
//!
//! The token carries a position in each stream (`crate::streams`). A sync
//! reads the current positions first and bounds every read by them, so a
//! write committed meanwhile is delivered by the next sync, never skipped.
//! Waiting is on the notifier, never on the database.

mod rooms;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use myelin_plugin_api::Interested;
use parking_lot::Mutex;
use ruma::{
    OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId,
    api::{
        OutgoingResponse,
        client::{
            filter::FilterDefinition,
            sync::sync_events::v3::{self as sync_events, Filter},
        },
    },
    presence::PresenceState,
    serde::Raw,
};
use serde_json::{Value, json};

use super::filter::load_filter;
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    auth::tokens::Session,
    push::PUSH_RULES_TYPE,
    rooms::filter::types_match,
    state::AppState,
    storage::{rooms::UserRooms, user_data::AccountDataRow},
    streams::{Positions, Stream, notifier::WakeKey},
};

/// The longest a sync waits, whatever the client asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Send-to-device messages per sync; the rest follow in the next one.
const TO_DEVICE_PER_SYNC: i64 = 100;
/// Member events remembered per device for lazy loading.
const LAZY_MEMBERS_PER_DEVICE: usize = 10_000;
/// Long-polling users whose wake keys are kept.
const WAKE_KEYS_CACHED: usize = 20_000;

/// Per-device memory of past syncs.
#[derive(Default)]
pub struct SyncCaches {
    /// Member events already sent to a lazy-loading device.
    lazy_members: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), HashSet<String>>>,
    /// Devices that were sent to-device messages they have not acknowledged.
    unacknowledged: Mutex<HashSet<(OwnedUserId, OwnedDeviceId)>>,
    /// Each user's presence as this process last stored it, so that a sync's
    /// `set_presence` costs no query when nothing changes.
    pub(super) presence: Mutex<HashMap<OwnedUserId, String>>,
    /// Each room's version (which never changes), so that a sync reads it
    /// once per process rather than once per room and sync.
    room_versions: Mutex<HashMap<OwnedRoomId, String>>,
    /// Each long-polling user's wake keys (the user and their joined rooms),
    /// with the memberships they were made from: a long-poll of someone in
    /// hundreds of rooms neither parses nor copies a room ID.
    wake_keys: Mutex<HashMap<OwnedUserId, WakeKeys>>,
}

/// A user's wake keys and the memberships they were made from.
type WakeKeys = (Arc<UserRooms>, Arc<[WakeKey]>);

/// One sync request, resolved.
pub(super) struct SyncRequest<'a> {
    state: &'a AppState,
    user: &'a UserId,
    device: &'a OwnedDeviceId,
    filter: FilterDefinition,
    full_state: bool,
}

/// `GET /sync`
pub async fn sync(
    State(state): State<AppState>,
    req: Ruma<sync_events::Request>,
) -> ApiResult<SyncResponse> {
    let session = req.session();
    let body = &req.body;
    let filter = resolve_filter(&state, &session.user_id, body.filter.as_ref()).await?;
    let since = body
        .since
        .as_deref()
        .map(|token| parse_since(token, &state.live.positions.current()))
        .transpose()?;
    update_presence(&state, session, &body.set_presence).await?;
    // After the presence update, so the token covers it.
    let current = state.live.positions.current();
    let request = SyncRequest {
        state: &state,
        user: &session.user_id,
        device: &session.device_id,
        filter,
        full_state: body.full_state,
    };
    let Some(since) = since else {
        state
            .sync_caches
            .lazy_members
            .lock()
            .remove(&(session.user_id.clone(), session.device_id.clone()));
        return Ok(SyncResponse(request.build(None, current).await?));
    };

    let timeout = body.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let deadline = Instant::now() + timeout;
    // Listen before looking, so a change between the two is not missed.
    let listener = if timeout.is_zero() || body.full_state {
        None
    } else {
        let memberships = state
            .storage
            .memberships_of(session.user_id.as_str())
            .await?;
        let keys = wake_keys(&state, &session.user_id, &memberships);
        Some(state.live.notifier.listen(keys))
    };
    loop {
        let now = state.live.positions.current();
        let unacknowledged = state
            .sync_caches
            .unacknowledged
            .lock()
            .contains(&(session.user_id.clone(), session.device_id.clone()));
        if now.advanced_since(&since) || body.full_state || unacknowledged {
            let response = request.build(Some(since), now).await?;
            if !is_empty(&response) {
                return Ok(SyncResponse(response));
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let woken = match &listener {
            Some(listener) if !remaining.is_zero() => listener.wait(remaining).await,
            _ => false,
        };
        if !woken {
            // Nothing for this device: hand back where the streams stand.
            return Ok(SyncResponse(sync_events::Response::new(now.to_string())));
        }
    }
}

/// What a long-poll of `user` follows: the user, and the rooms they joined.
fn wake_keys(state: &AppState, user: &UserId, memberships: &Arc<UserRooms>) -> Arc<[WakeKey]> {
    if let Some((made_from, keys)) = state.sync_caches.wake_keys.lock().get(user)
        && Arc::ptr_eq(made_from, memberships)
    {
        return keys.clone();
    }
    let rooms = memberships
        .memberships
        .iter()
        .filter(|(_, membership, _)| membership == "join")
        .filter_map(|(room, _, _)| OwnedRoomId::try_from(room.as_str()).ok());
    let keys: Arc<[WakeKey]> = std::iter::once(WakeKey::User(user.to_owned()))
        .chain(rooms.map(WakeKey::Room))
        .collect();
    let mut cached = state.sync_caches.wake_keys.lock();
    // Bounded like the storage caches: past the limit it starts over.
    if cached.len() >= WAKE_KEYS_CACHED && !cached.contains_key(user) {
        cached.clear();
    }
    cached.insert(user.to_owned(), (memberships.clone(), keys.clone()));
    keys
}

/// A sync response rendered as HTTP. ruma's `Rooms::is_empty` forgets
/// `knock`, so a response whose only rooms are knocked ones would lose its
/// whole `rooms` object: it is put back here.
pub struct SyncResponse(sync_events::Response);

impl IntoResponse for SyncResponse {
    fn into_response(self) -> Response {
        let rooms = &self.0.rooms;
        let knock_only = rooms.join.is_empty()
            && rooms.invite.is_empty()
            && rooms.leave.is_empty()
            && !rooms.knock.is_empty();
        if !knock_only {
            return RumaResponse(self.0).into_response();
        }
        let rendered = serde_json::to_value(&self.0.rooms.knock).and_then(|knock| {
            let mut body: Value = serde_json::from_slice(
                self.0
                    .try_into_http_response::<Vec<u8>>()
                    .map_err(serde::ser::Error::custom)?
                    .body(),
            )?;
            body["rooms"] = json!({ "knock": knock });
            serde_json::to_vec(&body)
        });
        match rendered {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(err) => {
                tracing::error!(error = %err, "could not render a sync response");
                MatrixError::internal().into_response()
            }
        }
    }
}

fn is_empty(response: &sync_events::Response) -> bool {
    let rooms = &response.rooms;
    rooms.join.is_empty()
        && rooms.invite.is_empty()
        && rooms.leave.is_empty()
        && rooms.knock.is_empty()
        && response.presence.events.is_empty()
        && response.account_data.events.is_empty()
        && response.to_device.events.is_empty()
        && response.device_lists.changed.is_empty()
        && response.device_lists.left.is_empty()
}

/// A token this server issued, and not from the future: 400 otherwise.
fn parse_since(token: &str, current: &Positions) -> ApiResult<Positions> {
    let invalid = || MatrixError::invalid_param(format!("Invalid since token `{token}`"));
    let mut since: Positions = token.parse().map_err(|_| invalid())?;
    // Typing positions do not survive a restart; an old one means "from now".
    if since.get(Stream::Typing) > current.get(Stream::Typing) {
        since.set(Stream::Typing, current.get(Stream::Typing));
    }
    let mut ahead = *current;
    for stream in [
        Stream::Events,
        Stream::AccountData,
        Stream::Receipts,
        Stream::ToDevice,
        Stream::DeviceLists,
        Stream::Presence,
    ] {
        if since.get(stream) > current.get(stream) {
            ahead.set(stream, -1);
        }
    }
    if ahead != *current {
        return Err(invalid());
    }
    Ok(since)
}

/// The filter by ID, inline JSON (400 `M_BAD_JSON` if invalid), or none.
async fn resolve_filter(
    state: &AppState,
    user: &UserId,
    filter: Option<&Filter>,
) -> ApiResult<FilterDefinition> {
    match filter {
        None => Ok(FilterDefinition::default()),
        Some(Filter::FilterDefinition(definition)) => Ok(definition.clone()),
        // ruma falls back to an ID when inline JSON does not parse.
        Some(Filter::FilterId(id)) if id.trim_start().starts_with('{') => serde_json::from_str(id)
            .map_err(|e| MatrixError::bad_json(format!("Invalid filter: {e}"))),
        Some(Filter::FilterId(id)) => load_filter(state, user, id).await,
        Some(_) => Ok(FilterDefinition::default()),
    }
}

/// `set_presence`: marks the user online or idle unless they said offline.
async fn update_presence(
    state: &AppState,
    session: &Session,
    set_presence: &PresenceState,
) -> ApiResult<()> {
    if !state.config.presence.enabled {
        return Ok(());
    }
    let wanted = match set_presence {
        PresenceState::Online => "online",
        PresenceState::Unavailable => "unavailable",
        _ => return Ok(()),
    };
    let user = &session.user_id;
    if state
        .sync_caches
        .presence
        .lock()
        .get(user)
        .is_some_and(|p| p == wanted)
    {
        return Ok(());
    }
    let current = state.storage.presence(user.as_str()).await?;
    if current.as_ref().is_some_and(|p| p.state == wanted) {
        state
            .sync_caches
            .presence
            .lock()
            .insert(user.clone(), wanted.to_owned());
        return Ok(());
    }
    let status_msg = current.and_then(|p| p.status_msg);
    super::presence::publish(state, &session.user_id, wanted, status_msg.as_deref()).await
}

impl SyncRequest<'_> {
    /// The sync response for the range `(since, now]` (everything up to
    /// `now` for an initial sync).
    async fn build(
        &self,
        since: Option<Positions>,
        now: Positions,
    ) -> ApiResult<sync_events::Response> {
        let mut response = sync_events::Response::new(now.to_string());
        let since_or_zero = |stream| since.map_or(0, |s: Positions| s.get(stream));

        let account_data = if since_or_zero(Stream::AccountData) < now.get(Stream::AccountData) {
            self.state
                .storage
                .account_data_since(
                    self.user.as_str(),
                    since_or_zero(Stream::AccountData),
                    now.get(Stream::AccountData),
                )
                .await?
        } else {
            Vec::new()
        };
        let (global, per_room): (Vec<AccountDataRow>, Vec<AccountDataRow>) = account_data
            .into_iter()
            .partition(|row| row.room_id.is_empty());
        response.account_data.events = self.global_account_data(since, global).await?;

        let mut room_data: HashMap<String, Vec<AccountDataRow>> = HashMap::new();
        for row in per_room {
            room_data.entry(row.room_id.clone()).or_default().push(row);
        }
        self.rooms(&mut response, since, now, room_data).await?;
        response.to_device.events = self.to_device(since, now).await?;
        // Room-mates, read only when presence moved (device lists read
        // them themselves when they need them).
        let sharing: Option<HashSet<String>> =
            if since.is_none_or(|s| now.get(Stream::Presence) > s.get(Stream::Presence)) {
                Some(
                    self.state
                        .storage
                        .users_sharing_rooms(self.user.as_str())
                        .await?
                        .into_iter()
                        .collect(),
                )
            } else {
                None
            };
        response.presence.events = self
            .presence(since, now, sharing.as_ref().unwrap_or(&HashSet::new()))
            .await?;
        if let Some(since) = since {
            let (changed, left) = super::keys::device_list_updates(
                self.state,
                self.user,
                &since,
                &now,
                sharing.as_ref(),
            )
            .await?;
            response.device_lists.changed = changed;
            response.device_lists.left = left;
        }
        let (counts, unused_fallback) =
            super::keys::one_time_key_counts(self.state, self.user.as_str(), self.device.as_str())
                .await?;
        response.device_one_time_keys_count = counts;
        response.device_unused_fallback_key_types = Some(unused_fallback);
        Ok(response)
    }

    async fn global_account_data(
        &self,
        since: Option<Positions>,
        rows: Vec<AccountDataRow>,
    ) -> ApiResult<Vec<Raw<ruma::events::AnyGlobalAccountDataEvent>>> {
        let filter = &self.filter.account_data;
        let mut events = Vec::new();
        let mut push_rules_sent = false;
        for row in rows {
            if !types_match(filter.types.as_deref(), &filter.not_types, &row.kind) {
                continue;
            }
            let content = if row.kind == PUSH_RULES_TYPE {
                push_rules_sent = true;
                // Stored rules lack server defaults added since.
                self.state.push_rules.as_account_data(self.user).await?
            } else {
                serde_json::from_str(&row.content).unwrap_or_else(|_| json!({}))
            };
            events.push(raw(json!({ "type": row.kind, "content": content })));
        }
        if since.is_none()
            && !push_rules_sent
            && types_match(filter.types.as_deref(), &filter.not_types, PUSH_RULES_TYPE)
        {
            let content = self.state.push_rules.as_account_data(self.user).await?;
            events.push(raw(json!({ "type": PUSH_RULES_TYPE, "content": content })));
        }
        Ok(events)
    }

    /// Waiting send-to-device messages; those up to `since` were received
    /// (the client moved past them) and are deleted first.
    async fn to_device(
        &self,
        since: Option<Positions>,
        now: Positions,
    ) -> ApiResult<Vec<Raw<ruma::events::AnyToDeviceEvent>>> {
        let storage = &self.state.storage;
        let key = (self.user.to_owned(), self.device.clone());
        if let Some(since) = since
            && self.state.sync_caches.unacknowledged.lock().remove(&key)
        {
            storage
                .delete_to_device_messages(
                    self.user.as_str(),
                    self.device.as_str(),
                    since.get(Stream::ToDevice),
                )
                .await?;
        }
        let mut messages = Vec::new();
        if now.get(Stream::ToDevice) > 0 {
            messages = storage
                .to_device_messages(
                    self.user.as_str(),
                    self.device.as_str(),
                    now.get(Stream::ToDevice),
                    TO_DEVICE_PER_SYNC,
                )
                .await?;
        }
        if !messages.is_empty() {
            self.state.sync_caches.unacknowledged.lock().insert(key);
        }
        Ok(messages
            .into_iter()
            .map(|m| {
                let content: Value = serde_json::from_str(&m.content).unwrap_or_else(|_| json!({}));
                raw(json!({ "type": m.kind, "sender": m.sender, "content": content }))
            })
            .collect())
    }

    async fn presence(
        &self,
        since: Option<Positions>,
        now: Positions,
        sharing: &HashSet<String>,
    ) -> ApiResult<Vec<Raw<ruma::events::presence::PresenceEvent>>> {
        if !self.state.config.presence.enabled {
            return Ok(Vec::new());
        }
        let since_position = since.map_or(0, |s| s.get(Stream::Presence));
        if now.get(Stream::Presence) <= since_position {
            return Ok(Vec::new());
        }
        let filter = &self.filter.presence;
        if !types_match(filter.types.as_deref(), &filter.not_types, "m.presence") {
            return Ok(Vec::new());
        }
        let rows = self
            .state
            .storage
            .presence_since(since_position, now.get(Stream::Presence))
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Presence routers (`get_interested_users`) add users beyond the
        // room-mates; asked only when presence moved and a plugin routes.
        let plugins = self.state.plugins.current();
        let routed = if plugins.routes_presence() {
            plugins.get_interested_users(self.user.as_str()).await
        } else {
            None
        };
        let interested = |user_id: &str| match &routed {
            Some(Interested::All) => true,
            Some(Interested::Users(users)) => users.iter().any(|u| u == user_id),
            None => false,
        };
        let now_ms = crate::storage::now_ms();
        Ok(rows
            .into_iter()
            .filter(|row| sharing.contains(&row.user_id) || interested(&row.user_id))
            .filter(|row| {
                filter
                    .senders
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|u| u == row.user_id.as_str()))
            })
            .filter(|row| !filter.not_senders.iter().any(|u| u == row.user_id.as_str()))
            .map(|row| {
                let mut content = json!({
                    "presence": row.state,
                    "last_active_ago": (now_ms - row.last_active_ts).max(0),
                    "currently_active": row.state == "online",
                });
                if let Some(msg) = row.status_msg {
                    content["status_msg"] = msg.into();
                }
                raw(json!({ "type": "m.presence", "sender": row.user_id, "content": content }))
            })
            .collect())
    }
}

/// A JSON value as a ruma `Raw` of any event type.
pub(super) fn raw<T>(value: Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(&value).expect("JSON values serialize"))
}

/// Keeps only the listed fields (dotted paths) of an event, for the
/// filter's `event_fields`.
pub(super) fn keep_fields(event: Value, fields: &[String]) -> Value {
    let mut out = json!({});
    for field in fields {
        let path: Vec<&str> = field.split('.').collect();
        let mut source = &event;
        let mut found = true;
        for part in &path {
            match source.get(part) {
                Some(next) => source = next,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        let mut target = &mut out;
        for part in &path[..path.len() - 1] {
            target = target
                .as_object_mut()
                .expect("built from objects")
                .entry(*part)
                .or_insert_with(|| json!({}));
        }
        target[path[path.len() - 1]] = source.clone();
    }
    out
}

/// A `BTreeMap` entry helper for receipt content.
pub(super) fn receipt_content(
    receipts: &[crate::storage::ephemeral::ReceiptRow],
    viewer: &UserId,
) -> Option<Value> {
    let mut content: BTreeMap<&str, BTreeMap<&str, BTreeMap<&str, Value>>> = BTreeMap::new();
    for receipt in receipts {
        if receipt.receipt_type == "m.read.private" && receipt.user_id != viewer.as_str() {
            continue;
        }
        let mut info = json!({ "ts": receipt.ts });
        if !receipt.thread_id.is_empty() {
            info["thread_id"] = receipt.thread_id.clone().into();
        }
        content
            .entry(&receipt.event_id)
            .or_default()
            .entry(&receipt.receipt_type)
            .or_default()
            .insert(&receipt.user_id, info);
    }
    (!content.is_empty()).then(|| json!(content))
}
