//! Push (spec: "Push Notifications"): push rules, pushers and the
//! notifications list.

use axum::extract::State;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedRoomId, UInt, UserId,
    api::client::push::{
        Pusher,
        delete_pushrule::v3 as delete_pushrule,
        get_notifications::v3 as get_notifications,
        get_pushers::v3 as get_pushers,
        get_pushrule::v3 as get_pushrule,
        get_pushrule_actions::v3 as get_pushrule_actions,
        get_pushrule_enabled::v3 as get_pushrule_enabled,
        get_pushrules_all::v3 as get_pushrules_all,
        get_pushrules_global_scope::v3 as get_pushrules_global,
        set_pusher::v3::{self as set_pusher, PusherAction},
        set_pushrule::v3 as set_pushrule,
        set_pushrule_actions::v3 as set_pushrule_actions,
        set_pushrule_enabled::v3 as set_pushrule_enabled,
    },
    push::{InsertPushRuleError, RemovePushRuleError, RuleKind, Ruleset},
};
use serde_json::{Value, json};

use super::room_access::client_events;
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    rooms::versions,
    state::AppState,
    storage::push::PusherRow,
    streams::{Stream, notifier::WakeKey},
};

/// The most notifications one page returns.
const MAX_NOTIFICATIONS: u64 = 100;

fn unknown_rule(kind: &RuleKind, rule_id: &str) -> MatrixError {
    MatrixError::not_found(format!("Unknown push rule {kind}/{rule_id}"))
}

/// Applies a change to the user's rules and wakes their syncs (the rules
/// are global account data).
async fn change_rules(
    state: &AppState,
    user: &UserId,
    change: impl FnOnce(&mut Ruleset) -> Result<(), MatrixError>,
) -> ApiResult<()> {
    let position = state.push_rules.update(user, change).await??;
    state.live.publish(
        Stream::AccountData,
        position,
        &[WakeKey::User(user.to_owned())],
    );
    Ok(())
}

/// `GET /pushrules/`
pub async fn get_all(
    State(state): State<AppState>,
    req: Ruma<get_pushrules_all::Request>,
) -> ApiResult<RumaResponse<get_pushrules_all::Response>> {
    let rules = state.push_rules.get(&req.session().user_id).await?;
    Ok(RumaResponse(get_pushrules_all::Response::new(
        (*rules).clone(),
    )))
}

/// `GET /pushrules/global/`
pub async fn get_global(
    State(state): State<AppState>,
    req: Ruma<get_pushrules_global::Request>,
) -> ApiResult<RumaResponse<get_pushrules_global::Response>> {
    let rules = state.push_rules.get(&req.session().user_id).await?;
    Ok(RumaResponse(get_pushrules_global::Response::new(
        (*rules).clone(),
    )))
}

/// `GET /pushrules/global/{kind}/{ruleId}`
pub async fn get_rule(
    State(state): State<AppState>,
    req: Ruma<get_pushrule::Request>,
) -> ApiResult<RumaResponse<get_pushrule::Response>> {
    let body = &req.body;
    let rules = state.push_rules.get(&req.session().user_id).await?;
    let rule = rules
        .get(body.kind.clone(), &body.rule_id)
        .ok_or_else(|| unknown_rule(&body.kind, &body.rule_id))?;
    Ok(RumaResponse(get_pushrule::Response::new(rule.into())))
}

/// `PUT /pushrules/global/{kind}/{ruleId}`
pub async fn set_rule(
    State(state): State<AppState>,
    req: Ruma<set_pushrule::Request>,
) -> ApiResult<RumaResponse<set_pushrule::Response>> {
    let body = req.body;
    change_rules(
        &state,
        &req.session.expect("authenticated").user_id,
        |rules| {
            rules
                .insert(body.rule, body.after.as_deref(), body.before.as_deref())
                .map_err(|err| match err {
                    InsertPushRuleError::UnknownRuleId => {
                        MatrixError::not_found("The rule named in before or after does not exist")
                    }
                    other => MatrixError::bad_json(other.to_string()),
                })
        },
    )
    .await?;
    Ok(RumaResponse(set_pushrule::Response::new()))
}

