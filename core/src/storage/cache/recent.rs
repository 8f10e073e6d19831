//! The latest events of every room, as the event writer committed them.
//!
//! The log is complete above its floor: every event with a stream position
//! past `floor` is in it, so a range of positions above the floor (a sync's
//! `since`, a room's newest page) is answered without the database. Old
//! events are dropped from the front, raising the floor.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::{
    rooms::TxnKey,
    storage::rooms::{EventWrite, StoredEvent},
};

/// Events kept. A room's newest page and a minute of a busy server's
/// traffic fit; older reads go to the database.
const CAPACITY: usize = 20_000;

pub(in crate::storage) struct RecentEvents {
    /// Every event positioned after this is in `events`. Nothing is covered
    /// until [`Self::start_after`] says where the database stood.
    floor: i64,
    events: BTreeMap<i64, Recent>,
    /// Each room's positions in `events`, oldest first.
    by_room: HashMap<String, VecDeque<i64>>,
    by_id: HashMap<String, i64>,
    /// Rooms purged while this process ran: a batch of theirs still being
    /// written is not recorded after the purge.
    purged: HashSet<String>,
}

struct Recent {
    event: StoredEvent,
    /// `(user, device, txn)` for a client's send.
    txn: Option<TxnKey>,
}

impl Default for RecentEvents {
    fn default() -> Self {
        Self {
            floor: i64::MAX,
            events: BTreeMap::new(),
            by_room: HashMap::new(),
            by_id: HashMap::new(),
            purged: HashSet::new(),
        }
    }
}

impl RecentEvents {
    /// Starts the log at the database's last position: later events are
    /// all recorded.
    pub fn start_after(&mut self, position: i64) {
        *self = Self {
            floor: position,
            ..Self::default()
        };
    }

    /// Adds a committed batch (in stream order), applying its redactions.
    pub fn record(&mut self, batch: &[EventWrite], orderings: &[i64]) {
        for (write, &ordering) in batch.iter().zip(orderings) {
            let pdu = &write.pdu;
            if ordering <= self.floor || self.purged.contains(pdu.room_id.as_str()) {
                continue;
            }
            if let Some(target) = &pdu.redacts
                && let Some(at) = self.by_id.get(target.as_str())
                && let Some(redacted) = self.events.get_mut(at)
                && redacted.event.pdu.room_id == pdu.room_id
                && redacted.event.redacted_by.is_none()
            {
                redacted.event.redacted_by = Some(pdu.event_id.to_string());
            }
            self.events.insert(
                ordering,
                Recent {
                    event: StoredEvent {
                        pdu: pdu.clone(),
                        stream_ordering: ordering,
                        state_group: write.state_group,
                        redacted_by: None,
                    },
                    txn: write.txn.clone(),
                },
            );
            self.by_room
                .entry(pdu.room_id.to_string())
                .or_default()
                .push_back(ordering);
            self.by_id.insert(pdu.event_id.to_string(), ordering);
        }
        while self.events.len() > CAPACITY {
            let Some((ordering, oldest)) = self.events.pop_first() else {
                break;
            };
            self.floor = ordering;
            self.by_id.remove(oldest.event.pdu.event_id.as_str());
            let room = oldest.event.pdu.room_id.as_str();
            if let Some(positions) = self.by_room.get_mut(room) {
                positions.pop_front();
                if positions.is_empty() {
                    self.by_room.remove(room);
                }
            }
        }
    }

    /// Drops a purged room's events: the log stays complete, as the
    /// database no longer has them either.
    pub fn forget_room(&mut self, room_id: &str) {
        self.purged.insert(room_id.to_owned());
        for ordering in self.by_room.remove(room_id).unwrap_or_default() {
            if let Some(gone) = self.events.remove(&ordering) {
                self.by_id.remove(gone.event.pdu.event_id.as_str());
            }
        }
    }

