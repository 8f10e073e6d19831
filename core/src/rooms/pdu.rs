//! Persistent data units: building, hashing, signing and reading the signed
//! events every room is made of (spec: server-server API, "PDUs"; room
//! versions, "event format").

use std::sync::Arc;

use rand::{Rng, distributions::Alphanumeric};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    canonical_json::{RedactedBecause, redact},
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
    serde::Raw,
    signatures::{JsonError, hash_and_sign_event, reference_hash},
};
use serde_json::{Value, value::RawValue};

use crate::federation::signing_key::SigningKey;

/// The largest PDU the spec allows, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

/// An accepted event, parsed once from its stored JSON.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    /// False for a version 12 create event, whose PDU has no `room_id`: its
    /// room ID is derived from its event ID.
    pub has_room_id_field: bool,
    pub sender: OwnedUserId,
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Box<RawValue>,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub depth: u64,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    /// The signed PDU as stored, in canonical JSON.
    pub json: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("event is over {MAX_PDU_BYTES} bytes")]
    TooLarge,
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl From<JsonError> for PduError {
    fn from(err: JsonError) -> Self {
        match err {
            JsonError::PduTooLarge => Self::TooLarge,
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// What a local user asks for; the rest of the PDU is filled in from the room.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Value,
    pub redacts: Option<OwnedEventId>,
}

impl EventDraft {
    pub fn state(
        kind: impl Into<TimelineEventType>,
        state_key: impl Into<String>,
        content: Value,
    ) -> Self {
        Self {
            kind: kind.into(),
            state_key: Some(state_key.into()),
            content,
            redacts: None,
        }
    }

    pub fn message(kind: impl Into<TimelineEventType>, content: Value) -> Self {
        Self {
            kind: kind.into(),
            state_key: None,
            content,
            redacts: None,
        }
    }
}

/// Where a new event goes in its room's graph.
pub struct Position<'a> {
    /// `None` only for the `m.room.create` event of a room version whose
    /// room ID is derived from that event (version 12).
    pub room_id: Option<&'a RoomId>,
    pub rules: &'a RoomVersionRules,
    pub prev_events: &'a [Arc<Pdu>],
    pub auth_events: Vec<&'a Pdu>,
    pub depth: u64,
}

impl Pdu {
    /// Builds, hashes and signs a new event; the event ID follows the room
    /// version's format.
    pub fn build(
        draft: &EventDraft,
        sender: &UserId,
        position: Position<'_>,
        key: &SigningKey,
    ) -> Result<Self, PduError> {
        let rules = position.rules;
        let mut object = CanonicalJsonObject::new();
        let insert = |object: &mut CanonicalJsonObject, key: &str, value: Value| {
            let value = CanonicalJsonValue::try_from(value)
                .map_err(|e| PduError::Invalid(format!("{key}: {e}")))?;
            object.insert(key.to_owned(), value);
            Ok::<_, PduError>(())
        };
        if let Some(room_id) = position.room_id {
            insert(&mut object, "room_id", room_id.as_str().into())?;
        }
        insert(&mut object, "sender", sender.as_str().into())?;
        insert(&mut object, "type", draft.kind.to_string().into())?;
        if let Some(state_key) = &draft.state_key {
            insert(&mut object, "state_key", state_key.as_str().into())?;
        }
        insert(&mut object, "content", draft.content.clone())?;
        if let Some(redacts) = &draft.redacts {
            insert(&mut object, "redacts", redacts.as_str().into())?;
        }
        insert(
            &mut object,
            "origin_server_ts",
            u64::from(MilliSecondsSinceUnixEpoch::now().get()).into(),
        )?;
        insert(&mut object, "depth", position.depth.into())?;
        let references = |events: &mut dyn Iterator<Item = &Pdu>| -> Result<Value, PduError> {
            events
                .map(|pdu| pdu.reference(rules))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        };
        let prev = references(&mut position.prev_events.iter().map(|p| &**p))?;
        insert(&mut object, "prev_events", prev)?;
        let auth = references(&mut position.auth_events.into_iter())?;
        insert(&mut object, "auth_events", auth)?;
        let server = sender.server_name().as_str();
        if rules.event_id_format == EventIdFormatVersion::V1 {
            insert(&mut object, "origin", server.into())?;
            let random: String = rand::thread_rng()
                .sample_iter(&Alphanumeric)
                .take(18)
                .map(char::from)
                .collect();
            insert(
                &mut object,
                "event_id",
                format!("${random}:{server}").into(),
            )?;
        }

        hash_and_sign_event(server, key, &mut object, &rules.redaction)?;
        let json = serde_json::to_string(&object).map_err(|e| PduError::Invalid(e.to_string()))?;
        if json.len() > MAX_PDU_BYTES {
            return Err(PduError::TooLarge);
        }
        let event_id = match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => id.clone(),
            _ => format!("${}", reference_hash(&object, rules)?),
        };
        let event_id = EventId::parse(&event_id).map_err(|e| PduError::Invalid(e.to_string()))?;
        Self::from_object(event_id, object, json)
    }

    /// Parses a stored PDU.
    pub fn from_stored(event_id: &str, json: String) -> Result<Self, PduError> {
        let object: CanonicalJsonObject =
            serde_json::from_str(&json).map_err(|e| PduError::Invalid(e.to_string()))?;
        let event_id = EventId::parse(event_id).map_err(|e| PduError::Invalid(e.to_string()))?;
        Self::from_object(event_id, object, json)
    }

    fn from_object(
        event_id: OwnedEventId,
        object: CanonicalJsonObject,
        json: String,
    ) -> Result<Self, PduError> {
        let field = |name: &str| {
            object
                .get(name)
                .ok_or_else(|| PduError::Invalid(format!("missing field `{name}`")))
        };
        let string = |name: &str| match field(name)? {
            CanonicalJsonValue::String(s) => Ok(s.as_str()),
            _ => Err(PduError::Invalid(format!("`{name}` is not a string"))),
        };
        let invalid = |e: ruma::IdParseError| PduError::Invalid(e.to_string());
        let event_ids = |name: &str| -> Result<Vec<OwnedEventId>, PduError> {
            let CanonicalJsonValue::Array(items) = field(name)? else {
                return Err(PduError::Invalid(format!("`{name}` is not an array")));
            };
            items
                .iter()
                .map(|item| match item {
                    CanonicalJsonValue::String(id) => EventId::parse(id).map_err(invalid),
                    // Room versions 1 and 2 reference events as `[id, hashes]`.
                    CanonicalJsonValue::Array(pair) => match pair.first() {
                        Some(CanonicalJsonValue::String(id)) => EventId::parse(id).map_err(invalid),
                        _ => Err(PduError::Invalid(format!("bad reference in `{name}`"))),
                    },
                    _ => Err(PduError::Invalid(format!("bad reference in `{name}`"))),
                })
                .collect()
        };
        let content = serde_json::value::to_raw_value(field("content")?)
            .map_err(|e| PduError::Invalid(e.to_string()))?;
        let redacts = match object.get("redacts") {
            Some(CanonicalJsonValue::String(id)) => Some(EventId::parse(id).map_err(invalid)?),
            _ => match field("content")? {
                // Room version 11 moved `redacts` into the content.
                CanonicalJsonValue::Object(content) => match content.get("redacts") {
                    Some(CanonicalJsonValue::String(id)) => EventId::parse(id).ok(),
                    _ => None,
                },
                _ => None,
            },
        };
        let integer = |name: &str| match field(name)? {
            CanonicalJsonValue::Integer(i) => Ok(u64::try_from(i64::from(*i)).unwrap_or_default()),
            _ => Err(PduError::Invalid(format!("`{name}` is not an integer"))),
        };
        Ok(Self {
            has_room_id_field: object.contains_key("room_id"),
            room_id: match object.get("room_id") {
                Some(_) => RoomId::parse(string("room_id")?).map_err(invalid)?,
                // Version 12: the create event's ID, with `!` for `$`, is the room ID.
                None => RoomId::parse(event_id.as_str().replacen('$', "!", 1)).map_err(invalid)?,
            },
            sender: UserId::parse(string("sender")?).map_err(invalid)?,
            kind: string("type")?.into(),
            state_key: match object.get("state_key") {
                Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
                _ => None,
            },
            content,
            origin_server_ts: MilliSecondsSinceUnixEpoch(ruma::UInt::new_saturating(integer(
                "origin_server_ts",
            )?)),
            depth: integer("depth")?,
            prev_events: event_ids("prev_events")?,
            auth_events: event_ids("auth_events")?,
            redacts,
            event_id,
            json,
        })
    }

    pub fn object(&self) -> CanonicalJsonObject {
        serde_json::from_str(&self.json).expect("stored PDUs are canonical JSON objects")
    }

    /// How other events point at this one: its ID, or `[id, hashes]` in
    /// room versions 1 and 2.
    fn reference(&self, rules: &RoomVersionRules) -> Result<Value, PduError> {
        Ok(match rules.events_reference_format {
            EventsReferenceFormatVersion::V1 => {
                let hash = reference_hash(&self.object(), rules)?;
                serde_json::json!([self.event_id, { "sha256": hash }])
            }
            _ => Value::String(self.event_id.to_string()),
        })
    }

    pub fn content_value(&self) -> Value {
        serde_json::from_str(self.content.get()).unwrap_or(Value::Null)
    }

    /// A string field of the content, e.g. `membership` or `name`.
    pub fn content_str(&self, field: &str) -> Option<String> {
        self.content_value()
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// The event as clients see it (the spec's `ClientEvent`), redacted with
    /// the room version's algorithm if `redacted_because` is given.
    pub fn to_client(&self, rules: &RoomVersionRules, redacted_because: Option<&Pdu>) -> Value {
        let mut object = self.object();
        if let Some(redaction) = redacted_because {
            let because = RedactedBecause::from_json(redaction.client_object());
            if let Ok(redacted) = redact(object.clone(), &rules.redaction, Some(because)) {
                object = redacted;
            }
        }
        client_format(&self.event_id, object)
    }

    fn client_object(&self) -> CanonicalJsonObject {
        match client_format(&self.event_id, self.object()) {
            Value::Object(map) => map
                .into_iter()
                .filter_map(|(k, v)| Some((k, CanonicalJsonValue::try_from(v).ok()?)))
                .collect(),
            _ => CanonicalJsonObject::new(),
        }
    }

    /// As [`Pdu::to_client`], wrapped for ruma's response types.
    pub fn to_raw<T>(&self, rules: &RoomVersionRules, redacted_because: Option<&Pdu>) -> Raw<T> {
        let value = self.to_client(rules, redacted_because);
        Raw::from_json(serde_json::value::to_raw_value(&value).expect("JSON values serialize"))
    }
}

/// Keeps the fields of the client event format, adding `event_id`.
fn client_format(event_id: &EventId, object: CanonicalJsonObject) -> Value {
    let mut out = serde_json::Map::new();
    for (key, value) in object {
        if matches!(
            key.as_str(),
            "content"
                | "origin_server_ts"
                | "room_id"
                | "sender"
                | "state_key"
                | "type"
                | "unsigned"
                | "redacts"
        ) {
            out.insert(key, value.into());
        }
    }
    out.insert("event_id".into(), event_id.as_str().into());
    Value::Object(out)
}

/// Lets ruma's state-res crate run the authorization rules on our events.
impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.has_room_id_field.then_some(&*self.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        false
    }
}
