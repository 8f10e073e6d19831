//! Creating a room (spec: "Creation"): the events `POST /createRoom` sends,
//! in the spec's order.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, ServerName};
use serde_json::{Map, Value, json};

use super::{
    AppendError, Rooms,
    membership::{is_direct, member_content, with_fields},
    pdu::EventDraft,
    power::check_integer_levels,
    versions,
};
use crate::storage::Storage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// Everything a new room is made from.
#[derive(Debug, Clone)]
pub struct RoomSpec {
    pub version: String,
    pub creator: OwnedUserId,
    pub preset: Preset,
    pub is_public: bool,
    pub creation_content: Map<String, Value>,
    pub power_level_override: Option<Map<String, Value>>,
    pub canonical_alias: Option<String>,
    /// `(type, state_key, content)`, sent after the preset's events.
    pub initial_state: Vec<(String, String, Value)>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    BadJson(String),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// A fresh room ID on this server (room versions 1 to 11).
fn new_room_id(server: &ServerName) -> OwnedRoomId {
    use rand::{Rng, distributions::Alphanumeric};
    let local: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(18)
        .map(char::from)
        .collect();
    RoomId::parse(format!("!{local}:{server}")).expect("generated room IDs are valid")
}

/// Synapse's defaults. Where creators have unbounded power (version 12)
/// they must not appear in `users`.
fn default_power_levels(spec: &RoomSpec, creators_privileged: bool) -> Map<String, Value> {
    let mut users = Map::new();
    if !creators_privileged {
        users.insert(spec.creator.to_string(), 100.into());
    }
    if spec.preset == Preset::TrustedPrivateChat && !creators_privileged {
        for invitee in &spec.invite {
            users.insert(invitee.to_string(), 100.into());
        }
    }
    match json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if spec.preset == Preset::PublicChat { 0 } else { 50 },
        "historical": 100,
        "notifications": { "room": 50 },
    }) {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// Builds and appends the room's initial events; nothing is stored unless
/// every one is accepted.
pub async fn create_room(
    rooms: &Rooms,
    storage: &Storage,
    server: &ServerName,
    spec: RoomSpec,
) -> Result<OwnedRoomId, CreateError> {
    let (_, rules) = versions::supported(&spec.version)
        .ok_or_else(|| CreateError::BadJson("unsupported room version".to_owned()))?;
    let creator = &spec.creator;
    let creators_privileged = rules.authorization.explicitly_privilege_room_creators;

    let mut create_content = spec.creation_content.clone();
    create_content.insert("room_version".into(), spec.version.clone().into());
    if !rules.authorization.use_room_create_sender {
        create_content.insert("creator".into(), creator.as_str().into());
    }
    if creators_privileged && spec.preset == Preset::TrustedPrivateChat && !spec.invite.is_empty() {
        // Version 12: trusted invitees are creators rather than users at 100.
        let mut additional: Vec<Value> = create_content
            .get("additional_creators")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        additional.extend(spec.invite.iter().map(|u| Value::from(u.as_str())));
        create_content.insert("additional_creators".into(), additional.into());
    }

    let mut power_levels = default_power_levels(&spec, creators_privileged);
    if let Some(overrides) = &spec.power_level_override {
        power_levels.extend(overrides.clone());
    }
    let power_levels = Value::Object(power_levels);
    if rules.authorization.integer_power_levels {
        check_integer_levels(&power_levels).map_err(CreateError::BadJson)?;
    }

    let create = EventDraft::state("m.room.create", "", Value::Object(create_content));
    let mut drafts = vec![
        EventDraft::state(
            "m.room.member",
            creator.as_str(),
            member_content(storage, creator, "join", None).await?,
        ),
        EventDraft::state("m.room.power_levels", "", power_levels),
    ];
    if let Some(alias) = &spec.canonical_alias {
        drafts.push(EventDraft::state(
            "m.room.canonical_alias",
            "",
            json!({ "alias": alias }),
        ));
    }
    let join_rule = if spec.preset == Preset::PublicChat {
        "public"
    } else {
        "invite"
    };
    drafts.push(EventDraft::state(
        "m.room.join_rules",
        "",
        json!({ "join_rule": join_rule }),
    ));
    drafts.push(EventDraft::state(
        "m.room.history_visibility",
        "",
        json!({ "history_visibility": "shared" }),
    ));
    if spec.preset != Preset::PublicChat {
        drafts.push(EventDraft::state(
            "m.room.guest_access",
            "",
            json!({ "guest_access": "can_join" }),
        ));
    }
    for (kind, state_key, content) in &spec.initial_state {
        drafts.push(EventDraft::state(
            kind.as_str(),
            state_key.as_str(),
            content.clone(),
        ));
    }
    if let Some(name) = &spec.name {
        drafts.push(EventDraft::state(
            "m.room.name",
            "",
            json!({ "name": name }),
        ));
    }
    if let Some(topic) = &spec.topic {
        drafts.push(EventDraft::state(
            "m.room.topic",
            "",
            json!({ "topic": topic }),
        ));
    }
    for invitee in &spec.invite {
        let mut content = member_content(storage, invitee, "invite", None).await?;
        if spec.is_direct {
            content = with_fields(content, is_direct());
        }
        drafts.push(EventDraft::state(
            "m.room.member",
            invitee.as_str(),
            content,
        ));
    }

    // Version 12 derives the room ID from the create event.
    let room_id =
        (!rules.authorization.room_create_event_id_as_room_id).then(|| new_room_id(server));
    let (room_id, ()) = rooms
        .create(
            &spec.version,
            room_id,
            creator,
            &create,
            spec.is_public,
            async |room| {
                for draft in &drafts {
                    room.append(creator, draft, None).await?;
                }
                Ok(())
            },
        )
        .await?;
    Ok(room_id)
}
