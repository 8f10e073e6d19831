//! Rooms as the spec defines them: a graph of signed events whose state is
//! decided by the room version's authorization rules.
//!
//! Every local event goes through [`RoomAppender::append`] (or its
//! `prepare`, `allowed` and `commit` steps): under the room's lock the event is
//! placed after the room's forward extremities, signed, checked with ruma's
//! state-res authorization rules against the room's state, offered to the
//! third-party rules plugins (which may replace its content), and handed to
//! the [`writer`], which commits events in batches (group commit). The
//! caller hears back only once its event is durable; plugins' `on_new_event`
//! runs after that, in the background.

pub mod create;
pub mod filter;
pub mod membership;
pub mod pdu;
pub mod power;
mod purge;
pub mod resolution;
pub mod versions;
pub mod visibility;
mod writer;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res::{
        auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules,
    },
};
use tokio::sync::{Mutex, oneshot};

use myelin_plugin_api::{EventAllowed, Plugins, RulesCallback};

use self::{
    pdu::{EventDraft, Pdu, PduError, Position},
    writer::{EventWriter, WriteJob},
};
use crate::{
    federation::signing_key::SigningKey,
    push::{
        PushRules,
        gateway::{PushGateway, PushJob},
    },
    storage::{
        Storage,
        rooms::{EventWrite, NewStateGroup, RoomRecord, SNAPSHOT_INTERVAL, StateKey, StoredEvent},
    },
    streams::{Live, Stream, notifier::WakeKey},
};

/// Why an event could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("room not found")]
    UnknownRoom,
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Pdu(#[from] PduError),
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("the event could not be written")]
    WriteFailed,
    /// The room's forked states could not be resolved.
    #[error("state resolution failed: {0}")]
    Resolution(String),
    /// A plugin (spam checker or third-party rules) refused the event.
    #[error("refused: {message}")]
    Refused { errcode: String, message: String },
}

/// A transaction ID as clients scope it: per user and device.
pub type TxnKey = (String, String, String);

/// What the server holds in memory for a room it writes to: where the next
/// event goes and the state it is authorized against.
pub struct RoomHead {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    pub extremities: Vec<Arc<Pdu>>,
    pub state: HashMap<StateKey, Arc<Pdu>>,
    state_group: i64,
    chain_length: i64,
    /// Set by the writer when a write of this room failed: the head is then
    /// ahead of the database and is reloaded before the next event.
    poisoned: Arc<AtomicBool>,
    recent_txns: VecDeque<(TxnKey, OwnedEventId)>,
}

const RECENT_TXNS: usize = 256;

impl RoomHead {
    pub fn state_event(&self, kind: &StateEventType, state_key: &str) -> Option<&Arc<Pdu>> {
        self.state.get(&(kind.to_string(), state_key.to_owned()))
    }

    /// The current membership of `user` (`"leave"` when there is none).
    pub fn membership(&self, user: &UserId) -> String {
        self.state_event(&StateEventType::RoomMember, user.as_str())
            .and_then(|pdu| pdu.content_str("membership"))
            .unwrap_or_else(|| "leave".to_owned())
    }
}

/// The rooms this server writes to.
pub struct Rooms {
    heads: parking_lot::Mutex<HashMap<OwnedRoomId, Arc<Mutex<Option<RoomHead>>>>>,
    next_state_group: AtomicI64,
    writer: EventWriter,
    storage: Storage,
    signing_key: Arc<SigningKey>,
    server_name: OwnedServerName,
    push_rules: Arc<PushRules>,
    plugins: Arc<Plugins>,
}

