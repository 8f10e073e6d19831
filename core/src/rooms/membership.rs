//! Membership events (spec: "Room membership"): the content a local user's
//! `m.room.member` event carries.

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::storage::Storage;

/// `m.room.member` content for `target`, with their profile for the
/// memberships that show one (join, invite, knock).
pub async fn member_content(
    storage: &Storage,
    target: &UserId,
    membership: &str,
    reason: Option<&str>,
) -> sqlx::Result<Value> {
    let mut content = Map::new();
    content.insert("membership".into(), membership.into());
    if matches!(membership, "join" | "invite" | "knock")
        && let Some(profile) = storage.profile(target.as_str()).await?
    {
        if let Some(name) = profile.displayname {
            content.insert("displayname".into(), name.into());
        }
        if let Some(url) = profile.avatar_url {
            content.insert("avatar_url".into(), url.into());
        }
    }
    if let Some(reason) = reason {
        content.insert("reason".into(), reason.into());
    }
    Ok(Value::Object(content))
}

/// Merges `extra` into an object's fields (used for `is_direct` and the like).
pub fn with_fields(mut content: Value, extra: Value) -> Value {
    if let (Some(content), Some(extra)) = (content.as_object_mut(), extra.as_object()) {
        content.extend(extra.clone());
    }
    content
}

pub fn is_direct() -> Value {
    json!({ "is_direct": true })
}
