//! `POST /_matrix/client/v3/createRoom`

use axum::extract::State;
use http::StatusCode;
use ruma::{
    RoomAliasId,
    api::{
        client::room::{
            Visibility,
            create_room::v3::{self as create_room, RoomPreset},
        },
        error::ErrorKind,
    },
};
use serde_json::{Map, Value};

use myelin_plugin_api::{Callback, RulesCallback, Verdict};

use super::membership::spam_check_applies;

use crate::{
    api::{
        error::{ApiResult, MatrixError},
        plugins::{check, failed_plugin, refusal},
        ruma::{Ruma, RumaResponse},
    },
    rooms::{
        create::{Preset, RoomSpec, create_room as create},
        versions,
    },
    state::AppState,
};

pub async fn create_room(
    State(state): State<AppState>,
    req: Ruma<create_room::Request>,
) -> ApiResult<RumaResponse<create_room::Response>> {
    let user = req.session().user_id.clone();
    let plugins = state.plugins.current();
    let rewritten;
    let body = if plugins.wants_rule(RulesCallback::OnCreateRoom) {
        let is_admin = state
            .storage
            .user(user.as_str())
            .await?
            .is_some_and(|u| u.is_admin);
        let request = match std::str::from_utf8(&req.raw_body) {
            Ok(raw) if !raw.trim().is_empty() => raw.to_owned(),
            _ => "{}".to_owned(),
        };
        match plugins
            .on_create_room(user.as_str(), request.clone(), is_admin)
            .await
        {
            Ok(new) if new != request => {
                // A plugin's rewrite must still be a valid request.
                rewritten = reparse(new).map_err(|_| failed_plugin())?;
                &rewritten
            }
            Ok(_) => &req.body,
            Err(Verdict::Reject { errcode, message }) => return Err(refusal(&errcode, &message)),
            Err(Verdict::Allow) => unreachable!("a refusal is never Allow"),
        }
    } else {
        &req.body
    };
    let version = match &body.room_version {
        Some(version) => version.to_string(),
        None => state.config.default_room_version.clone(),
    };
    if versions::supported(&version).is_none() {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UnsupportedRoomVersion,
            format!("Room version {version} is not supported"),
        ));
    }
    let is_public = body.visibility == Visibility::Public;
    let request = serde_json::json!({
        "name": body.name,
        "topic": body.topic,
        "preset": body.preset.as_ref().map(|p| p.as_str()),
        "visibility": body.visibility.as_str(),
        "room_alias_name": body.room_alias_name,
        "room_version": version,
        "invite": body.invite,
        "is_direct": body.is_direct,
    });
    if spam_check_applies(&state, Callback::UserMayCreateRoom, &user).await? {
        check(
            plugins
                .user_may_create_room(user.as_str(), &request.to_string())
                .await,
        )?;
    }
    if spam_check_applies(&state, Callback::UserMayInvite, &user).await? {
        for invitee in &body.invite {
            check(
                plugins
                    .user_may_invite(user.as_str(), invitee.as_str(), "")
                    .await,
            )?;
        }
    }
    if is_public {
        check(plugins.user_may_publish_room(user.as_str(), "").await)?;
        if !plugins.check_visibility_can_be_modified("", "public").await {
            return Err(MatrixError::forbidden(
                "Publishing this room in the room directory is not allowed",
            ));
        }
    }
    let preset = match &body.preset {
        Some(RoomPreset::PublicChat) => Preset::PublicChat,
        Some(RoomPreset::TrustedPrivateChat) => Preset::TrustedPrivateChat,
        Some(RoomPreset::PrivateChat) => Preset::PrivateChat,
        None if is_public => Preset::PublicChat,
        _ => Preset::PrivateChat,
    };

    let alias = match &body.room_alias_name {
        Some(name) => {
            let alias = RoomAliasId::parse(format!("#{name}:{}", state.server_name))
                .map_err(|e| MatrixError::invalid_param(format!("Invalid room_alias_name: {e}")))?;
            if state.storage.alias(alias.as_str()).await?.is_some() {
                return Err(alias_taken_at_creation());
            }
            check(
                plugins
                    .user_may_create_room_alias(user.as_str(), alias.as_str())
                    .await,
            )?;
            Some(alias)
        }
        None => None,
    };

    let object =
        |raw: Option<&serde_json::value::RawValue>, field: &str| -> ApiResult<Map<String, Value>> {
            match raw.map(|raw| serde_json::from_str::<Value>(raw.get())) {
                None => Ok(Map::new()),
                Some(Ok(Value::Object(map))) => Ok(map),
                _ => Err(MatrixError::bad_json(format!(
                    "`{field}` must be an object"
                ))),
            }
        };
    let creation_content = object(
        body.creation_content.as_ref().map(|r| r.json()),
        "creation_content",
    )?;
    if let Some(room_type) = creation_content.get("type")
        && !room_type.is_string()
    {
        return Err(MatrixError::bad_json(
            "`creation_content.type` must be a string",
        ));
    }
    let power_level_override = body
        .power_level_content_override
        .as_ref()
        .map(|raw| object(Some(raw.json()), "power_level_content_override"))
        .transpose()?;
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let event: Value = serde_json::from_str(raw.json().get())
            .map_err(|_| MatrixError::bad_json("`initial_state` entries must be events"))?;
        let kind = event.get("type").and_then(Value::as_str);
        let content = event.get("content").filter(|c| c.is_object());
        let (Some(kind), Some(content)) = (kind, content) else {
            return Err(MatrixError::bad_json(
                "`initial_state` entries need `type` and `content`",
            ));
        };
        let state_key = event.get("state_key").and_then(Value::as_str).unwrap_or("");
        initial_state.push((kind.to_owned(), state_key.to_owned(), content.clone()));
    }

    let spec = RoomSpec {
        version,
        creator: user.clone(),
        preset,
        is_public,
        creation_content,
        power_level_override,
        canonical_alias: alias.as_ref().map(|a| a.to_string()),
        initial_state,
        name: body.name.clone(),
        topic: body.topic.clone(),
        invite: body.invite.clone(),
        is_direct: body.is_direct,
    };
    let room_id = create(&state.rooms, &state.storage, &state.server_name, spec).await?;
    if let Some(alias) = alias
        && !state
            .storage
            .create_alias(alias.as_str(), room_id.as_str(), user.as_str())
            .await?
    {
        return Err(alias_taken_at_creation());
    }
    Ok(RumaResponse(create_room::Response::new(room_id)))
}

/// `createRoom` answers a taken alias with 400 (the directory API with 409).
fn alias_taken_at_creation() -> MatrixError {
    MatrixError::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::RoomInUse,
        "Room alias already taken",
    )
}

pub fn alias_in_use() -> MatrixError {
    MatrixError::new(
        StatusCode::CONFLICT,
        ErrorKind::RoomInUse,
        "Room alias already taken",
    )
}

/// A `createRoom` body (JSON) as ruma parses it.
fn reparse(json: String) -> Result<create_room::Request, ()> {
    use ruma::api::IncomingRequest;
    let request = http::Request::post("/_matrix/client/v3/createRoom")
        .body(json.into_bytes())
        .map_err(|_| ())?;
    create_room::Request::try_from_http_request(request, &[] as &[String]).map_err(|_| ())
}