impl Rooms {
    pub async fn new(
        storage: Storage,
        signing_key: Arc<SigningKey>,
        server_name: OwnedServerName,
        live: Arc<Live>,
        push_rules: Arc<PushRules>,
        gateway: PushGateway,
        plugins: Arc<Plugins>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            heads: Default::default(),
            next_state_group: AtomicI64::new(storage.max_state_group().await? + 1),
            writer: EventWriter::spawn(storage.clone(), published(live, gateway, plugins.clone())),
            storage,
            signing_key,
            server_name,
            push_rules,
            plugins,
        })
    }

    fn lock_for(&self, room_id: &RoomId) -> Arc<Mutex<Option<RoomHead>>> {
        self.heads
            .lock()
            .entry(room_id.to_owned())
            .or_default()
            .clone()
    }

    async fn load_head(&self, room_id: &RoomId) -> Result<RoomHead, AppendError> {
        let room = self
            .storage
            .room(room_id.as_str())
            .await?
            .ok_or(AppendError::UnknownRoom)?;
        let (version, rules) =
            versions::supported(&room.room_version).ok_or(AppendError::UnknownRoom)?;
        let extremities = self.storage.forward_extremities(room_id.as_str()).await?;
        let (state, state_group, chain_length) = if extremities.len() > 1 {
            self.resolve_forks(room_id, &rules, &extremities).await?
        } else {
            let ids: Vec<String> = self
                .storage
                .current_state_ids(room_id.as_str())
                .await?
                .into_values()
                .collect();
            let state = self
                .storage
                .events(&ids)
                .await?
                .into_iter()
                .filter_map(|e| Some(((e.pdu.kind.to_string(), e.pdu.state_key.clone()?), e.pdu)))
                .collect();
            let state_group = extremities
                .first()
                .map(|e| e.state_group)
                .unwrap_or_default();
            let chain_length = self.storage.state_group_chain_length(state_group).await?;
            (state, state_group, chain_length)
        };
        Ok(RoomHead {
            room_id: room_id.to_owned(),
            version,
            rules,
            extremities: extremities.into_iter().map(|e| e.pdu).collect(),
            state,
            state_group,
            chain_length,
            poisoned: Arc::default(),
            recent_txns: VecDeque::new(),
        })
    }

    /// The room has forked (only federation makes forks): resolve the states
    /// at its forward extremities into one, stored as a snapshot state group
    /// and as the current state, so the next event extends the resolution.
    async fn resolve_forks(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        extremities: &[StoredEvent],
    ) -> Result<(HashMap<StateKey, Arc<Pdu>>, i64, i64), AppendError> {
        let mut states = Vec::with_capacity(extremities.len());
        for extremity in extremities {
            let state = self.storage.state_at_group(extremity.state_group).await?;
            let state: HashMap<StateKey, OwnedEventId> = state
                .iter()
                .filter_map(|(key, id)| {
                    Some((key.clone(), OwnedEventId::try_from(id.as_str()).ok()?))
                })
                .collect();
            states.push(state);
        }
        // The states' events and their whole auth chains.
        let mut events: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut wanted: Vec<String> = states
            .iter()
            .flat_map(|s| s.values().map(|id| id.to_string()))
            .collect();
        while !wanted.is_empty() {
            let found = self.storage.events(&wanted).await?;
            events.extend(
                found
                    .iter()
                    .map(|e| (e.pdu.event_id.clone(), e.pdu.clone())),
            );
            wanted = found
                .iter()
                .flat_map(|e| &e.pdu.auth_events)
                .filter(|id| !events.contains_key(*id))
                .map(|id| id.to_string())
                .collect();
            wanted.sort();
            wanted.dedup();
        }
        let resolved =
            resolution::resolve(rules, &states, &events).map_err(AppendError::Resolution)?;
        let state: HashMap<StateKey, Arc<Pdu>> = resolved
            .iter()
            .filter_map(|(key, id)| Some((key.clone(), events.get(id)?.clone())))
            .collect();
        let group = NewStateGroup {
            id: self.next_state_group.fetch_add(1, Ordering::Relaxed),
            prev_group: None,
            chain_length: 0,
            entries: state
                .iter()
                .map(|(key, pdu)| (key.clone(), pdu.event_id.to_string()))
                .collect(),
        };
        let current: Vec<Arc<Pdu>> = state.values().cloned().collect();
        self.storage
            .write_resolved_state(room_id.as_str(), &group, &current)
            .await?;
        Ok((state, group.id, 0))
    }

    /// Runs `f` with the room's head locked (loading it first if needed).
    /// Events appended inside `f` are committed together after it returns,
    /// and only then does this return.
    pub async fn with_room<T>(
        &self,
        room_id: &RoomId,
        f: impl AsyncFnOnce(&mut RoomAppender<'_>) -> Result<T, AppendError>,
    ) -> Result<T, AppendError> {
        let lock = self.lock_for(room_id);
        let mut guard = lock.lock().await;
        if guard
            .as_ref()
            .is_none_or(|head| head.poisoned.load(Ordering::Acquire))
        {
            *guard = Some(self.load_head(room_id).await?);
        }
        let head = guard.as_mut().expect("loaded above");
        let mut appender = RoomAppender::new(self, head, None);
        let outcome = f(&mut appender).await;
        // Whatever was appended is already the head's state: it is written
        // even if `f` failed later.
        appender.evaluate_push_rules().await;
        let pending = appender.submit();
        drop(guard);
        wait_durable(pending).await?;
        outcome
    }

    /// Creates a room: builds and authorizes its `m.room.create` event, then
    /// `f` appends the rest of its initial events. Nothing is written unless
    /// all of them are accepted. `room_id` is `None` for room versions whose
    /// room ID is derived from the create event (12); the ID is returned.
    pub async fn create<T>(
        &self,
        version: &str,
        room_id: Option<OwnedRoomId>,
        creator: &UserId,
        create: &EventDraft,
        is_public: bool,
        f: impl AsyncFnOnce(&mut RoomAppender<'_>) -> Result<T, AppendError>,
    ) -> Result<(OwnedRoomId, T), AppendError> {
        let (version_id, rules) = versions::supported(version).ok_or(AppendError::UnknownRoom)?;
        let create_pdu = Pdu::build(
            create,
            creator,
            Position {
                room_id: room_id.as_deref(),
                rules: &rules,
                prev_events: &[],
                auth_events: Vec::new(),
                depth: 1,
            },
            &self.signing_key,
        )?;
        check_state_independent_auth_rules(&rules.authorization, &create_pdu, |_| None::<&Pdu>)
            .map_err(AppendError::Forbidden)?;
        let room_id = create_pdu.room_id.clone();
        let record = RoomRecord {
            room_id: room_id.to_string(),
            room_version: version.to_owned(),
            creator: creator.to_string(),
            is_public,
        };

        let lock = self.lock_for(&room_id);
        let mut guard = lock.lock().await;
        let head = guard.insert(RoomHead {
            room_id: room_id.clone(),
            version: version_id,
            rules,
            extremities: Vec::new(),
            state: HashMap::new(),
            state_group: 0,
            chain_length: 0,
            poisoned: Arc::default(),
            recent_txns: VecDeque::new(),
        });
        let mut appender = RoomAppender::new(self, head, Some(record));
        appender.commit(create_pdu, None);
        let outcome = f(&mut appender).await;
        if outcome.is_err() {
            *guard = None;
            return outcome.map(|value| (room_id, value));
        }
        appender.evaluate_push_rules().await;
        let pending = appender.submit();
        drop(guard);
        wait_durable(pending).await?;
        outcome.map(|value| (room_id, value))
    }
}

/// What happens once events are committed: their position is published,
/// `/sync` requests following their rooms (and the targets of membership
/// changes) wake, notified users' pushers are fed, and plugins hear of the
/// events (`on_new_event`, in the background: the senders never wait).
fn published(live: Arc<Live>, gateway: PushGateway, plugins: Arc<Plugins>) -> writer::OnCommit {
    Box::new(move |writes, orderings| {
        let set = plugins.current();
        if set.wants_rule(RulesCallback::OnNewEvent) {
            let events: Vec<_> = writes
                .iter()
                .map(|write| crate::api::plugins::event(&write.pdu))
                .collect();
            tokio::spawn(async move {
                for event in &events {
                    set.on_new_event(event).await;
                }
            });
        }
        let mut keys = Vec::new();
        for write in writes {
            let pdu = &write.pdu;
            keys.push(WakeKey::Room(pdu.room_id.clone()));
            if pdu.kind == TimelineEventType::RoomMember
                && let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            {
                keys.push(WakeKey::User(target));
            }
            for action in &write.push_actions {
                gateway.enqueue(PushJob {
                    user_id: action.user_id.clone(),
                    pdu: pdu.clone(),
                    actions: action.actions.clone(),
                });
            }
        }
        keys.dedup();
        if let Some(last) = orderings.iter().max() {
            live.publish(Stream::Events, *last, &keys);
        }
    })
}

async fn wait_durable(pending: Vec<oneshot::Receiver<Result<i64, ()>>>) -> Result<(), AppendError> {
    for done in pending {
        done.await
            .map_err(|_| AppendError::WriteFailed)?
            .map_err(|()| AppendError::WriteFailed)?;
    }
    Ok(())
}

/// Appends events to a locked room head.
pub struct RoomAppender<'a> {
    rooms: &'a Rooms,
    pub head: &'a mut RoomHead,
    writes: Vec<EventWrite>,
    new_room: Option<RoomRecord>,
}

