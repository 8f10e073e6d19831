//! The `rooms` section of a sync: joined, invited, knocked and left rooms.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt,
    api::client::{
        filter::{LazyLoadOptions, RoomEventFilter},
        sync::sync_events::{
            UnreadNotificationsCount,
            v3::{self as sync_events, InvitedRoom, JoinedRoom, KnockedRoom, LeftRoom, State},
        },
    },
    events::TimelineEventType,
    room_version_rules::RoomVersionRules,
};
use serde_json::{Value, json};

use super::{SyncRequest, keep_fields, raw, receipt_content};
use crate::{
    api::{
        client::{room_access::client_events, timeline::page},
        error::{ApiResult, MatrixError},
    },
    rooms::{filter, versions},
    storage::{
        ephemeral::ReceiptRow, push::UnreadCounts, rooms::StoredEvent, user_data::AccountDataRow,
    },
    streams::{Positions, Stream},
};

/// Timeline events per room when the filter sets no limit (Synapse's default).
const DEFAULT_TIMELINE_LIMIT: u64 = 10;
const MAX_TIMELINE_LIMIT: u64 = 1000;
/// State events shown to invitees and knockers (spec: "Stripped state").
const STRIPPED_STATE: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// What one room's timeline section holds.
struct Timeline {
    events: Vec<StoredEvent>,
    limited: bool,
}

