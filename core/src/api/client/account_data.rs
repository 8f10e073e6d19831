//! Client config (spec: "Client Config", "Room Tagging"): account data,
//! global and per room, and room tags, which are the room's `m.tag` data.

use axum::extract::State;
use ruma::{
    RoomId, UserId,
    api::client::{
        config::{
            get_global_account_data::v3 as get_global, get_room_account_data::v3 as get_room,
            set_global_account_data::v3 as set_global, set_room_account_data::v3 as set_room,
        },
        tag::{
            create_tag::v3 as create_tag, delete_tag::v3 as delete_tag, get_tags::v3 as get_tags,
        },
    },
    serde::Raw,
};
use serde_json::{Value, json};

use super::filter::require_self;
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        plugin_hooks,
        ruma::{Ruma, RumaResponse},
    },
    push::PUSH_RULES_TYPE,
    state::AppState,
    streams::{Stream, notifier::WakeKey},
};

fn object(raw: &serde_json::value::RawValue) -> ApiResult<Value> {
    match serde_json::from_str(raw.get()) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(MatrixError::bad_json("Account data must be a JSON object")),
    }
}

/// Stores account data and wakes the user's syncs, then tells plugins
/// (`on_account_data_updated`, in the background) — except for room tags,
/// which Synapse processes separately and never reports.
pub async fn store(
    state: &AppState,
    user: &UserId,
    room_id: Option<&RoomId>,
    kind: &str,
    content: &Value,
) -> ApiResult<()> {
    let room = room_id.map_or("", |r| r.as_str());
    let position = state
        .storage
        .set_account_data(user.as_str(), room, kind, &content.to_string())
        .await?;
    state.live.publish(
        Stream::AccountData,
        position,
        &[WakeKey::User(user.to_owned())],
    );
    if kind != TAGS {
        plugin_hooks::account_data_updated(
            state,
            user.as_str(),
            room_id.map(RoomId::as_str),
            kind,
            content,
        );
    }
    Ok(())
}

async fn load(state: &AppState, user: &UserId, room: &str, kind: &str) -> ApiResult<Value> {
    let content = state
        .storage
        .account_data(user.as_str(), room, kind)
        .await?
        .ok_or_else(|| MatrixError::not_found(format!("No account data of type {kind}")))?;
    serde_json::from_str(&content).map_err(|_| MatrixError::internal())
}

fn reject_push_rules(kind: &str) -> ApiResult<()> {
    if kind == PUSH_RULES_TYPE {
        return Err(MatrixError::bad_json(
            "Push rules are changed through /pushrules",
        ));
    }
    Ok(())
}

/// `PUT /user/{userId}/account_data/{type}`
pub async fn set_global_data(
    State(state): State<AppState>,
    req: Ruma<set_global::Request>,
) -> ApiResult<RumaResponse<set_global::Response>> {
    let user = &req.session().user_id;
    require_self(user, &req.body.user_id)?;
    let kind = req.body.event_type.to_string();
    reject_push_rules(&kind)?;
    let content = object(req.body.data.json())?;
    store(&state, user, None, &kind, &content).await?;
    Ok(RumaResponse(set_global::Response::new()))
}

/// `GET /user/{userId}/account_data/{type}`
pub async fn get_global_data(
    State(state): State<AppState>,
    req: Ruma<get_global::Request>,
) -> ApiResult<RumaResponse<get_global::Response>> {
    let user = &req.session().user_id;
    require_self(user, &req.body.user_id)?;
    let kind = req.body.event_type.to_string();
    let content = if kind == PUSH_RULES_TYPE {
        state.push_rules.as_account_data(user).await?
    } else {
        load(&state, user, "", &kind).await?
    };
    Ok(RumaResponse(get_global::Response::new(raw(content))))
}

/// `PUT /user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn set_room_data(
    State(state): State<AppState>,
    req: Ruma<set_room::Request>,
) -> ApiResult<RumaResponse<set_room::Response>> {
    let user = &req.session().user_id;
    require_self(user, &req.body.user_id)?;
    super::room_access::check_room_id(&req.body.room_id)?;
    let kind = req.body.event_type.to_string();
    reject_push_rules(&kind)?;
    let content = object(req.body.data.json())?;
    store(&state, user, Some(&req.body.room_id), &kind, &content).await?;
    Ok(RumaResponse(set_room::Response::new()))
}

/// `GET /user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn get_room_data(
    State(state): State<AppState>,
    req: Ruma<get_room::Request>,
) -> ApiResult<RumaResponse<get_room::Response>> {
    let user = &req.session().user_id;
    require_self(user, &req.body.user_id)?;
    let content = load(
        &state,
        user,
        req.body.room_id.as_str(),
        &req.body.event_type.to_string(),
    )
    .await?;
    Ok(RumaResponse(get_room::Response::new(raw(content))))
}

fn raw<T>(value: Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(&value).expect("JSON values serialize"))
}

const TAGS: &str = "m.tag";

async fn tags_of(state: &AppState, user: &UserId, room: &RoomId) -> ApiResult<Value> {
    Ok(state
        .storage
        .account_data(user.as_str(), room.as_str(), TAGS)
        .await?
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_else(|| json!({ "tags": {} })))
}

/// `GET /user/{userId}/rooms/{roomId}/tags`
pub async fn get_room_tags(
    State(state): State<AppState>,
    req: Ruma<get_tags::Request>,
) -> ApiResult<RumaResponse<get_tags::Response>> {
    let user = &req.session().user_id;
    require_self(user, &req.body.user_id)?;
    let content = tags_of(&state, user, &req.body.room_id).await?;
    let tags = serde_json::from_value(content["tags"].clone()).unwrap_or_default();
    Ok(RumaResponse(get_tags::Response::new(tags)))
}

/// `PUT /user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn put_room_tag(
    State(state): State<AppState>,
    req: Ruma<create_tag::Request>,
) -> ApiResult<RumaResponse<create_tag::Response>> {
    let user = &req.session().user_id;
    let body = &req.body;
    require_self(user, &body.user_id)?;
    super::room_access::check_room_id(&body.room_id)?;
    let mut content = tags_of(&state, user, &body.room_id).await?;
    content["tags"][&body.tag] =
        serde_json::to_value(&body.tag_info).map_err(|_| MatrixError::internal())?;
    store(&state, user, Some(&body.room_id), TAGS, &content).await?;
    Ok(RumaResponse(create_tag::Response::new()))
}

/// `DELETE /user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn delete_room_tag(
    State(state): State<AppState>,
    req: Ruma<delete_tag::Request>,
) -> ApiResult<RumaResponse<delete_tag::Response>> {
    let user = &req.session().user_id;
    let body = &req.body;
    require_self(user, &body.user_id)?;
    let mut content = tags_of(&state, user, &body.room_id).await?;
    if let Some(tags) = content["tags"].as_object_mut() {
        tags.remove(&body.tag);
    }
    store(&state, user, Some(&body.room_id), TAGS, &content).await?;
    Ok(RumaResponse(delete_tag::Response::new()))
}
