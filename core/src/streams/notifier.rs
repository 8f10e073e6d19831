//! Wakes long-polling `/sync` requests when something they follow changes.
//!
//! This is the one wake-up path: writers call [`Notifier::wake`] after their
//! change is committed, and sync requests wait on a [`Listener`]. Several
//! processes sharing one PostgreSQL would forward each `wake` through
//! LISTEN/NOTIFY and call `wake_local` on receipt; nothing else changes.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use foldhash::fast::RandomState;
use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId};
use tokio::sync::Notify;

/// What a change concerns: one user (account data, to-device, invites,
/// their own membership) or everyone in a room (events, typing, receipts).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WakeKey {
    User(OwnedUserId),
    Room(OwnedRoomId),
}

/// Listeners by what they follow, each under its own number, so that one
/// leaving is a removal, not a scan: a busy room has a listener per member.
/// A long-poll registers under its user and each of the user's rooms, so
/// for someone in hundreds of rooms this map is the hot path: it hashes
/// with foldhash (seeded per process) rather than SipHash.
#[derive(Default)]
pub struct Notifier {
    waiters: Mutex<HashMap<WakeKey, Listeners, RandomState>>,
    next_listener: AtomicU64,
}

type Listeners = HashMap<u64, Arc<Notify>, RandomState>;

impl Notifier {
    /// Registers interest in `keys`. Changes from now on are not missed, even
    /// those that happen before [`Listener::wait`] is called.
    pub fn listen(self: &Arc<Self>, keys: Arc<[WakeKey]>) -> Listener {
        let notify = Arc::new(Notify::new());
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        let mut waiters = self.waiters.lock();
        for key in keys.iter() {
            // A key someone already follows is not cloned.
            match waiters.get_mut(key) {
                Some(listeners) => {
                    listeners.insert(id, notify.clone());
                }
                None => {
                    let mut listeners = Listeners::default();
                    listeners.insert(id, notify.clone());
                    waiters.insert(key.clone(), listeners);
                }
            }
        }
        Listener {
            notifier: self.clone(),
            id,
            keys,
            notify,
        }
    }

    /// Wakes every listener of any of `keys`.
    pub fn wake(&self, keys: &[WakeKey]) {
        self.wake_local(keys);
    }

    fn wake_local(&self, keys: &[WakeKey]) {
        let waiters = self.waiters.lock();
        for key in keys {
            for notify in waiters.get(key).into_iter().flat_map(Listeners::values) {
                // Stores a permit if the listener is not waiting yet.
                notify.notify_one();
            }
        }
    }

    fn forget(&self, keys: &[WakeKey], id: u64) {
        let mut waiters = self.waiters.lock();
        for key in keys {
            if let Some(listeners) = waiters.get_mut(key) {
                listeners.remove(&id);
                if listeners.is_empty() {
                    waiters.remove(key);
                }
            }
        }
    }
}

/// One request's registration; dropping it unregisters.
pub struct Listener {
    notifier: Arc<Notifier>,
    id: u64,
    keys: Arc<[WakeKey]>,
    notify: Arc<Notify>,
}

impl Listener {
    /// Waits for a wake-up; `false` if `timeout` passed first.
    pub async fn wait(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.notify.notified())
            .await
            .is_ok()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.notifier.forget(&self.keys, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_before_waiting_is_kept_and_other_keys_do_not_wake() {
        let notifier = Arc::new(Notifier::default());
        let alice = WakeKey::User("@alice:x".try_into().unwrap());
        let bob = WakeKey::User("@bob:x".try_into().unwrap());
        let listener = notifier.listen(Arc::new([alice.clone()]));
        notifier.wake(std::slice::from_ref(&bob));
        assert!(!listener.wait(Duration::from_millis(10)).await);
        notifier.wake(&[alice]);
        assert!(listener.wait(Duration::from_secs(5)).await);
        drop(listener);
        assert!(notifier.waiters.lock().is_empty());
    }

    #[tokio::test]
    async fn a_listener_leaving_keeps_the_others_of_its_room() {
        let notifier = Arc::new(Notifier::default());
        let room = WakeKey::Room("!room:x".try_into().unwrap());
        let listeners: Vec<_> = (0..3)
            .map(|_| notifier.listen(Arc::new([room.clone()])))
            .collect();
        let [first, second, third] = <[_; 3]>::try_from(listeners).ok().unwrap();
        drop(second);
        assert_eq!(notifier.waiters.lock()[&room].len(), 2);
        notifier.wake(std::slice::from_ref(&room));
        assert!(first.wait(Duration::from_secs(5)).await);
        assert!(third.wait(Duration::from_secs(5)).await);
        drop((first, third));
        assert!(notifier.waiters.lock().is_empty());
    }
}