/// `DELETE /pushrules/global/{kind}/{ruleId}`
pub async fn delete_rule(
    State(state): State<AppState>,
    req: Ruma<delete_pushrule::Request>,
) -> ApiResult<RumaResponse<delete_pushrule::Response>> {
    let body = &req.body;
    change_rules(&state, &req.session().user_id, |rules| {
        rules
            .remove(body.kind.clone(), &body.rule_id)
            .map_err(|err| match err {
                RemovePushRuleError::ServerDefault => {
                    MatrixError::bad_json("Server-default rules cannot be deleted")
                }
                _ => unknown_rule(&body.kind, &body.rule_id),
            })
    })
    .await?;
    Ok(RumaResponse(delete_pushrule::Response::new()))
}

/// `GET /pushrules/global/{kind}/{ruleId}/enabled`
pub async fn get_enabled(
    State(state): State<AppState>,
    req: Ruma<get_pushrule_enabled::Request>,
) -> ApiResult<RumaResponse<get_pushrule_enabled::Response>> {
    let body = &req.body;
    let rules = state.push_rules.get(&req.session().user_id).await?;
    let rule = rules
        .get(body.kind.clone(), &body.rule_id)
        .ok_or_else(|| unknown_rule(&body.kind, &body.rule_id))?;
    Ok(RumaResponse(get_pushrule_enabled::Response::new(
        rule.enabled(),
    )))
}

/// `PUT /pushrules/global/{kind}/{ruleId}/enabled`
pub async fn set_enabled(
    State(state): State<AppState>,
    req: Ruma<set_pushrule_enabled::Request>,
) -> ApiResult<RumaResponse<set_pushrule_enabled::Response>> {
    let body = &req.body;
    change_rules(&state, &req.session().user_id, |rules| {
        rules
            .set_enabled(body.kind.clone(), &body.rule_id, body.enabled)
            .map_err(|_| unknown_rule(&body.kind, &body.rule_id))
    })
    .await?;
    Ok(RumaResponse(set_pushrule_enabled::Response::new()))
}

/// `GET /pushrules/global/{kind}/{ruleId}/actions`
pub async fn get_actions(
    State(state): State<AppState>,
    req: Ruma<get_pushrule_actions::Request>,
) -> ApiResult<RumaResponse<get_pushrule_actions::Response>> {
    let body = &req.body;
    let rules = state.push_rules.get(&req.session().user_id).await?;
    let rule = rules
        .get(body.kind.clone(), &body.rule_id)
        .ok_or_else(|| unknown_rule(&body.kind, &body.rule_id))?;
    Ok(RumaResponse(get_pushrule_actions::Response::new(
        rule.actions().to_vec(),
    )))
}

/// `PUT /pushrules/global/{kind}/{ruleId}/actions`
pub async fn set_actions(
    State(state): State<AppState>,
    req: Ruma<set_pushrule_actions::Request>,
) -> ApiResult<RumaResponse<set_pushrule_actions::Response>> {
    let body = &req.body;
    change_rules(&state, &req.session().user_id, |rules| {
        rules
            .set_actions(body.kind.clone(), &body.rule_id, body.actions.clone())
            .map_err(|_| unknown_rule(&body.kind, &body.rule_id))
    })
    .await?;
    Ok(RumaResponse(set_pushrule_actions::Response::new()))
}

/// `GET /pushers`
pub async fn get_pushers(
    State(state): State<AppState>,
    req: Ruma<get_pushers::Request>,
) -> ApiResult<RumaResponse<get_pushers::Response>> {
    let rows = state
        .storage
        .pushers_of(&[req.session().user_id.as_str()])
        .await?;
    let pushers = rows
        .into_iter()
        .filter_map(|row| {
            let data: Value = serde_json::from_str(&row.data).unwrap_or_else(|_| json!({}));
            serde_json::from_value::<Pusher>(json!({
                "pushkey": row.pushkey,
                "app_id": row.app_id,
                "kind": row.kind,
                "app_display_name": row.app_display_name,
                "device_display_name": row.device_display_name,
                "profile_tag": row.profile_tag,
                "lang": row.lang,
                "data": data,
            }))
            .ok()
        })
        .collect();
    Ok(RumaResponse(get_pushers::Response::new(pushers)))
}

