//! Typing notices (spec: "Typing Notifications"): in memory only, each with
//! its own expiry, and a position in the typing stream per room change.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

/// The longest a client may ask to be shown typing.
const MAX_TYPING: Duration = Duration::from_secs(120);

#[derive(Default)]
struct RoomTyping {
    until: HashMap<OwnedUserId, Instant>,
    /// The typing-stream position of the room's last change.
    changed_at: i64,
}

#[derive(Default)]
pub struct Typing {
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
}

impl Typing {
    /// Records a start (with a timeout) or stop; returns whether the set of
    /// typing users changed, stamping the room with `next_position()` if so.
    pub fn set(
        &self,
        room_id: &RoomId,
        user: &UserId,
        timeout: Option<Duration>,
        next_position: impl FnOnce() -> i64,
    ) -> bool {
        let now = Instant::now();
        let mut rooms = self.rooms.lock();
        let room = rooms.entry(room_id.to_owned()).or_default();
        let was_typing = room.until.get(user).is_some_and(|until| *until > now);
        match timeout {
            Some(timeout) => {
                room.until
                    .insert(user.to_owned(), now + timeout.min(MAX_TYPING));
            }
            None => {
                room.until.remove(user);
            }
        }
        let changed = was_typing != timeout.is_some();
        if changed {
            room.changed_at = next_position();
        }
        changed
    }

    /// Drops expired notices; returns the rooms whose typing set changed,
    /// each stamped with a new position.
    pub fn expire(&self, mut next_position: impl FnMut() -> i64) -> Vec<OwnedRoomId> {
        let now = Instant::now();
        let mut changed = Vec::new();
        let mut rooms = self.rooms.lock();
        for (room_id, room) in rooms.iter_mut() {
            let before = room.until.len();
            room.until.retain(|_, until| *until > now);
            if room.until.len() != before {
                room.changed_at = next_position();
                changed.push(room_id.clone());
            }
        }
        changed
    }

    /// Who is typing in the room, if that changed after position `since`
    /// (always when `since` is `None`).
    pub fn changed_since(&self, room_id: &RoomId, since: Option<i64>) -> Option<Vec<OwnedUserId>> {
        let now = Instant::now();
        let rooms = self.rooms.lock();
        let room = rooms.get(room_id)?;
        if since.is_some_and(|since| room.changed_at <= since) {
            return None;
        }
        let mut users: Vec<OwnedUserId> = room
            .until
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(user, _)| user.clone())
            .collect();
        users.sort();
        Some(users)
    }
}
