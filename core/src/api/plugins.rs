//! Turning plugin answers into Matrix errors, server data into the records
//! the plugin contract speaks, and the storage behind plugins' grants.

use http::StatusCode;
use myelin_plugin_api::{BoxFuture, Event, UserProfile, Verdict};
use ruma::api::error::StandardErrorBody;

use super::error::{ApiResult, MatrixError};
use crate::rooms::pdu::Pdu;

/// A plugin's refusal as the client sees it: 403 with the plugin's code.
pub fn refusal(errcode: &str, message: &str) -> MatrixError {
    let body: Option<StandardErrorBody> =
        serde_json::from_value(serde_json::json!({ "errcode": errcode, "error": message })).ok();
    match body {
        Some(body) => MatrixError::new(StatusCode::FORBIDDEN, body.kind, body.message),
        None => MatrixError::forbidden(message),
    }
}

/// What the client hears when a plugin failed and its policy refuses.
pub fn failed_plugin() -> MatrixError {
    MatrixError::forbidden("This request was refused because a server plugin failed")
}

/// `Ok` when the plugins allow the action.
pub fn check(verdict: Verdict) -> ApiResult<()> {
    match verdict {
        Verdict::Allow => Ok(()),
        Verdict::Reject { errcode, message } => Err(refusal(&errcode, &message)),
    }
}

/// An event as plugins see it.
pub fn event(pdu: &Pdu) -> Event {
    // Parsing the whole PDU is only worth it when it has `unsigned` (new
    // events, the ones spam checks see, never do).
    let unsigned = pdu
        .json
        .contains("\"unsigned\"")
        .then(|| {
            pdu.object()
                .get("unsigned")
                .map(|u| serde_json::Value::from(u.clone()).to_string())
        })
        .flatten();
    Event {
        event_id: pdu.event_id.to_string(),
        room_id: pdu.room_id.to_string(),
        sender: pdu.sender.to_string(),
        event_type: pdu.kind.to_string(),
        state_key: pdu.state_key.clone(),
        origin_server_ts: pdu.origin_server_ts.get().into(),
        content: pdu.content.get().to_owned(),
        unsigned,
    }
}

/// The `kv` grant, in the homeserver's database.
impl myelin_plugin_api::KvBackend for crate::storage::Storage {
    fn get<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move {
            self.plugin_kv_get(plugin, key)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn set<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
        value: &'a [u8],
        quota_bytes: u64,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            self.plugin_kv_set(plugin, key, value, quota_bytes)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn delete<'a>(&'a self, plugin: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.plugin_kv_delete(plugin, key)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn list<'a>(
        &'a self,
        plugin: &'a str,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            self.plugin_kv_list(plugin, prefix)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The `queries` grant: read-only answers from the homeserver's database.
impl myelin_plugin_api::QueryBackend for crate::storage::Storage {
    fn profile<'a>(
        &'a self,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserProfile>, String>> {
        Box::pin(async move {
            let profile = self.profile(user_id).await.map_err(|e| e.to_string())?;
            Ok(profile.map(|p| UserProfile {
                user_id: user_id.to_owned(),
                display_name: p.displayname,
                avatar_url: p.avatar_url,
            }))
        })
    }

    fn room_state<'a>(
        &'a self,
        room_id: &'a str,
        event_type: &'a str,
        state_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Event>, String>> {
        Box::pin(async move {
            let stored = self
                .current_state_event(room_id, event_type, state_key)
                .await
                .map_err(|e| e.to_string())?;
            Ok(stored.map(|e| event(&e.pdu)))
        })
    }

    fn room_state_events<'a>(
        &'a self,
        room_id: &'a str,
        event_type: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Event>, String>> {
        Box::pin(async move {
            let stored = self
                .current_state_of_type(room_id, event_type)
                .await
                .map_err(|e| e.to_string())?;
            Ok(stored.iter().map(|e| event(&e.pdu)).collect())
        })
    }

    fn is_joined<'a>(
        &'a self,
        user_id: &'a str,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let membership = self
                .membership(room_id, user_id)
                .await
                .map_err(|e| e.to_string())?;
            Ok(membership.is_some_and(|(m, _)| m == "join"))
        })
    }

    fn is_admin<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let user = self.user(user_id).await.map_err(|e| e.to_string())?;
            Ok(user.is_some_and(|u| u.is_admin))
        })
    }
}