/// An HTTP pusher's URL: absolute HTTP(S), ending in the push gateway path.
fn check_gateway_url(data: &Value) -> ApiResult<()> {
    let url = data["url"]
        .as_str()
        .ok_or_else(|| MatrixError::missing_param("An http pusher needs data.url"))?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| MatrixError::invalid_param("data.url must be an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(MatrixError::invalid_param(
            "data.url must be an HTTP(S) URL",
        ));
    }
    if parsed.path() != "/_matrix/push/v1/notify" {
        return Err(MatrixError::invalid_param(
            "data.url must end in /_matrix/push/v1/notify",
        ));
    }
    Ok(())
}

/// `POST /pushers/set`
pub async fn set_pusher(
    State(state): State<AppState>,
    req: Ruma<set_pusher::Request>,
) -> ApiResult<RumaResponse<set_pusher::Response>> {
    let session = req.session();
    match &req.body.action {
        PusherAction::Post(post) => {
            let pusher = serde_json::to_value(&post.pusher).map_err(|_| MatrixError::internal())?;
            let kind = pusher["kind"].as_str().unwrap_or_default().to_owned();
            if !matches!(kind.as_str(), "http" | "email") {
                return Err(MatrixError::invalid_param(format!(
                    "Unknown pusher kind `{kind}`"
                )));
            }
            if kind == "http" {
                check_gateway_url(&pusher["data"])?;
            }
            let text = |field: &str| pusher[field].as_str().unwrap_or_default().to_owned();
            let row = PusherRow {
                user_id: session.user_id.to_string(),
                device_id: Some(session.device_id.to_string()),
                kind,
                app_id: text("app_id"),
                pushkey: text("pushkey"),
                app_display_name: text("app_display_name"),
                device_display_name: text("device_display_name"),
                profile_tag: pusher["profile_tag"].as_str().map(str::to_owned),
                lang: text("lang"),
                data: pusher["data"].to_string(),
            };
            if row.app_id.len() > 64 || row.pushkey.len() > 512 {
                return Err(MatrixError::invalid_param("app_id or pushkey is too long"));
            }
            state.storage.set_pusher(&row, post.append).await?;
        }
        PusherAction::Delete(ids) => {
            state
                .storage
                .delete_pusher(session.user_id.as_str(), &ids.app_id, &ids.pushkey)
                .await?;
        }
        _ => return Err(MatrixError::invalid_param("Unknown pusher action")),
    }
    Ok(RumaResponse(set_pusher::Response::new()))
}

/// `GET /notifications`
pub async fn get_notifications(
    State(state): State<AppState>,
    req: Ruma<get_notifications::Request>,
) -> ApiResult<RumaResponse<get_notifications::Response>> {
    let user = &req.session().user_id;
    let body = &req.body;
    let before = match &body.from {
        Some(from) => from
            .parse::<i64>()
            .map_err(|_| MatrixError::invalid_param("Invalid from token"))?,
        None => i64::MAX,
    };
    let limit = body
        .limit
        .map_or(MAX_NOTIFICATIONS, u64::from)
        .clamp(1, MAX_NOTIFICATIONS);
    let only_highlights = body.only.as_deref() == Some("highlight");
    let rows = state
        .storage
        .notifications(user.as_str(), before, limit as i64, only_highlights)
        .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    let events = state.storage.events(&ids).await?;
    let mut notifications = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(event) = events
            .iter()
            .find(|e| e.pdu.event_id.as_str() == row.event_id)
        else {
            continue;
        };
        let Some(room) = state.storage.room(&row.room_id).await? else {
            continue;
        };
        let Some((_, rules)) = versions::supported(&room.room_version) else {
            continue;
        };
        let client = client_events(&state, &rules, std::slice::from_ref(event)).await?;
        let notification = get_notifications::Notification::new(
            serde_json::from_str(&row.actions).unwrap_or_default(),
            super::sync::raw(client.into_iter().next().unwrap_or_default()),
            row.read,
            OwnedRoomId::try_from(row.room_id.as_str()).map_err(|_| MatrixError::internal())?,
            MilliSecondsSinceUnixEpoch(UInt::try_from(row.ts.max(0) as u64).unwrap_or_default()),
        );
        notifications.push(notification);
    }
    let mut response = get_notifications::Response::new(notifications);
    if rows.len() as u64 == limit {
        response.next_token = rows.last().map(|r| r.stream_ordering.to_string());
    }
    Ok(RumaResponse(response))
}
