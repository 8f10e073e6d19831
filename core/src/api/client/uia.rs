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

/// Checks the `auth` of a request against `flows`; `Ok` once a flow is complete.
pub async fn authenticate(
    state: &AppState,
    operation: &str,
    auth: Option<&AuthData>,
    flows: &[&[AuthType]],
    subject: Subject<'_>,
) -> ApiResult<()> {
    let challenge = |session: String, completed: Vec<String>, error: Option<StandardErrorBody>| {
        let mut info = UiaaInfo::new(
            flows
                .iter()
                .map(|stages| AuthFlow::new(stages.to_vec()))
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
            if check_password(state, user_id, &p.identifier, &p.password).await? {
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

/// Re-authentication with a password: the identifier must name the same user.
async fn check_password(
    state: &AppState,
    user_id: &UserId,
    identifier: &UserIdentifier,
    given: &str,
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
    let Some(user) = state.storage.user(user_id.as_str()).await? else {
        return Ok(false);
    };
    let verified = state.passwords.verify(given, user.password_hash).await;
    Ok(verified != password::Verified::No)
}
