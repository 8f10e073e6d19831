//! The latest events of every room, as the event writer committed them.
//!
//! The log is complete above its floor: every event with a stream position
//! past `floor` is in it, so a range of positions above the floor (a sync's
//! `since`, a room's newest page) is answered without the database. Old
//! events are dropped from the front, raising the floor.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use ruma::events::TimelineEventType;

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

    /// Those of `rooms` with events in `(since, upto]`, if the log covers
    /// the range. Each room is looked up, not each event of the range: a
    /// sync asks about its user's rooms while the whole server writes.
    pub fn rooms_between<'r>(
        &self,
        since: i64,
        upto: i64,
        rooms: impl IntoIterator<Item = &'r str>,
    ) -> Option<Vec<&'r str>> {
        if since < self.floor {
            return None;
        }
        let has_events = |room: &str| {
            self.by_room.get(room).is_some_and(|positions| {
                let first_after = positions.partition_point(|&at| at <= since);
                positions.get(first_after).is_some_and(|&at| at <= upto)
            })
        };
        Some(rooms.into_iter().filter(|room| has_events(room)).collect())
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
                    pdu.kind == TimelineEventType::RoomMember
                        && rooms.contains(pdu.room_id.as_str())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::rooms::pdu::Pdu;

    /// An event `$e<n>` in `room`, positioned at `n` with state group `n`.
    fn write(room: &str, n: i64, redacts: Option<&str>) -> (EventWrite, i64) {
        let mut pdu = json!({
            "room_id": room, "sender": "@alice:x", "type": "m.room.message",
            "content": {"body": n.to_string()}, "origin_server_ts": n, "depth": n,
            "prev_events": [], "auth_events": [],
        });
        if let Some(target) = redacts {
            pdu["type"] = "m.room.redaction".into();
            pdu["redacts"] = target.into();
        }
        let write = EventWrite {
            pdu: Arc::new(Pdu::from_stored(&format!("$e{n}"), pdu.to_string()).unwrap()),
            new_room: None,
            state_group: n,
            new_state_group: None,
            replaces_extremities: Vec::new(),
            txn: Some(("@alice:x".into(), "PHONE".into(), format!("t{n}"))),
            push_actions: Vec::new(),
        };
        (write, n)
    }

    /// A log started after position 10, with `!a` at 11, 13, 15 and `!b`
    /// at 12, 14.
    fn log() -> RecentEvents {
        let mut log = RecentEvents::default();
        log.start_after(10);
        let (writes, orderings): (Vec<_>, Vec<_>) = (11..=15)
            .map(|n| write(if n % 2 == 1 { "!a:x" } else { "!b:x" }, n, None))
            .unzip();
        log.record(&writes, &orderings);
        log
    }

    fn positions(events: Option<Vec<StoredEvent>>) -> Option<Vec<i64>> {
        events.map(|events| events.iter().map(|e| e.stream_ordering).collect())
    }

    #[test]
    fn only_ranges_above_the_floor_are_answered() {
        let log = log();
        let all = ["!a:x", "!b:x", "!c:x"];
        assert_eq!(log.rooms_between(9, 15, all), None);
        assert_eq!(log.rooms_between(10, 15, all).unwrap(), ["!a:x", "!b:x"]);
        assert_eq!(log.rooms_between(13, 15, all).unwrap().len(), 2);
        assert_eq!(log.rooms_between(14, 15, all).unwrap(), ["!a:x"]);
        assert_eq!(log.rooms_between(11, 13, all).unwrap(), ["!a:x", "!b:x"]);
        assert_eq!(log.rooms_between(12, 13, ["!b:x"]).unwrap(), [""; 0]);
        assert_eq!(log.rooms_between(15, 15, all).unwrap(), [""; 0]);

        // Forward: after `from` up to `to`.
        let forward = |from, to| positions(log.room_events("!a:x", from, to, true, 10));
        assert_eq!(forward(9, None), None);
        assert_eq!(forward(10, None), Some(vec![11, 13, 15]));
        assert_eq!(forward(11, Some(13)), Some(vec![13]));
        // Backward: before `from` down to `to`, newest first. A full page
        // is the answer wherever it ends; a short one only above the floor.
        let backward = |from, to, limit| positions(log.room_events("!a:x", from, to, false, limit));
        assert_eq!(backward(16, Some(1), 2), Some(vec![15, 13]));
        assert_eq!(backward(16, Some(1), 5), None);
        assert_eq!(backward(16, None, 5), None);
        assert_eq!(backward(16, Some(11), 5), Some(vec![15, 13, 11]));
        assert_eq!(backward(15, Some(12), 5), Some(vec![13]));
    }

    #[test]
    fn state_groups_transactions_and_redactions() {
        let mut log = log();
        assert_eq!(log.state_group_at("!a:x", 14), Some(13));
        assert_eq!(log.state_group_at("!a:x", 10), None, "before the log");
        assert_eq!(log.state_group_at("!c:x", 14), None);

        let ids = |ns: &[i64]| ns.iter().map(|n| format!("$e{n}")).collect::<Vec<_>>();
        let txns = log.txn_ids("@alice:x", "PHONE", &ids(&[11, 12])).unwrap();
        assert_eq!(txns["$e12"], "t12");
        assert!(
            log.txn_ids("@alice:x", "LAPTOP", &ids(&[11]))
                .unwrap()
                .is_empty()
        );
        assert_eq!(log.txn_ids("@alice:x", "PHONE", &ids(&[9, 11])), None);

        let (redaction, at) = write("!a:x", 16, Some("$e13"));
        log.record(&[redaction], &[at]);
        let (found, missing) = log.events(&ids(&[13, 99]));
        assert_eq!(found[0].redacted_by.as_deref(), Some("$e16"));
        assert_eq!(missing, ["$e99"]);
    }

    #[test]
    fn a_purged_room_is_forgotten_and_not_recorded_again() {
        let mut log = log();
        log.forget_room("!a:x");
        assert_eq!(
            log.rooms_between(10, 15, ["!a:x", "!b:x"]).unwrap(),
            ["!b:x"]
        );
        let (late, at) = write("!a:x", 16, None);
        log.record(&[late], &[at]);
        assert_eq!(
            positions(log.room_events("!a:x", 10, None, true, 10)),
            Some(vec![])
        );
    }
}
