//! Push notifications (spec: "Push Notifications"): each user's push rules,
//! their evaluation on every new event (the source of unread counts and
//! highlights), and the [`gateway`] sender that posts to push gateways.

pub mod gateway;

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use ruma::{
    Int, OwnedUserId, ServerName, UInt, UserId,
    events::{AnySyncTimelineEvent, TimelineEventType},
    power_levels::NotificationPowerLevels,
    push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    room_version_rules::RoomPowerLevelsRules,
    serde::Raw,
};

use crate::{
    rooms::{RoomHead, pdu::Pdu, power::PowerLevels},
    storage::{Storage, push::PushActionRow},
};

/// The account-data type push rules are stored and synced under.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

/// Every local user's push rules, cached in memory after the first read.
pub struct PushRules {
    storage: Storage,
    cache: Mutex<HashMap<OwnedUserId, Arc<Ruleset>>>,
    /// Serializes read-modify-write updates of a ruleset.
    updating: tokio::sync::Mutex<()>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoredRules {
    global: Ruleset,
}

impl PushRules {
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            cache: Mutex::default(),
            updating: tokio::sync::Mutex::const_new(()),
        }
    }

    /// The user's rules: what they set, on top of the current server defaults.
    pub async fn get(&self, user: &UserId) -> sqlx::Result<Arc<Ruleset>> {
        if let Some(rules) = self.cache.lock().get(user) {
            return Ok(rules.clone());
        }
        let stored = self
            .storage
            .account_data(user.as_str(), "", PUSH_RULES_TYPE)
            .await?;
        let mut rules = stored
            .and_then(|json| serde_json::from_str::<StoredRules>(&json).ok())
            .map(|stored| stored.global)
            .unwrap_or_default();
        rules.update_with_server_default(Ruleset::server_default(user));
        let rules = Arc::new(rules);
        self.cache.lock().insert(user.to_owned(), rules.clone());
        Ok(rules)
    }

    /// Changes the user's rules with `change`; stores them only if it
    /// succeeds. Returns the account-data position of the write.
    pub async fn update<E>(
        &self,
        user: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<(), E>,
    ) -> sqlx::Result<Result<i64, E>> {
        let _serial = self.updating.lock().await;
        let mut rules = (*self.get(user).await?).clone();
        if let Err(err) = change(&mut rules) {
            return Ok(Err(err));
        }
        let json = serde_json::to_string(&StoredRules {
            global: rules.clone(),
        })
        .expect("rulesets serialize");
        let position = self
            .storage
            .set_account_data(user.as_str(), "", PUSH_RULES_TYPE, &json)
            .await?;
        self.cache.lock().insert(user.to_owned(), Arc::new(rules));
        Ok(Ok(position))
    }

    /// The rules as `m.push_rules` account data content.
    pub async fn as_account_data(&self, user: &UserId) -> sqlx::Result<serde_json::Value> {
        let rules = self.get(user).await?;
        Ok(serde_json::json!({ "global": &*rules }))
    }
}

/// Relations followed to find an event's thread (the spec's advice).
const THREAD_HOPS: usize = 3;

/// The thread an event belongs to for unread counts: its thread root, or
/// `main`. Besides an `m.thread` relation, an event is in a thread when an
/// event it relates to otherwise (an edit, a reaction) is, within
/// [`THREAD_HOPS`] relations (spec: "Threaded read receipts").
async fn thread_of(storage: &Storage, pdu: &Pdu) -> sqlx::Result<String> {
    let mut content = pdu.content_value();
    for _ in 0..THREAD_HOPS {
        let relation = &content["m.relates_to"];
        let (Some(rel_type), Some(parent)) =
            (relation["rel_type"].as_str(), relation["event_id"].as_str())
        else {
            break;
        };
        if rel_type == "m.thread" {
            return Ok(parent.to_owned());
        }
        match storage.event(parent).await? {
            Some(parent) => content = parent.pdu.content_value(),
            None => break,
        }
    }
    Ok("main".to_owned())
}

/// Evaluates the push rules of every local user the event concerns (joined
/// members other than the sender, and a local invitee) against the room as
/// it is after the event.
pub async fn evaluate(
    rules: &PushRules,
    head: &RoomHead,
    pdu: &Pdu,
    server_name: &ServerName,
) -> sqlx::Result<Vec<PushActionRow>> {
    let mut joined: Vec<(&str, &Arc<Pdu>)> = head
        .state
        .iter()
        .filter(|((kind, _), member)| {
            kind == "m.room.member" && member.content_str("membership").as_deref() == Some("join")
        })
        .map(|((_, user), member)| (user.as_str(), member))
        .collect();
    let member_count = UInt::try_from(joined.len() as u64).unwrap_or_default();
    let invitee = (pdu.kind == TimelineEventType::RoomMember
        && pdu.content_str("membership").as_deref() == Some("invite"))
    .then_some(pdu.state_key.as_deref())
    .flatten();
    if let Some(invitee) = invitee
        && let Some(member) = head
            .state
            .get(&("m.room.member".to_owned(), invitee.to_owned()))
    {
        joined.push((invitee, member));
    }

    let power = PowerLevels::of(head);
    let sender_level =
        Int::try_from(power.user(&pdu.sender).min(i64::from(Int::MAX))).unwrap_or(Int::MAX);
    let mut notifications = NotificationPowerLevels::new();
    notifications.room = Int::try_from(power.notifications_room()).unwrap_or(notifications.room);
    let power_ctx = PushConditionPowerLevelsCtx::new(
        [(pdu.sender.clone(), sender_level)].into(),
        Int::from(0u8),
        notifications,
        RoomPowerLevelsRules::new(&head.rules.authorization, []),
    );
    let event: Raw<AnySyncTimelineEvent> = Raw::from_json(
        serde_json::value::RawValue::from_string(pdu.json.clone()).expect("PDUs are JSON"),
    );
    let thread_id = thread_of(&rules.storage, pdu).await?;

    let mut out = Vec::new();
    for (user_id, member) in joined {
        let Ok(user) = UserId::parse(user_id) else {
            continue;
        };
        if user == pdu.sender || user.server_name() != server_name {
            continue;
        }
        let ruleset = rules.get(&user).await?;
        let display_name = member
            .content_str("displayname")
            .unwrap_or_else(|| user.localpart().to_owned());
        let context = PushConditionRoomCtx::new(
            head.room_id.clone(),
            member_count,
            user.clone(),
            display_name,
        )
        .with_power_levels(power_ctx.clone());
        let actions = ruleset.get_actions(&event, &context).await;
        let notify = actions.iter().any(|a| matches!(a, Action::Notify));
        if !notify {
            continue;
        }
        let highlight = actions.iter().any(Action::is_highlight);
        out.push(PushActionRow {
            user_id: user.to_string(),
            thread_id: thread_id.clone(),
            notify,
            highlight,
            actions: serde_json::to_string(actions).expect("actions serialize"),
        });
    }
    Ok(out)
}
