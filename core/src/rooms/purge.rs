//! Removing a room from this server for good (the admin API's room
//! deletion).

use std::sync::atomic::Ordering;

use ruma::RoomId;

use super::{AppendError, Rooms};

impl Rooms {
    /// Deletes every trace of the room from the database under the room's
    /// lock, and forgets its head. Events of the room still queued for the
    /// writer are refused rather than written (their head is poisoned); a
    /// send racing the purge hears an error, as for a room that is gone.
    pub async fn purge(&self, room_id: &RoomId) -> Result<(), AppendError> {
        let lock = self.lock_for(room_id);
        let mut guard = lock.lock().await;
        if let Some(head) = guard.as_ref() {
            head.poisoned.store(true, Ordering::Release);
        }
        self.storage.purge_room(room_id.as_str()).await?;
        *guard = None;
        drop(guard);
        self.heads.lock().remove(room_id);
        Ok(())
    }
}
