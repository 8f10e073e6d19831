//! The call sites of password auth provider plugins: which login types
//! `GET /login` and user-interactive auth offer, the fields a login of a
//! plugin's type must carry, and the user a plugin vouches for (created on
//! first login, as Synapse registers them).

use http::StatusCode;
use myelin_plugin_api::{AuthOutcome, PluginSet, Registration};
use ruma::{OwnedUserId, api::error::ErrorKind};
use serde_json::{Map, Value};

use crate::{
    api::error::{ApiResult, MatrixError},
    auth::{jwt, username},
    state::AppState,
    storage::{NewUser, UserRecord},
};

pub const PASSWORD: &str = "m.login.password";

/// Whether `m.login.password` is offered: password login is on, and the
/// local database or a plugin checks passwords.
pub fn password_offered(state: &AppState, plugins: &PluginSet) -> bool {
    let config = &state.config.password_config;
    config.login_enabled()
        && (config.localdb_enabled || plugins.login_type_fields(PASSWORD).is_some())
}

/// The plugins' own login types (all but `m.login.password`, which follows
/// `password_config`), in the order plugins are listed.
pub fn custom_login_types(plugins: &PluginSet) -> Vec<String> {
    plugins
        .login_types()
        .into_iter()
        .map(|(login_type, _)| login_type)
        .filter(|t| *t != PASSWORD && *t != jwt::LOGIN_TYPE)
        .map(str::to_owned)
        .collect()
}

/// The registered fields of `login_type` with the values the client sent.
/// Synapse's rules: a missing field is 400 `M_MISSING_PARAM`; the contract
/// passes strings, so any other JSON value is 400 `M_INVALID_PARAM`.
pub fn login_fields(
    fields: &[String],
    data: &Map<String, Value>,
) -> ApiResult<Vec<(String, String)>> {
    let missing: Vec<&str> = fields
        .iter()
        .filter(|f| !data.contains_key(f.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(MatrixError::missing_param(format!(
            "Missing parameters for login type: {}",
            missing.join(", ")
        )));
    }
    fields
        .iter()
        .map(|field| match &data[field.as_str()] {
            Value::String(value) => Ok((field.clone(), value.clone())),
            _ => Err(MatrixError::invalid_param(format!(
                "Bad parameter: {field}"
            ))),
        })
        .collect()
}

/// The user a login names: `identifier.user` (`m.id.user`) or the legacy
/// `user` field.
pub fn named_user(data: &Map<String, Value>) -> Option<String> {
    let identifier = data.get("identifier");
    match identifier
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
    {
        Some("m.id.user") => identifier?.get("user")?.as_str().map(str::to_owned),
        Some(_) => None,
        None => data.get("user")?.as_str().map(str::to_owned),
    }
}

/// Asks the plugins that check `login_type` about these credentials.
pub async fn check(
    plugins: &PluginSet,
    user: &str,
    login_type: &str,
    data: &Map<String, Value>,
) -> ApiResult<AuthOutcome> {
    let Some(fields) = plugins.login_type_fields(login_type) else {
        return Ok(AuthOutcome::NotHandled);
    };
    let fields = login_fields(fields, data)?;
    Ok(plugins.check_auth(user, login_type, &fields).await)
}

/// The local user a plugin vouched for, registered on first login (through
/// the registration spam checks) with the display name the plugin gave, or
/// the localpart.
pub async fn provision_user(
    state: &AppState,
    user_id: &str,
    display_name: Option<String>,
    request_info: (Option<String>, String),
) -> ApiResult<UserRecord> {
    let refused = || {
        tracing::warn!(%user_id, "a password auth provider answered a user that is not local");
        MatrixError::forbidden("Invalid username or password")
    };
    let parsed = OwnedUserId::try_from(user_id.to_lowercase()).map_err(|_| refused())?;
    if parsed.server_name() != state.server_name {
        return Err(refused());
    }
    if let Some(user) = state.storage.user(parsed.as_str()).await? {
        return Ok(user);
    }
    let localpart = parsed.localpart();
    register_on_first_login(state, localpart, display_name, request_info, None).await
}

/// Creates `@localpart:server` for a login that vouched for them (a plugin,
/// a JWT), after the registration spam checks, as Synapse does.
pub async fn register_on_first_login(
    state: &AppState,
    localpart: &str,
    display_name: Option<String>,
    (user_agent, ip): (Option<String>, String),
    auth_provider_id: Option<&str>,
) -> ApiResult<UserRecord> {
    let user_id = format!("@{localpart}:{}", state.server_name);
    username::check_localpart(localpart, state.server_name.as_str(), false)
        .map_err(|e| MatrixError::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, e.0))?;
    let shadow_banned = match state
        .plugins
        .current()
        .check_registration_for_spam(
            None,
            Some(localpart),
            &[(user_agent.unwrap_or_default(), ip)],
            auth_provider_id,
        )
        .await
    {
        Registration::Allow => false,
        Registration::ShadowBan => true,
        Registration::Deny { errcode, message } => {
            return Err(crate::api::plugins::refusal(&errcode, &message));
        }
    };
    let created = state
        .storage
        .create_user(&NewUser {
            user_id: user_id.clone(),
            displayname: Some(display_name.unwrap_or_else(|| localpart.to_owned())),
            shadow_banned,
            ..NewUser::default()
        })
        .await?;
    if created {
        tracing::info!(%user_id, "registered user on first login");
        crate::api::plugin_hooks::user_registered(state, &user_id).await;
    }
    state
        .storage
        .user(&user_id)
        .await?
        .ok_or_else(MatrixError::internal)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn fields_must_be_present_strings() {
        let fields = vec!["token".to_owned()];
        let sent = object(json!({"token": "abc", "other": 1}));
        assert_eq!(
            login_fields(&fields, &sent).unwrap(),
            [("token".to_owned(), "abc".to_owned())]
        );
        assert!(login_fields(&fields, &object(json!({}))).is_err());
        assert!(login_fields(&fields, &object(json!({"token": 5}))).is_err());
    }

    #[test]
    fn the_named_user_comes_from_the_identifier_or_the_legacy_field() {
        let by_identifier = object(json!({"identifier": {"type": "m.id.user", "user": "alice"}}));
        assert_eq!(named_user(&by_identifier).as_deref(), Some("alice"));
        assert_eq!(
            named_user(&object(json!({"user": "bob"}))).as_deref(),
            Some("bob")
        );
        let third_party = object(json!({"identifier": {"type": "m.id.thirdparty"}}));
        assert_eq!(named_user(&third_party), None);
    }
}
