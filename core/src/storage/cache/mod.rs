//! What the storage layer keeps in memory so that the hottest reads — a
//! `/sync` woken by a new event, an initial sync — cost no round trip to
//! the database, which on SQLite is a hand-off to another thread each.
//!
//! Every cache is filled from the database on a miss and kept right by the
//! storage methods that change what it holds: they update or invalidate it
//! after their transaction commits. A read that races such a write never
//! stores what it read (see [`KeyedCache`]). This assumes the process is the
//! database's only writer, as the event writer already does; several
//! processes would invalidate through the notifier's LISTEN/NOTIFY path.

mod recent;

use std::{borrow::Borrow, collections::HashMap, hash::Hash, sync::Arc};

use parking_lot::{Mutex, RwLock};

pub(super) use self::recent::RecentEvents;
use super::{
    Result,
    keys::KeyCounts,
    push::{PusherRow, UnreadByThread},
    rooms::{JoinedAndInvited, StateKey, UserRooms},
};

/// Users, devices or rooms remembered per cache; past this a cache starts
/// over, which bounds memory without bookkeeping per entry.
const ENTRIES_PER_CACHE: usize = 20_000;
/// State groups remembered: each holds a room's whole state.
const STATE_GROUPS: usize = 2_000;

pub(super) struct Caches {
    /// The latest events of every room, for timelines and `since` ranges.
    pub recent: RwLock<RecentEvents>,
    /// Per user: every room they have a membership in.
    pub memberships: KeyedCache<String, Arc<UserRooms>>,
    /// Per user: unread counts per `(room, thread)`.
    pub unread: KeyedCache<String, Arc<UnreadByThread>>,
    /// Per `(user, device)`: one-time and fallback key counts.
    pub key_counts: KeyedCache<(String, String), KeyCounts>,
    /// The `(user, device)`s whose send-to-device inbox was found empty.
    pub empty_inboxes: KeyedCache<(String, String), ()>,
    /// Per room: joined and invited members.
    pub room_members: KeyedCache<String, Arc<JoinedAndInvited>>,
    /// Per state group: its whole state (groups never change once written).
    pub state_groups: KeyedCache<i64, Arc<HashMap<StateKey, String>>>,
    /// Per `(user, filter ID)`: the filter's JSON (filters never change).
    /// Clients sync with a filter ID, so without it every sync reads one.
    pub filters: KeyedCache<(String, i64), Arc<str>>,
    /// Per user: their pushers. Every member an event notifies is looked
    /// up, and most have none.
    pub pushers: KeyedCache<String, Arc<[PusherRow]>>,
}

impl Default for Caches {
    fn default() -> Self {
        Self {
            recent: RwLock::new(RecentEvents::default()),
            memberships: KeyedCache::new(ENTRIES_PER_CACHE),
            unread: KeyedCache::new(ENTRIES_PER_CACHE),
            key_counts: KeyedCache::new(ENTRIES_PER_CACHE),
            empty_inboxes: KeyedCache::new(ENTRIES_PER_CACHE),
            room_members: KeyedCache::new(ENTRIES_PER_CACHE),
            state_groups: KeyedCache::new(STATE_GROUPS),
            filters: KeyedCache::new(ENTRIES_PER_CACHE),
            pushers: KeyedCache::new(ENTRIES_PER_CACHE),
        }
    }
}

/// A map from key to value read from the database.
///
/// Every change bumps a generation. A reader notes the generation before
/// reading the database and stores its result only if no change came in
/// between, so a value read before a write commits can never outlive it.
/// A change applied *after* its commit ([`Self::update`]) is announced
/// before the commit ([`Self::begin_change`]), so that a value read in
/// between, which already has the change, is not stored to get it twice.
pub(super) struct KeyedCache<K, V> {
    slots: Mutex<Slots<K, V>>,
    capacity: usize,
}

/// The generation a cache miss saw.
pub(super) struct Ticket(u64);

struct Slots<K, V> {
    generation: u64,
    /// Changes announced and not applied yet: no read is stored meanwhile.
    pending: usize,
    entries: HashMap<K, V>,
}

/// A change under way; dropping it (once the change is applied, or when
/// the write failed) lets reads be stored again.
pub(super) struct PendingChange<'a, K, V>(&'a KeyedCache<K, V>);

