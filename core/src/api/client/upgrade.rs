//! `POST /rooms/{roomId}/upgrade` (spec: "Room upgrades"): a new room at the
//! new version with the old room's state, and a tombstone in the old one.

use axum::extract::State;
use http::StatusCode;
use ruma::api::{client::room::upgrade_room::v3 as upgrade_room, error::ErrorKind};
use serde_json::{Map, Value, json};

use super::room_access::{find_room, require_joined};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    rooms::{
        create::{Preset, RoomSpec, create_room},
        pdu::EventDraft,
        power::{PowerLevels, creators_of},
        versions,
    },
    state::AppState,
};

/// State carried over to the new room as it is.
const CARRIED_STATE: [&str; 8] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
];

/// Power levels as integers, as room version 10 and later require.
fn integer_levels(content: Value) -> Value {
    fn fix(value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Ok(n) = s.trim().parse::<i64>() {
                    *value = n.into();
                }
            }
            Value::Object(map) => map.values_mut().for_each(fix),
            _ => {}
        }
    }
    let mut content = content;
    fix(&mut content);
    content
}

pub async fn upgrade(
    State(state): State<AppState>,
    req: Ruma<upgrade_room::Request>,
) -> ApiResult<RumaResponse<upgrade_room::Response>> {
    let user = req.session().user_id.clone();
    let old_room = &req.body.room_id;
    let new_version = req.body.new_version.to_string();
    if versions::supported(&new_version).is_none() {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UnsupportedRoomVersion,
            format!("Room version {new_version} is not supported"),
        ));
    }
    find_room(&state, old_room).await?;
    require_joined(&state, old_room, &user).await?;

    let (carried, power_levels, invited, alias, room_type) = state
        .rooms
        .with_room(old_room, async |room| {
            let levels = PowerLevels::of(room.head);
            if levels.user(&user) < levels.for_event("m.room.tombstone", true) {
                return Err(crate::rooms::AppendError::Forbidden(
                    "You don't have permission to upgrade this room".to_owned(),
                ));
            }
            let head = &room.head;
            let carried: Vec<(String, String, Value)> = CARRIED_STATE
                .iter()
                .filter_map(|kind| {
                    let event = head.state_event(&(*kind).into(), "")?;
                    Some((kind.to_string(), String::new(), event.content_value()))
                })
                .collect();
            let power_levels = head
                .state_event(&"m.room.power_levels".into(), "")
                .map(|e| integer_levels(e.content_value()));
            let invited: Vec<_> = head
                .state
                .iter()
                .filter(|((kind, _), event)| {
                    kind == "m.room.member"
                        && event.content_str("membership").as_deref() == Some("invite")
                })
                .filter_map(|((_, key), _)| ruma::UserId::parse(key).ok())
                .collect();
            let alias = head
                .state_event(&"m.room.canonical_alias".into(), "")
                .and_then(|e| e.content_str("alias"));
            let room_type = head
                .state_event(&"m.room.create".into(), "")
                .and_then(|e| e.content_value().get("type").cloned());
            Ok((carried, power_levels, invited, alias, room_type))
        })
        .await?;

    let mut creation_content = Map::new();
    creation_content.insert("predecessor".into(), json!({ "room_id": old_room }));
    if let Some(room_type) = room_type {
        creation_content.insert("type".into(), room_type);
    }
    if !req.body.additional_creators.is_empty() {
        creation_content.insert(
            "additional_creators".into(),
            json!(req.body.additional_creators),
        );
    }
    let spec = RoomSpec {
        version: new_version,
        creator: user.clone(),
        preset: Preset::PrivateChat,
        is_public: state
            .storage
            .room(old_room.as_str())
            .await?
            .is_some_and(|r| r.is_public),
        creation_content,
        power_level_override: None,
        canonical_alias: None,
        initial_state: carried,
        name: None,
        topic: None,
        invite: invited,
        is_direct: false,
    };
    let new_room = create_room(&state.rooms, &state.storage, &state.server_name, spec).await?;

    // The old room's power levels, and its aliases, now belong to the new one.
    state
        .storage
        .move_aliases(old_room.as_str(), new_room.as_str())
        .await?;
    state
        .rooms
        .with_room(&new_room, async |room| {
            if let Some(levels) = &power_levels {
                let mut levels = levels.clone();
                if room
                    .head
                    .rules
                    .authorization
                    .explicitly_privilege_room_creators
                {
                    // Version 12: creators outrank everyone and must not be listed.
                    let create = room.head.state_event(&"m.room.create".into(), "");
                    let creators = create.map(|c| creators_of(c)).unwrap_or_default();
                    if let Some(users) = levels["users"].as_object_mut() {
                        users.retain(|id, _| !creators.contains(id));
                    }
                } else {
                    levels["users"][user.as_str()] = 100.into();
                }
                room.append(
                    &user,
                    &EventDraft::state("m.room.power_levels", "", levels),
                    None,
                )
                .await?;
            }
            if let Some(alias) = &alias {
                room.append(
                    &user,
                    &EventDraft::state("m.room.canonical_alias", "", json!({ "alias": alias })),
                    None,
                )
                .await?;
            }
            Ok(())
        })
        .await?;

    // The tombstone, then the old room is made read-only for regular users.
    state
        .rooms
        .with_room(old_room, async |room| {
            room.append(
                &user,
                &EventDraft::state(
                    "m.room.tombstone",
                    "",
                    json!({ "body": "This room has been replaced", "replacement_room": new_room }),
                ),
                None,
            )
            .await?;
            if alias.is_some() {
                room.append(
                    &user,
                    &EventDraft::state("m.room.canonical_alias", "", json!({})),
                    None,
                )
                .await?;
            }
            if let Some(levels) = room.head.state_event(&"m.room.power_levels".into(), "") {
                let mut levels = levels.content_value();
                let users_default = levels
                    .get("users_default")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let restricted = (users_default + 1).max(50);
                levels["events_default"] = restricted.into();
                levels["invite"] = restricted.into();
                room.append(
                    &user,
                    &EventDraft::state("m.room.power_levels", "", levels),
                    None,
                )
                .await?;
            }
            Ok(())
        })
        .await?;
    Ok(RumaResponse(upgrade_room::Response::new(new_room)))
}
