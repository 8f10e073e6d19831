//! Reading `m.room.power_levels` for the checks the client API makes before
//! an event reaches the authorization rules (spec: "m.room.power_levels").

use ruma::UserId;
use serde_json::Value;

use super::{RoomHead, pdu::Pdu};

/// A room's power levels with the spec's defaults filled in.
pub struct PowerLevels {
    content: Value,
    /// Without a power-levels event the creator has 100 and state needs 0.
    exists: bool,
    creators: Vec<String>,
    /// Room version 12: creators outrank everyone, whatever `users` says.
    creators_privileged: bool,
}

impl PowerLevels {
    pub fn of(head: &RoomHead) -> Self {
        let pl = head.state_event(&"m.room.power_levels".into(), "");
        let creators = head
            .state_event(&"m.room.create".into(), "")
            .map(|create| creators_of(create))
            .unwrap_or_default();
        Self {
            content: pl.map(|p| p.content_value()).unwrap_or(Value::Null),
            exists: pl.is_some(),
            creators,
            creators_privileged: head.rules.authorization.explicitly_privilege_room_creators,
        }
    }

    fn level(&self, field: &str, default: i64) -> i64 {
        self.content.get(field).and_then(as_int).unwrap_or(default)
    }

    pub fn user(&self, user: &UserId) -> i64 {
        let is_creator = self.creators.iter().any(|c| c == user.as_str());
        if self.creators_privileged && is_creator {
            return i64::MAX;
        }
        if !self.exists {
            return if is_creator { 100 } else { 0 };
        }
        self.content
            .get("users")
            .and_then(|users| users.get(user.as_str()))
            .and_then(as_int)
            .unwrap_or_else(|| self.level("users_default", 0))
    }

    /// The level needed to notify the whole room with `@room`.
    pub fn notifications_room(&self) -> i64 {
        self.content
            .get("notifications")
            .and_then(|n| n.get("room"))
            .and_then(as_int)
            .unwrap_or(50)
    }

    pub fn redact(&self) -> i64 {
        self.level("redact", 50)
    }

    /// The level needed to send an event of `kind`.
    pub fn for_event(&self, kind: &str, is_state: bool) -> i64 {
        if let Some(level) = self
            .content
            .get("events")
            .and_then(|e| e.get(kind))
            .and_then(as_int)
        {
            return level;
        }
        if is_state {
            self.level("state_default", if self.exists { 50 } else { 0 })
        } else {
            self.level("events_default", 0)
        }
    }
}

/// Integers, or (before room version 10) strings holding integers.
fn as_int(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// The creators of a room: `creator` in the content before room version
/// 11, the sender since, plus `additional_creators` from version 12.
pub fn creators_of(create: &Pdu) -> Vec<String> {
    let content = create.content_value();
    let mut creators = vec![
        content
            .get("creator")
            .and_then(Value::as_str)
            .map_or_else(|| create.sender.to_string(), str::to_owned),
    ];
    if let Some(additional) = content.get("additional_creators").and_then(Value::as_array) {
        creators.extend(
            additional
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned),
        );
    }
    creators
}

/// Room versions 10 and later require power levels to be integers; a
/// string there is a malformed request, not an authorization failure.
pub fn check_integer_levels(content: &Value) -> Result<(), String> {
    let bad = |path: String| Err(format!("power level `{path}` must be an integer"));
    let Some(object) = content.as_object() else {
        return Err("power levels must be an object".to_owned());
    };
    for (key, value) in object {
        match key.as_str() {
            "users" | "events" | "notifications" => {
                for (inner, level) in value.as_object().into_iter().flatten() {
                    if !level.is_i64() {
                        return bad(format!("{key}.{inner}"));
                    }
                }
            }
            "ban" | "invite" | "kick" | "redact" | "state_default" | "events_default"
            | "users_default"
                if !value.is_i64() =>
            {
                return bad(key.clone());
            }
            _ => {}
        }
    }
    Ok(())
}