    /// Rooms with events in `(since, upto]`, if the log covers the range.
    pub fn rooms_between(&self, since: i64, upto: i64) -> Option<Vec<String>> {
        if since < self.floor {
            return None;
        }
        let rooms: HashSet<&str> = self
            .events
            .range(since + 1..=upto)
            .map(|(_, recent)| recent.event.pdu.room_id.as_str())
            .collect();
        Some(rooms.into_iter().map(str::to_owned).collect())
    }

    /// `(room, member, membership)` of the member events in `(since, upto]`
    /// of the `rooms` given, oldest first, if the log covers the range.
    pub fn member_events_between(
        &self,
        since: i64,
        upto: i64,
        rooms: &HashSet<&str>,
    ) -> Option<Vec<(String, String, String)>> {
        if since < self.floor {
            return None;
        }
        Some(
            self.events
                .range(since + 1..=upto)
                .map(|(_, recent)| &recent.event.pdu)
                .filter(|pdu| {
                    pdu.kind.to_string() == "m.room.member" && rooms.contains(pdu.room_id.as_str())
                })
                .filter_map(|pdu| {
                    Some((
                        pdu.room_id.to_string(),
                        pdu.state_key.clone()?,
                        pdu.content_str("membership").unwrap_or_default(),
                    ))
                })
                .collect(),
        )
    }

    /// As `Storage::room_events`: the room's events after `from` up to `to`
    /// (forward), or before `from` down to `to` (backward, newest first),
    /// at most `limit` — if the log holds the whole answer.
    pub fn room_events(
        &self,
        room_id: &str,
        from: i64,
        to: Option<i64>,
        forward: bool,
        limit: usize,
    ) -> Option<Vec<StoredEvent>> {
        let positions = self.by_room.get(room_id);
        let all = positions.into_iter().flatten().copied();
        if forward {
            if from < self.floor {
                return None;
            }
            let to = to.unwrap_or(i64::MAX);
            return Some(
                all.filter(|&at| at > from && at <= to)
                    .take(limit)
                    .map(|at| self.events[&at].event.clone())
                    .collect(),
            );
        }
        let to = to.unwrap_or(0);
        let page: Vec<StoredEvent> = all
            .rev()
            .filter(|&at| at < from && at >= to)
            .take(limit)
            .map(|at| self.events[&at].event.clone())
            .collect();
        // A short page is the whole answer only when nothing below the
        // floor could belong to it.
        (page.len() == limit || to > self.floor).then_some(page)
    }

    /// The state group after the room's last event at or before `position`,
    /// if that event is in the log.
    pub fn state_group_at(&self, room_id: &str, position: i64) -> Option<i64> {
        let positions = self.by_room.get(room_id)?;
        let before = positions.partition_point(|&at| at <= position);
        let at = positions.get(before.checked_sub(1)?)?;
        Some(self.events[at].event.state_group)
    }

    /// The events with these IDs that the log has; the IDs it has not.
    pub fn events(&self, event_ids: &[String]) -> (Vec<StoredEvent>, Vec<String>) {
        let mut found = Vec::with_capacity(event_ids.len());
        let mut missing = Vec::new();
        for id in event_ids {
            match self.by_id.get(id) {
                Some(at) => found.push(self.events[at].event.clone()),
                None => missing.push(id.clone()),
            }
        }
        (found, missing)
    }

    /// The transaction IDs a device sent these events with, if the log has
    /// every one of the events.
    pub fn txn_ids(
        &self,
        user_id: &str,
        device_id: &str,
        event_ids: &[String],
    ) -> Option<HashMap<String, String>> {
        let mut out = HashMap::new();
        for id in event_ids {
            let recent = &self.events[self.by_id.get(id)?];
            if let Some((user, device, txn)) = &recent.txn
                && user == user_id
                && device == device_id
            {
                out.insert(id.clone(), txn.clone());
            }
        }
        Some(out)
    }
}