impl<'a> RoomAppender<'a> {
    fn new(rooms: &'a Rooms, head: &'a mut RoomHead, new_room: Option<RoomRecord>) -> Self {
        Self {
            rooms,
            head,
            writes: Vec::new(),
            new_room,
        }
    }

    /// Decides, with each local member's push rules, whom the appended
    /// events notify; stored with the events. A failure to read rules
    /// costs notifications, never the events.
    async fn evaluate_push_rules(&mut self) {
        for write in &mut self.writes {
            match crate::push::evaluate(
                &self.rooms.push_rules,
                self.head,
                &write.pdu,
                &self.rooms.server_name,
            )
            .await
            {
                Ok(actions) => write.push_actions = actions,
                Err(err) => tracing::warn!(error = %err, "push rules could not be evaluated"),
            }
        }
    }

    /// Hands the appended events to the writer.
    fn submit(self) -> Vec<oneshot::Receiver<Result<i64, ()>>> {
        let poisoned = self.head.poisoned.clone();
        self.writes
            .into_iter()
            .map(|write| {
                self.rooms
                    .writer
                    .submit(WriteJob::new(write, poisoned.clone()))
            })
            .collect()
    }

    /// The event an earlier request with this transaction ID produced, if
    /// it is still in flight or was just written.
    pub fn recent_txn(&self, txn: &TxnKey) -> Option<OwnedEventId> {
        self.head
            .recent_txns
            .iter()
            .find(|(key, _)| key == txn)
            .map(|(_, id)| id.clone())
    }

