//! User-interactive authentication for the endpoints that ask for it:
//! answer 401 with the flows until one flow's stages are all completed.

use http::StatusCode;
use ruma::{
    UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};

use myelin_plugin_api::{AuthOutcome, PluginSet};
use serde_json::{Map, Value};

use super::auth_providers;
use crate::{
    api::error::{ApiResult, MatrixError},
    auth::{password, uia::SessionMismatch},
    state::AppState,
};

/// Who must authenticate: a known user (re-authentication) or nobody yet (registration).
pub enum Subject<'a> {
    User(&'a UserId),
    Registration,
}

/// Checks the `auth` of a request against `flows`; `Ok` once a flow is
/// complete. Re-authenticating a user also offers, as Synapse does, one flow
/// per login type a password auth provider plugin registered.
pub async fn authenticate(
    state: &AppState,
    operation: &str,
    auth: Option<&AuthData>,
    flows: &[&[AuthType]],
    subject: Subject<'_>,
) -> ApiResult<()> {
    let plugins = state.plugins.current();
    let mut flows: Vec<Vec<AuthType>> = flows.iter().map(|f| f.to_vec()).collect();
    if let Subject::User(_) = subject {
        flows.extend(
            auth_providers::custom_login_types(&plugins)
                .into_iter()
                .map(|t| vec![AuthType::from(t.as_str())]),
        );
    }
    let challenge = |session: String, completed: Vec<String>, error: Option<StandardErrorBody>| {
        let mut info = UiaaInfo::new(
            flows
                .iter()
                .map(|stages| AuthFlow::new(stages.clone()))
                .collect(),
        );
        info.session = Some(session);
        info.completed = completed
            .iter()
            .map(|s| AuthType::from(s.as_str()))
            .collect();
        info.auth_error = error;
        MatrixError::Uiaa(Box::new(info))
    };

    let Some(auth) = auth else {
        return Err(challenge(state.uia.start(operation), Vec::new(), None));
    };
    let session = match auth.session() {
        Some(id) => match state.uia.get(id, operation) {
            Ok(_) => id.to_owned(),
            Err(SessionMismatch::Unknown) => {
                return Err(MatrixError::unknown(
                    StatusCode::BAD_REQUEST,
                    "Unknown session ID",
                ));
            }
            Err(SessionMismatch::OtherOperation) => {
                return Err(MatrixError::forbidden(
                    "Requested operation has changed during the UI authentication session.",
                ));
            }
        },
        None => state.uia.start(operation),
    };

    let offered: Vec<&AuthType> = flows.iter().flat_map(|f| f.iter()).collect();
    let stage = auth.auth_type();
    let completed = match (auth, &subject) {
        (AuthData::Dummy(_), _) if offered.contains(&&AuthType::Dummy) => {
            state.uia.complete(&session, AuthType::Dummy.as_str())
        }
        (AuthData::Password(p), Subject::User(user_id))
            if offered.contains(&&AuthType::Password) =>
        {
            if check_password(
                state,
                &plugins,
                user_id,
                &p.identifier,
                &p.password,
                &auth.data(),
            )
            .await?
            {
                state.uia.complete(&session, AuthType::Password.as_str())
            } else {
                let completed = state
                    .uia
                    .get(&session, operation)
                    .map(|s| s.completed)
                    .unwrap_or_default();
                return Err(challenge(
                    session,
                    completed,
                    Some(StandardErrorBody::new(
                        ErrorKind::Forbidden,
                        "Invalid password".to_owned(),
                    )),
                ));
            }
        }
        (AuthData::_Custom(_), Subject::User(user_id))
            if stage.as_ref().is_some_and(|s| offered.contains(&s)) =>
        {
            let stage = stage.map(|s| s.to_string()).unwrap_or_default();
            if check_plugin_stage(state, &plugins, user_id, &stage, &auth.data()).await? {
                state.uia.complete(&session, &stage)
            } else {
                let completed = state
                    .uia
                    .get(&session, operation)
                    .map(|s| s.completed)
                    .unwrap_or_default();
                return Err(challenge(
                    session,
                    completed,
                    Some(StandardErrorBody::new(
                        ErrorKind::Forbidden,
                        "Invalid auth".to_owned(),
                    )),
                ));
            }
        }
        _ => {
            let name = stage.map(|s| s.to_string()).unwrap_or_default();
            let completed = state
                .uia
                .get(&session, operation)
                .map(|s| s.completed)
                .unwrap_or_default();
            return Err(challenge(
                session,
                completed,
                Some(StandardErrorBody::new(
                    ErrorKind::Unrecognized,
                    format!("Unrecognized login type {name}"),
                )),
            ));
        }
    };

    let done = flows.iter().any(|stages| {
        stages
            .iter()
            .all(|s| completed.iter().any(|c| c == s.as_str()))
    });
    if done {
        state.uia.finish(&session);
        Ok(())
    } else {
        Err(challenge(session, completed, None))
    }
}

/// A plugin's login type as a re-authentication stage: the plugin must
/// vouch for the user who is re-authenticating.
async fn check_plugin_stage(
    state: &AppState,
    plugins: &PluginSet,
    user_id: &UserId,
    login_type: &str,
    data: &Map<String, Value>,
) -> ApiResult<bool> {
    let named = auth_providers::named_user(data).unwrap_or_else(|| user_id.to_string());
    let outcome = auth_providers::check(plugins, named.trim(), login_type, data).await?;
    Ok(vouches_for(state, &outcome, user_id))
}

fn vouches_for(state: &AppState, outcome: &AuthOutcome, user_id: &UserId) -> bool {
    match outcome {
        AuthOutcome::Authenticated {
            user_id: vouched, ..
        } => {
            let vouched = vouched.to_lowercase();
            vouched == user_id.as_str() && user_id.server_name() == state.server_name
        }
        AuthOutcome::NotHandled | AuthOutcome::Denied => false,
    }
}

/// Re-authentication with a password: the identifier must name the same
/// user. Plugins that check passwords are asked first, then (unless
/// `localdb_enabled: false`) the local database.
async fn check_password(
    state: &AppState,
    plugins: &PluginSet,
    user_id: &UserId,
    identifier: &UserIdentifier,
    given: &str,
    data: &Map<String, Value>,
) -> ApiResult<bool> {
    let UserIdentifier::Matrix(id) = identifier else {
        return Ok(false);
    };
    let named = if id.user.starts_with('@') {
        id.user.to_lowercase()
    } else {
        format!("@{}:{}", id.user.to_lowercase(), state.server_name)
    };
    if named != user_id.as_str() || !state.config.password_config.reauth_enabled() {
        return Ok(false);
    }
    match auth_providers::check(plugins, id.user.trim(), auth_providers::PASSWORD, data).await? {
        AuthOutcome::NotHandled if state.config.password_config.localdb_enabled => {}
        outcome => return Ok(vouches_for(state, &outcome, user_id)),
    }
    let Some(user) = state.storage.user(user_id.as_str()).await? else {
        return Ok(false);
    };
    let verified = state.passwords.verify(given, user.password_hash).await;
    Ok(verified != password::Verified::No)
}
