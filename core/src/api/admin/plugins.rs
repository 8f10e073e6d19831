//! `GET /_myelin/admin/v1/plugins`: what each loaded plugin is, may do and
//! has done; `POST /_myelin/admin/v1/plugins/reload`: re-read `modules:`
//! (server admins only).

use axum::{Json, extract::State};
use serde_json::{Value, json};

use super::ServerAdmin;
use crate::api::error::MatrixError;
use crate::state::AppState;

pub async fn list(State(state): State<AppState>, _admin: ServerAdmin) -> Json<Value> {
    let plugins: Vec<Value> = state
        .plugins
        .current()
        .plugins()
        .iter()
        .map(|plugin| {
            let mut callbacks: Vec<String> = plugin
                .callbacks
                .iter()
                .map(|c| myelin_plugin_api::callback_name(*c))
                .chain(
                    plugin
                        .auth
                        .callbacks
                        .iter()
                        .map(|c| myelin_plugin_api::hook_name((*c).into())),
                )
                .collect();
            callbacks.sort();
            let auth_checkers: Vec<Value> = plugin
                .auth
                .checkers
                .iter()
                .map(|(login_type, fields)| json!({ "login_type": login_type, "fields": fields }))
                .collect();
            json!({
                "name": &*plugin.name,
                "module": plugin.path,
                "callbacks": callbacks,
                "auth_checkers": auth_checkers,
                "grants": { "kv": plugin.grants.kv.map(|kv| json!({ "quota_kib": kv.quota_kib })) },
                "limits": { "memory_mib": plugin.limits.memory_mib, "timeout_ms": plugin.limits.timeout_ms },
                "on_error": match plugin.on_error {
                    myelin_plugin_api::OnError::Deny => "deny",
                    myelin_plugin_api::OnError::Allow => "allow",
                },
                "counters": plugin.stats.callbacks(),
                "last_error": plugin.stats.last_error(),
            })
        })
        .collect();
    Json(json!({ "plugins": plugins }))
}

/// Reloads the plugins from the configuration files, as SIGHUP does; a set
/// that fails to load is refused with the reason and the running set stays.
pub async fn reload(
    State(state): State<AppState>,
    _admin: ServerAdmin,
) -> Result<Json<Value>, MatrixError> {
    match crate::server::reload_plugins(&state).await {
        Ok(names) => Ok(Json(json!({ "plugins": names }))),
        Err(err) => Err(MatrixError::unknown(
            http::StatusCode::BAD_REQUEST,
            format!("{err:#}"),
        )),
    }
}
