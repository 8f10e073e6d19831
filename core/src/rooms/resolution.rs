//! State resolution (spec: room versions, "State resolution"): when a room's
//! graph has forked, the state at the join of the branches is decided by
//! ruma's implementation of the room version's algorithm.
//!
//! Events built here always extend the room's single newest event, so forks
//! arrive only with federation; the room's head resolves whenever it finds
//! more than one forward extremity.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::{RoomVersionRules, StateResolutionVersion},
    state_res::{self, StateMap, utils::event_id_set::EventIdSet},
};

use super::pdu::Pdu;
use crate::storage::rooms::StateKey;

/// Every event in the auth chain of `start` (not including `start` itself).
fn auth_chain(
    start: &[OwnedEventId],
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> HashSet<OwnedEventId> {
    let mut chain = HashSet::new();
    let mut todo: Vec<&OwnedEventId> = start
        .iter()
        .filter_map(|id| events.get(id))
        .flat_map(|e| &e.auth_events)
        .collect();
    while let Some(id) = todo.pop() {
        if chain.insert(id.clone())
            && let Some(event) = events.get(id)
        {
            todo.extend(&event.auth_events);
        }
    }
    chain
}

/// Resolves several states of one room into one. `events` must hold every
/// event of the states and of their auth chains.
pub fn resolve(
    rules: &RoomVersionRules,
    states: &[HashMap<StateKey, OwnedEventId>],
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> Result<HashMap<StateKey, OwnedEventId>, String> {
    let StateResolutionVersion::V2(v2_rules) = &rules.state_res else {
        return Err("room version 1's state resolution is not supported".to_owned());
    };
    let maps: Vec<StateMap<OwnedEventId>> = states
        .iter()
        .map(|state| {
            state
                .iter()
                .map(|((kind, key), id)| {
                    (
                        (StateEventType::from(kind.as_str()), key.clone()),
                        id.clone(),
                    )
                })
                .collect()
        })
        .collect();
    let auth_chains: Vec<EventIdSet<OwnedEventId>> = states
        .iter()
        .map(|state| {
            let ids: Vec<OwnedEventId> = state.values().cloned().collect();
            auth_chain(&ids, events).into_iter().collect()
        })
        .collect();
    let fetch = |id: &EventId| events.get(id).map(|e| &**e);
    // Room version 12: the events that are both descendants and ancestors
    // (through auth events) of conflicted events.
    let conflicted_subgraph = |conflicted: &StateMap<Vec<OwnedEventId>>| {
        let conflicted: HashSet<&OwnedEventId> = conflicted.values().flatten().collect();
        let seeds: Vec<OwnedEventId> = conflicted.iter().map(|id| (*id).clone()).collect();
        let candidates = auth_chain(&seeds, events);
        let subgraph = candidates
            .into_iter()
            .chain(seeds.iter().cloned())
            .filter(|id| {
                conflicted.contains(id)
                    || auth_chain(std::slice::from_ref(id), events)
                        .iter()
                        .any(|ancestor| conflicted.contains(ancestor))
            })
            .collect();
        Some(subgraph)
    };
    let resolved = state_res::resolve(
        &rules.authorization,
        v2_rules,
        &maps,
        auth_chains,
        fetch,
        conflicted_subgraph,
    )
    .map_err(|e| e.to_string())?;
    Ok(resolved
        .into_iter()
        .map(|((kind, key), id)| ((kind.to_string(), key), id))
        .collect())
}

#[cfg(test)]
mod tests {
    use ruma::{RoomId, UserId, events::TimelineEventType};
    use serde_json::json;

    use super::*;
    use crate::{
        federation::signing_key::SigningKey,
        rooms::{
            pdu::{EventDraft, Position},
            versions,
        },
    };

    /// Builds a room graph by hand: events with explicit parents and the
    /// state each sees, as a federating server would receive them.
    struct Graph {
        rules: RoomVersionRules,
        key: SigningKey,
        room: ruma::OwnedRoomId,
        events: HashMap<OwnedEventId, Arc<Pdu>>,
    }

    impl Graph {
        fn new(version: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("myelin-resolution-{}", rand::random::<u64>()));
            let key = SigningKey::load_or_generate(&dir.join("key")).unwrap();
            Self {
                rules: versions::supported(version).unwrap().1,
                key,
                room: RoomId::parse("!fork:example.org").unwrap(),
                events: HashMap::new(),
            }
        }

        /// An event after `prev`, authorized by the state `state`.
        fn add(
            &mut self,
            sender: &str,
            draft: EventDraft,
            prev: &[&Arc<Pdu>],
            state: &HashMap<StateKey, OwnedEventId>,
        ) -> Arc<Pdu> {
            let sender = UserId::parse(sender).unwrap();
            let content = serde_json::value::to_raw_value(&draft.content).unwrap();
            let auth_types = state_res::auth_types_for_event(
                &draft.kind,
                &sender,
                draft.state_key.as_deref(),
                &content,
                &self.rules.authorization,
            )
            .unwrap();
            let auth: Vec<&Pdu> = auth_types
                .iter()
                .filter_map(|(kind, key)| state.get(&(kind.to_string(), key.clone())))
                .filter_map(|id| self.events.get(id).map(|e| &**e))
                .collect();
            let prev: Vec<Arc<Pdu>> = prev.iter().map(|p| (*p).clone()).collect();
            let depth = prev.iter().map(|p| p.depth).max().unwrap_or(0) + 1;
            // Version 12 derives the room ID from the create event.
            let derived = draft.kind == TimelineEventType::RoomCreate
                && self.rules.authorization.room_create_event_id_as_room_id;
            let pdu = Arc::new(
                Pdu::build(
                    &draft,
                    &sender,
                    Position {
                        room_id: (!derived).then_some(&*self.room),
                        rules: &self.rules,
                        prev_events: &prev,
                        auth_events: auth,
                        depth,
                    },
                    &self.key,
                )
                .unwrap(),
            );
            self.room = pdu.room_id.clone();
            self.events.insert(pdu.event_id.clone(), pdu.clone());
            pdu
        }
    }

    fn with(state: &HashMap<StateKey, OwnedEventId>, pdu: &Pdu) -> HashMap<StateKey, OwnedEventId> {
        let mut state = state.clone();
        state.insert(
            (pdu.kind.to_string(), pdu.state_key.clone().unwrap()),
            pdu.event_id.clone(),
        );
        state
    }

    /// Alice (100) bans Bob on one branch while Bob (50) changes the topic
    /// on another: resolution applies the ban first (power events are
    /// ordered before others) and Bob's topic, no longer authorized, loses.
    #[test]
    fn a_ban_on_one_branch_beats_the_banned_users_change_on_another() {
        for version in ["10", "11", "12"] {
            let mut g = Graph::new(version);
            let alice = "@alice:example.org";
            let bob = "@bob:example.org";
            let empty = HashMap::new();
            let create = g.add(
                alice,
                EventDraft::state(
                    "m.room.create",
                    "",
                    json!({ "room_version": version, "creator": alice }),
                ),
                &[],
                &empty,
            );
            let s = with(&empty, &create);
            let join_a = g.add(
                alice,
                EventDraft::state("m.room.member", alice, json!({ "membership": "join" })),
                &[&create],
                &s,
            );
            let s = with(&s, &join_a);
            let users = if version == "12" {
                json!({ bob: 50 })
            } else {
                json!({ alice: 100, bob: 50 })
            };
            let pl = g.add(
                alice,
                EventDraft::state(
                    "m.room.power_levels",
                    "",
                    json!({ "users": users, "state_default": 50, "ban": 50 }),
                ),
                &[&join_a],
                &s,
            );
            let s = with(&s, &pl);
            let rules = g.add(
                alice,
                EventDraft::state("m.room.join_rules", "", json!({ "join_rule": "public" })),
                &[&pl],
                &s,
            );
            let s = with(&s, &rules);
            let join_b = g.add(
                bob,
                EventDraft::state("m.room.member", bob, json!({ "membership": "join" })),
                &[&rules],
                &s,
            );
            let base = with(&s, &join_b);

            let ban = g.add(
                alice,
                EventDraft::state("m.room.member", bob, json!({ "membership": "ban" })),
                &[&join_b],
                &base,
            );
            let branch_a = with(&base, &ban);
            let topic = g.add(
                bob,
                EventDraft::state("m.room.topic", "", json!({ "topic": "bob was here" })),
                &[&join_b],
                &base,
            );
            let branch_b = with(&base, &topic);

            let resolved = resolve(&g.rules, &[branch_a, branch_b], &g.events).unwrap();
            let member_key = ("m.room.member".to_owned(), bob.to_owned());
            assert_eq!(
                resolved.get(&member_key),
                Some(&ban.event_id),
                "v{version}: the ban stands"
            );
            assert!(
                !resolved.contains_key(&("m.room.topic".to_owned(), String::new())),
                "v{version}: the banned user's topic is dropped"
            );
        }
    }

    /// Unconflicted state passes through untouched.
    #[test]
    fn identical_states_resolve_to_themselves() {
        let mut g = Graph::new("10");
        let alice = "@alice:example.org";
        let create = g.add(
            alice,
            EventDraft::state(
                "m.room.create",
                "",
                json!({ "room_version": "10", "creator": alice }),
            ),
            &[],
            &HashMap::new(),
        );
        let state = with(&HashMap::new(), &create);
        assert_eq!(
            resolve(&g.rules, &[state.clone(), state.clone()], &g.events).unwrap(),
            state
        );
    }
}