    /// Builds, signs and authorizes an event from `sender`, lets the
    /// third-party rules plugins decide on it, and makes it the room's
    /// newest event.
    pub async fn append(
        &mut self,
        sender: &UserId,
        draft: &EventDraft,
        txn: Option<TxnKey>,
    ) -> Result<Arc<Pdu>, AppendError> {
        let pdu = self.prepare(sender, draft)?;
        let pdu = self.allowed(sender, draft, pdu).await?;
        Ok(self.commit(pdu, txn))
    }

    /// Offers an event [`prepare`](Self::prepare)d from `draft` (on the
    /// room as it is now: nothing committed since) to `check_event_allowed`:
    /// a plugin may refuse it or replace its content, in which case the
    /// event is built, signed and authorized again with the new content.
    pub async fn allowed(
        &self,
        sender: &UserId,
        draft: &EventDraft,
        pdu: Pdu,
    ) -> Result<Pdu, AppendError> {
        let plugins = self.rooms.plugins.current();
        if !plugins.wants_rule(RulesCallback::CheckEventAllowed) {
            return Ok(pdu);
        }
        match plugins
            .check_event_allowed(&crate::api::plugins::event(&pdu))
            .await
        {
            EventAllowed::Allow(None) => Ok(pdu),
            EventAllowed::Allow(Some(content)) => {
                let content = serde_json::from_str(content.as_str())
                    .map_err(|e| PduError::Invalid(e.to_string()))?;
                let replaced = EventDraft {
                    content,
                    ..draft.clone()
                };
                self.prepare(sender, &replaced)
            }
            EventAllowed::Deny { errcode, message } => {
                Err(AppendError::Refused { errcode, message })
            }
        }
    }

