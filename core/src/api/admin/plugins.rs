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
                .chain(registered_hooks(&plugin.registered))
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
                "grants": {
                    "kv": plugin.grants.kv.map(|kv| json!({ "quota_kib": kv.quota_kib })),
                    "http": plugin.grants.http.as_ref().map(|http| json!({ "allowed_hosts": http.allowed_hosts })),
                    "queries": plugin.grants.queries,
                    "actions": plugin.grants.actions,
                },
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

/// The callbacks a plugin registered through the optional hook interfaces
/// other than `password-auth`, by Synapse's names.
fn registered_hooks(registered: &myelin_plugin_api::plugin::Registered) -> Vec<String> {
    use myelin_plugin_api::{Hook, PresenceCallback, hook_name};
    let mut hooks: Vec<String> = registered
        .rules
        .iter()
        .map(|c| hook_name(Hook::Rules(*c)))
        .chain(
            registered
                .validity
                .iter()
                .map(|c| hook_name(Hook::Validity(*c))),
        )
        .chain(
            registered
                .account_data
                .iter()
                .map(|c| hook_name(Hook::AccountData(*c))),
        )
        .collect();
    if registered.presence_router {
        hooks.push(hook_name(Hook::Presence(
            PresenceCallback::GetUsersForStates,
        )));
        hooks.push(hook_name(Hook::Presence(
            PresenceCallback::GetInterestedUsers,
        )));
    }
    hooks
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