impl<K, V> Drop for PendingChange<'_, K, V> {
    fn drop(&mut self) {
        let mut slots = self.0.slots.lock();
        slots.pending -= 1;
        slots.generation += 1;
    }
}

impl<K: Eq + Hash + Clone, V: Clone> KeyedCache<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            slots: Mutex::new(Slots {
                generation: 0,
                pending: 0,
                entries: HashMap::new(),
            }),
            capacity,
        }
    }

    /// The cached value, or else `load`'s, which is kept if nothing changed
    /// meanwhile.
    pub async fn get_or_load(&self, key: &K, load: impl Future<Output = Result<V>>) -> Result<V> {
        let ticket = match self.get(key) {
            Ok(value) => return Ok(value),
            Err(ticket) => ticket,
        };
        let value = load.await?;
        self.fill(ticket, key.clone(), value.clone());
        Ok(value)
    }

    /// The cached value, or the ticket with which to store one read now.
    pub fn get<Q>(&self, key: &Q) -> std::result::Result<V, Ticket>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slots = self.slots.lock();
        match slots.entries.get(key) {
            Some(value) => Ok(value.clone()),
            None => Err(Ticket(slots.generation)),
        }
    }

    /// Stores a value read after [`Self::get`] gave `ticket`, unless
    /// something changed since.
    pub fn fill(&self, ticket: Ticket, key: K, value: V) {
        let mut slots = self.slots.lock();
        if slots.generation == ticket.0 && slots.pending == 0 {
            if slots.entries.len() >= self.capacity {
                slots.entries.clear();
            }
            slots.entries.insert(key, value);
        }
    }

    /// Announces a change that [`Self::update`] will apply once committed.
    pub fn begin_change(&self) -> PendingChange<'_, K, V> {
        let mut slots = self.slots.lock();
        slots.pending += 1;
        slots.generation += 1;
        PendingChange(self)
    }

    /// Changes a cached value in place (nothing if it is not cached).
    pub fn update<Q>(&self, key: &Q, change: impl FnOnce(&mut V))
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut slots = self.slots.lock();
        slots.generation += 1;
        if let Some(value) = slots.entries.get_mut(key) {
            change(value);
        }
    }

    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut slots = self.slots.lock();
        slots.generation += 1;
        slots.entries.remove(key);
    }

    pub fn clear(&self) {
        let mut slots = self.slots.lock();
        slots.generation += 1;
        slots.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_racing_a_change_is_not_kept() {
        let cache: KeyedCache<&str, i64> = KeyedCache::new(10);
        // The change lands while the read is in flight: the read's (older)
        // value is returned to its caller but not cached.
        let read = cache
            .get_or_load(&"alice", async {
                cache.invalidate(&"alice");
                Ok(1)
            })
            .await
            .unwrap();
        assert_eq!(read, 1);
        let fresh = cache.get_or_load(&"alice", async { Ok(2) }).await.unwrap();
        assert_eq!(fresh, 2);
        // Now cached: the loader is not consulted.
        let cached = cache.get_or_load(&"alice", async { Ok(3) }).await.unwrap();
        assert_eq!(cached, 2);
        cache.update(&"alice", |v| *v += 10);
        assert_eq!(
            cache.get_or_load(&"alice", async { Ok(0) }).await.unwrap(),
            12
        );
    }

    #[tokio::test]
    async fn a_read_during_an_announced_change_is_not_kept() {
        let cache: KeyedCache<&str, i64> = KeyedCache::new(10);
        // The database already has the change (2) when the read runs; the
        // change is applied to the cache afterwards. Keeping the read
        // would count the change twice.
        let change = cache.begin_change();
        let read = cache.get_or_load(&"bob", async { Ok(2) }).await.unwrap();
        assert_eq!(read, 2);
        cache.update(&"bob", |v| *v += 1);
        drop(change);
        assert_eq!(cache.get_or_load(&"bob", async { Ok(2) }).await.unwrap(), 2);
        assert_eq!(cache.get_or_load(&"bob", async { Ok(9) }).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_full_cache_starts_over() {
        let cache: KeyedCache<i64, i64> = KeyedCache::new(2);
        for key in 0..3 {
            cache
                .get_or_load(&key, async move { Ok(key) })
                .await
                .unwrap();
        }
        assert_eq!(cache.slots.lock().entries.len(), 1);
    }
}