    /// Builds, signs and authorizes an event placed after the room's newest
    /// events, without appending it (so it can be checked further, e.g. by
    /// spam-checking plugins, while the room stays locked).
    pub fn prepare(&self, sender: &UserId, draft: &EventDraft) -> Result<Pdu, AppendError> {
        let head = &*self.head;
        let rules = head.rules.clone();
        let content = serde_json::value::to_raw_value(&draft.content)
            .map_err(|e| PduError::Invalid(e.to_string()))?;
        let auth_types = auth_types_for_event(
            &draft.kind,
            sender,
            draft.state_key.as_deref(),
            &content,
            &rules.authorization,
        )
        .map_err(AppendError::Forbidden)?;
        let mut auth_events: Vec<&Pdu> = Vec::new();
        for (kind, state_key) in &auth_types {
            if let Some(pdu) = head.state.get(&(kind.to_string(), state_key.clone()))
                && !auth_events.iter().any(|e| e.event_id == pdu.event_id)
            {
                auth_events.push(pdu);
            }
        }
        let depth = head.extremities.iter().map(|e| e.depth).max().unwrap_or(0) + 1;
        let pdu = Pdu::build(
            draft,
            sender,
            Position {
                room_id: Some(&head.room_id),
                rules: &rules,
                prev_events: &head.extremities,
                auth_events: auth_events.clone(),
                depth,
            },
            &self.rooms.signing_key,
        )?;

        // Version 12 looks up the create event by the room ID, not in
        // `auth_events`.
        let create = head.state_event(&StateEventType::RoomCreate, "");
        check_state_independent_auth_rules(&rules.authorization, &pdu, |id| {
            auth_events
                .iter()
                .copied()
                .chain(create.map(|c| &**c))
                .find(|e| e.event_id == *id)
        })
        .map_err(AppendError::Forbidden)?;
        check_state_dependent_auth_rules(&rules.authorization, &pdu, |kind, state_key| {
            head.state
                .get(&(kind.to_string(), state_key.to_owned()))
                .map(|pdu| &**pdu)
        })
        .map_err(AppendError::Forbidden)?;

        Ok(pdu)
    }

    /// Makes a prepared event the room's newest event; it is written when
    /// the room is unlocked.
    pub fn commit(&mut self, pdu: Pdu, txn: Option<TxnKey>) -> Arc<Pdu> {
        let head = &mut *self.head;
        let pdu = Arc::new(pdu);
        let new_state_group = pdu.state_key.as_ref().map(|state_key| {
            let key = (pdu.kind.to_string(), state_key.clone());
            head.state.insert(key.clone(), pdu.clone());
            let id = self.rooms.next_state_group.fetch_add(1, Ordering::Relaxed);
            let group = if head.state_group == 0 || head.chain_length + 1 >= SNAPSHOT_INTERVAL {
                NewStateGroup {
                    id,
                    prev_group: None,
                    chain_length: 0,
                    entries: head
                        .state
                        .iter()
                        .map(|(key, pdu)| (key.clone(), pdu.event_id.to_string()))
                        .collect(),
                }
            } else {
                NewStateGroup {
                    id,
                    prev_group: Some(head.state_group),
                    chain_length: head.chain_length + 1,
                    entries: vec![(key, pdu.event_id.to_string())],
                }
            };
            head.state_group = group.id;
            head.chain_length = group.chain_length;
            group
        });
        let replaces_extremities = head
            .extremities
            .iter()
            .map(|e| e.event_id.to_string())
            .collect();
        head.extremities = vec![pdu.clone()];
        if let Some(txn) = &txn {
            if head.recent_txns.len() == RECENT_TXNS {
                head.recent_txns.pop_front();
            }
            head.recent_txns
                .push_back((txn.clone(), pdu.event_id.clone()));
        }
        self.writes.push(EventWrite {
            pdu: pdu.clone(),
            new_room: self.new_room.take(),
            state_group: head.state_group,
            new_state_group,
            replaces_extremities,
            txn,
            push_actions: Vec::new(),
        });
        pdu
    }
}