impl SyncRequest<'_> {
    pub(super) async fn rooms(
        &self,
        response: &mut sync_events::Response,
        since: Option<Positions>,
        now: Positions,
        mut room_data: HashMap<String, Vec<AccountDataRow>>,
    ) -> ApiResult<()> {
        let storage = &self.state.storage;
        let room_filter = &self.filter.room;
        let since_events = since.map(|s| s.get(Stream::Events));
        let mut receipts: HashMap<String, Vec<ReceiptRow>> = HashMap::new();
        if let Some(since) = since
            && now.get(Stream::Receipts) > since.get(Stream::Receipts)
        {
            for receipt in storage
                .receipts_since(since.get(Stream::Receipts), now.get(Stream::Receipts))
                .await?
            {
                receipts
                    .entry(receipt.room_id.clone())
                    .or_default()
                    .push(receipt);
            }
        }
        let unread = storage.unread_counts(self.user.as_str()).await?;
        let user_rooms = storage.memberships_of(self.user.as_str()).await?;
        let memberships = &user_rooms.memberships;
        let joined: Vec<&str> = memberships
            .iter()
            .filter(|(_, membership, _)| membership == "join")
            .map(|(room_id, _, _)| room_id.as_str())
            .collect();
        let changed_rooms: HashSet<&str> = match since_events {
            Some(from) if now.get(Stream::Events) > from => storage
                .rooms_with_events_between(from, now.get(Stream::Events), &joined)
                .await?
                .into_iter()
                .collect(),
            _ => HashSet::new(),
        };
        if since.is_none() {
            // Every joined room shows its receipts: one query for them all.
            for receipt in storage
                .receipts_in_rooms(&joined, now.get(Stream::Receipts))
                .await?
            {
                receipts
                    .entry(receipt.room_id.clone())
                    .or_default()
                    .push(receipt);
            }
        }

        for (room_id, membership, at) in memberships.iter() {
            let at = *at;
            // A membership committed after `now` is for the next sync.
            if at > now.get(Stream::Events) {
                continue;
            }
            let Ok(room_id) = OwnedRoomId::try_from(room_id.as_str()) else {
                continue;
            };
            if room_filter.not_rooms.contains(&room_id)
                || room_filter
                    .rooms
                    .as_ref()
                    .is_some_and(|r| !r.contains(&room_id))
            {
                continue;
            }
            let membership_is_new = since_events.is_none_or(|from| at > from);
            match membership.as_str() {
                "join" => {
                    let typing = self
                        .state
                        .live
                        .typing
                        .changed_since(&room_id, since.map(|s| s.get(Stream::Typing)));
                    let account_data = room_data.remove(room_id.as_str()).unwrap_or_default();
                    let room_receipts = receipts.remove(room_id.as_str()).unwrap_or_default();
                    let full = membership_is_new || self.full_state;
                    let has_events = full || changed_rooms.contains(room_id.as_str());
                    if !has_events
                        && account_data.is_empty()
                        && room_receipts.is_empty()
                        && typing.is_none()
                    {
                        continue;
                    }
                    let room = self
                        .joined_room(JoinedInputs {
                            room_id: &room_id,
                            since,
                            now,
                            full,
                            has_events,
                            typing,
                            receipts: room_receipts,
                            account_data,
                            unread: &unread,
                            joined_at: at,
                        })
                        .await?;
                    response.rooms.join.insert(room_id, room);
                }
                "invite" | "knock" if membership_is_new => {
                    let stripped = self.stripped_state(&room_id).await?;
                    if membership == "invite" {
                        let mut room = InvitedRoom::new();
                        room.invite_state.events = stripped.into_iter().map(raw).collect();
                        response.rooms.invite.insert(room_id, room);
                    } else {
                        let mut room = KnockedRoom::new();
                        room.knock_state.events = stripped.into_iter().map(raw).collect();
                        response.rooms.knock.insert(room_id, room);
                    }
                }
                "leave" | "ban"
                    if (since.is_some() && membership_is_new)
                        || (since.is_none() && room_filter.include_leave) =>
                {
                    let account_data = room_data.remove(room_id.as_str()).unwrap_or_default();
                    let room = self.left_room(&room_id, since, at, account_data).await?;
                    response.rooms.leave.insert(room_id, room);
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn room_rules(&self, room_id: &RoomId) -> ApiResult<RoomVersionRules> {
        let versions = &self.state.sync_caches.room_versions;
        let cached = versions.lock().get(room_id).cloned();
        let version = match cached {
            Some(version) => version,
            None => {
                let room = self
                    .state
                    .storage
                    .room(room_id.as_str())
                    .await?
                    .ok_or_else(MatrixError::internal)?;
                versions
                    .lock()
                    .insert(room_id.to_owned(), room.room_version.clone());
                room.room_version
            }
        };
        versions::supported(&version)
            .map(|(_, rules)| rules)
            .ok_or_else(MatrixError::internal)
    }

    fn timeline_filter(&self) -> &RoomEventFilter {
        &self.filter.room.timeline
    }

    /// The newest events in `(after, upto]`, oldest first, as many as the
    /// timeline filter allows; `joined_at` as for `filter_visible`.
    async fn timeline(
        &self,
        room_id: &RoomId,
        after: i64,
        upto: i64,
        joined_at: Option<i64>,
    ) -> ApiResult<Timeline> {
        let filter = self.timeline_filter();
        let limit = filter
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, u64::from)
            .clamp(1, MAX_TIMELINE_LIMIT) as usize;
        let (mut events, more) = page(
            self.state,
            room_id,
            self.user,
            upto,
            Some(after),
            false,
            limit,
            filter,
            joined_at,
        )
        .await?;
        events.reverse();
        Ok(Timeline {
            events,
            limited: more.is_some(),
        })
    }

    /// The state a timeline starts from: after the room's last event
    /// before `first` (or at `upto` for an empty timeline).
    async fn state_before(
        &self,
        room_id: &RoomId,
        timeline: &Timeline,
        upto: i64,
    ) -> ApiResult<Arc<HashMap<(String, String), String>>> {
        let position = timeline
            .events
            .first()
            .map_or(upto, |first| first.stream_ordering - 1);
        match self
            .state
            .storage
            .state_group_at(room_id.as_str(), position)
            .await?
        {
            Some(group) => Ok(self.state.storage.state_at_group(group).await?),
            None => Ok(Arc::default()),
        }
    }

    /// The `state` section: the full state before the timeline, or what
    /// changed in it since `since` (only possible across a gap: without one
    /// every change is in the timeline). Lazy loading keeps only the member
    /// events of the timeline's senders the device has not been sent.
    async fn state_section(
        &self,
        room_id: &RoomId,
        timeline: &Timeline,
        since: Option<i64>,
        upto: i64,
    ) -> ApiResult<Vec<StoredEvent>> {
        let lazy = self.filter.room.state.lazy_load_options;
        let full = since.is_none();
        if !full && !timeline.limited && lazy.is_disabled() {
            return Ok(Vec::new());
        }
        let before = self.state_before(room_id, timeline, upto).await?;
        let at_since = match since {
            Some(since) if timeline.limited => match self
                .state
                .storage
                .state_group_at(room_id.as_str(), since)
                .await?
            {
                Some(group) => self.state.storage.state_at_group(group).await?,
                None => Arc::default(),
            },
            Some(_) => before.clone(),
            None => Arc::default(),
        };
        let senders: HashSet<&str> = timeline
            .events
            .iter()
            .map(|e| e.pdu.sender.as_str())
            .collect();
        let in_timeline: HashSet<&str> = timeline
            .events
            .iter()
            .map(|e| e.pdu.event_id.as_str())
            .collect();
        let mut wanted: Vec<String> = Vec::new();
        let mut lazy_members: Vec<String> = Vec::new();
        for ((kind, state_key), event_id) in before.iter() {
            if in_timeline.contains(event_id.as_str()) {
                continue;
            }
            let changed = at_since.get(&(kind.clone(), state_key.clone())) != Some(event_id);
            if kind == "m.room.member" && !lazy.is_disabled() {
                if senders.contains(state_key.as_str()) || (full && state_key == self.user.as_str())
                {
                    lazy_members.push(event_id.clone());
                }
                continue;
            }
            if full || changed {
                wanted.push(event_id.clone());
            }
        }
        if let LazyLoadOptions::Enabled {
            include_redundant_members,
        } = lazy
        {
            let key = (self.user.to_owned(), self.device.clone());
            let mut caches = self.state.sync_caches.lazy_members.lock();
            let sent = caches.entry(key).or_default();
            if sent.len() > super::LAZY_MEMBERS_PER_DEVICE {
                sent.clear();
            }
            for member in lazy_members {
                if sent.insert(member.clone()) || include_redundant_members || full {
                    wanted.push(member);
                }
            }
        }
        let state_filter = &self.filter.room.state;
        let mut events: Vec<StoredEvent> = self
            .state
            .storage
            .events(&wanted)
            .await?
            .into_iter()
            .filter(|e| filter::matches(state_filter, &e.pdu))
            .collect();
        events.sort_by_key(|e| e.stream_ordering);
        Ok(events)
    }

    /// The transaction IDs this device sent any of these events with, in
    /// one query for all the lists.
    async fn txn_ids(&self, lists: &[&[StoredEvent]]) -> ApiResult<HashMap<String, String>> {
        let own: Vec<String> = lists
            .iter()
            .flat_map(|events| events.iter())
            .filter(|e| e.pdu.sender == self.user)
            .map(|e| e.pdu.event_id.to_string())
            .collect();
        if own.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .state
            .storage
            .txn_ids(self.user.as_str(), self.device.as_str(), &own)
            .await?)
    }

    /// Events in client format, with the device's transaction IDs (from
    /// [`Self::txn_ids`]) and the filter's `event_fields` applied.
    async fn client_events<T>(
        &self,
        rules: &RoomVersionRules,
        events: &[StoredEvent],
        txns: &HashMap<String, String>,
    ) -> ApiResult<Vec<ruma::serde::Raw<T>>> {
        let fields = self.filter.event_fields.as_deref();
        Ok(client_events(self.state, rules, events)
            .await?
            .into_iter()
            .map(|mut event| {
                if let Some(txn) = event["event_id"].as_str().and_then(|id| txns.get(id)) {
                    event["unsigned"]["transaction_id"] = txn.clone().into();
                }
                match fields {
                    Some(fields) => raw(keep_fields(event, fields)),
                    None => raw(event),
                }
            })
            .collect())
    }

    async fn joined_room(&self, inputs: JoinedInputs<'_>) -> ApiResult<JoinedRoom> {
        let JoinedInputs {
            room_id,
            since,
            now,
            full,
            has_events,
            typing,
            receipts,
            account_data,
            unread,
            joined_at,
        } = inputs;
        let rules = self.room_rules(room_id).await?;
        let upto = now.get(Stream::Events);
        let since_events = if full {
            None
        } else {
            since.map(|s| s.get(Stream::Events))
        };
        let timeline = if has_events {
            self.timeline(room_id, since_events.unwrap_or(0), upto, Some(joined_at))
                .await?
        } else {
            Timeline {
                events: Vec::new(),
                limited: false,
            }
        };
        let state = if has_events {
            self.state_section(room_id, &timeline, since_events, upto)
                .await?
        } else {
            Vec::new()
        };

        let mut room = JoinedRoom::new();
        room.timeline.limited = timeline.limited;
        room.timeline.prev_batch = Some(match timeline.events.first() {
            Some(first) => crate::api::client::room_access::token(first.stream_ordering - 1),
            None => crate::api::client::room_access::token(upto),
        });
        let membership_changed = full
            || timeline
                .events
                .iter()
                .chain(&state)
                .any(|e| e.pdu.kind == TimelineEventType::RoomMember);
        let txns = self.txn_ids(&[&timeline.events, &state]).await?;
        room.timeline.events = self.client_events(&rules, &timeline.events, &txns).await?;
        room.state = State::Before(ruma::api::client::sync::sync_events::v3::StateEvents::new());
        if let State::Before(section) = &mut room.state {
            section.events = self.client_events(&rules, &state, &txns).await?;
        }
        if membership_changed {
            room.summary = self.summary(room_id).await?;
        }

        let ephemeral = &self.filter.room.ephemeral;
        let mut ephemeral_events = Vec::new();
        if let Some(users) = typing
            && (since.is_some() || !users.is_empty())
            && filter::types_match(ephemeral.types.as_deref(), &ephemeral.not_types, "m.typing")
        {
            ephemeral_events.push(raw(
                json!({ "type": "m.typing", "content": { "user_ids": users } }),
            ));
        }
        // An initial sync's receipts were read for all rooms at once.
        let receipts = if full && since.is_some() {
            self.state
                .storage
                .receipts_in_rooms(&[room_id.as_str()], now.get(Stream::Receipts))
                .await?
        } else {
            receipts
        };
        if filter::types_match(
            ephemeral.types.as_deref(),
            &ephemeral.not_types,
            "m.receipt",
        ) && let Some(content) = receipt_content(&receipts, self.user)
        {
            ephemeral_events.push(raw(json!({ "type": "m.receipt", "content": content })));
        }
        room.ephemeral.events = ephemeral_events;
        room.account_data.events = self.room_account_data(account_data);

        let per_thread = self.timeline_filter().unread_thread_notifications;
        let mut total = UnreadCounts::default();
        for ((counted_room, thread), counts) in unread {
            if counted_room != room_id.as_str() {
                continue;
            }
            if per_thread && thread != "main" {
                if let Ok(root) = OwnedEventId::try_from(thread.as_str()) {
                    room.unread_thread_notifications
                        .insert(root, unread_count(*counts));
                }
                continue;
            }
            total.notifications += counts.notifications;
            total.highlights += counts.highlights;
        }
        room.unread_notifications = unread_count(total);
        Ok(room)
    }

    fn room_account_data(
        &self,
        rows: Vec<AccountDataRow>,
    ) -> Vec<ruma::serde::Raw<ruma::events::AnyRoomAccountDataEvent>> {
        let filter = &self.filter.room.account_data;
        rows.into_iter()
            .filter(|row| {
                filter::types_match(filter.types.as_deref(), &filter.not_types, &row.kind)
            })
            .map(|row| {
                let content: Value =
                    serde_json::from_str(&row.content).unwrap_or_else(|_| json!({}));
                raw(json!({ "type": row.kind, "content": content }))
            })
            .collect()
    }

    /// `m.heroes` and the member counts, from the room's current state.
    async fn summary(&self, room_id: &RoomId) -> ApiResult<sync_events::RoomSummary> {
        let storage = &self.state.storage;
        let members = storage.joined_and_invited(room_id.as_str()).await?;
        let (joined, invited) = &*members;
        let mut summary = sync_events::RoomSummary::new();
        summary.joined_member_count = Some(UInt::try_from(joined.len() as u64).unwrap_or_default());
        summary.invited_member_count =
            Some(UInt::try_from(invited.len() as u64).unwrap_or_default());
        summary.heroes = joined
            .iter()
            .chain(invited)
            .filter(|user| *user != self.user.as_str())
            .take(5)
            .filter_map(|user| OwnedUserId::try_from(user.as_str()).ok())
            .collect();
        Ok(summary)
    }

    /// What an invitee or knocker may see of the room, and their own
    /// membership event.
    async fn stripped_state(&self, room_id: &RoomId) -> ApiResult<Vec<Value>> {
        let storage = &self.state.storage;
        let mut out = Vec::new();
        let keys = STRIPPED_STATE
            .iter()
            .map(|kind| (*kind, ""))
            .chain([("m.room.member", self.user.as_str())]);
        for (kind, state_key) in keys {
            if let Some(event) = storage
                .current_state_event(room_id.as_str(), kind, state_key)
                .await?
            {
                out.push(json!({
                    "type": kind,
                    "state_key": state_key,
                    "sender": event.pdu.sender,
                    "content": event.pdu.content_value(),
                }));
            }
        }
        Ok(out)
    }

    /// A room the user left (or was banned from) since `since`: the
    /// timeline up to their leaving.
    async fn left_room(
        &self,
        room_id: &RoomId,
        since: Option<Positions>,
        left_at: i64,
        account_data: Vec<AccountDataRow>,
    ) -> ApiResult<LeftRoom> {
        let rules = self.room_rules(room_id).await?;
        let since_events = since.map(|s| s.get(Stream::Events));
        let timeline = self
            .timeline(room_id, since_events.unwrap_or(0), left_at, None)
            .await?;
        let state = self
            .state_section(room_id, &timeline, since_events, left_at)
            .await?;
        let mut room = LeftRoom::new();
        room.timeline.limited = timeline.limited;
        room.timeline.prev_batch = timeline
            .events
            .first()
            .map(|first| crate::api::client::room_access::token(first.stream_ordering - 1));
        let txns = self.txn_ids(&[&timeline.events, &state]).await?;
        room.timeline.events = self.client_events(&rules, &timeline.events, &txns).await?;
        if let State::Before(section) = &mut room.state {
            section.events = self.client_events(&rules, &state, &txns).await?;
        }
        room.account_data.events = self.room_account_data(account_data);
        Ok(room)
    }
}

struct JoinedInputs<'a> {
    room_id: &'a RoomId,
    since: Option<Positions>,
    now: Positions,
    full: bool,
    has_events: bool,
    typing: Option<Vec<OwnedUserId>>,
    receipts: Vec<ReceiptRow>,
    account_data: Vec<AccountDataRow>,
    unread: &'a HashMap<(String, String), UnreadCounts>,
    /// The stream position of the user's current join.
    joined_at: i64,
}

fn unread_count(counts: UnreadCounts) -> UnreadNotificationsCount {
    let mut out = UnreadNotificationsCount::new();
    out.notification_count = Some(UInt::try_from(counts.notifications as u64).unwrap_or_default());
    out.highlight_count = Some(UInt::try_from(counts.highlights as u64).unwrap_or_default());
    out
}
