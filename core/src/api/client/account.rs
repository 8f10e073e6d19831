//! The user's own account: `GET /account/whoami`, `POST /account/password`,
//! `POST /account/deactivate`.

use axum::extract::State;
use http::StatusCode;
use ruma::api::{
    client::{
        account::{
            ThirdPartyIdRemovalStatus, change_password::v3 as change_password_endpoint,
            deactivate::v3 as deactivate_endpoint, whoami::v3 as whoami_endpoint,
        },
        uiaa::AuthType,
    },
    error::ErrorKind,
};

use super::uia::{self, Subject};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        plugin_hooks,
        ruma::{Ruma, RumaResponse},
    },
    auth::password,
    state::AppState,
};

/// `GET /_matrix/client/v3/account/whoami`
pub async fn whoami(
    req: Ruma<whoami_endpoint::Request>,
) -> ApiResult<RumaResponse<whoami_endpoint::Response>> {
    let session = req.session();
    let mut response = whoami_endpoint::Response::new(session.user_id.clone(), session.is_guest);
    response.device_id = Some(session.device_id.clone());
    Ok(RumaResponse(response))
}

/// `POST /_matrix/client/v3/account/password`: re-authenticate with the old
/// password, then log out every other device unless `logout_devices: false`.
pub async fn change_password(
    State(state): State<AppState>,
    req: Ruma<change_password_endpoint::Request>,
) -> ApiResult<RumaResponse<change_password_endpoint::Response>> {
    let session = req.session();
    let config = &state.config.password_config;
    if !config.login_enabled() || !config.localdb_enabled {
        return Err(MatrixError::forbidden("Password change disabled"));
    }
    password::check_policy(&req.body.new_password, &config.policy).map_err(|reason| {
        MatrixError::new(StatusCode::BAD_REQUEST, ErrorKind::WeakPassword, reason)
    })?;
    uia::authenticate(
        &state,
        "POST /account/password",
        req.body.auth.as_ref(),
        &[&[AuthType::Password]],
        Subject::User(&session.user_id),
    )
    .await?;

    let hash = state.passwords.hash(&req.body.new_password).await;
    let user_id = session.user_id.as_str();
    state.storage.set_password_hash(user_id, &hash).await?;
    if req.body.logout_devices {
        let others = state
            .storage
            .other_device_ids(user_id, Some(session.device_id.as_str()))
            .await?;
        state.storage.delete_devices(user_id, &others).await?;
        state
            .tokens
            .forget_user(user_id, Some(session.device_id.as_str()));
        super::devices::announce_device_change(&state, user_id).await?;
    }
    Ok(RumaResponse(change_password_endpoint::Response::new()))
}

/// `POST /_matrix/client/v3/account/deactivate`
pub async fn deactivate(
    State(state): State<AppState>,
    req: Ruma<deactivate_endpoint::Request>,
) -> ApiResult<RumaResponse<deactivate_endpoint::Response>> {
    let session = req.session();
    uia::authenticate(
        &state,
        "POST /account/deactivate",
        req.body.auth.as_ref(),
        &[&[AuthType::Password]],
        Subject::User(&session.user_id),
    )
    .await?;
    let user_id = session.user_id.as_str();
    // Third-party rules, as in Synapse: asked once the user proved who
    // they are, told once it is done (the user's own request: not by an
    // admin).
    plugin_hooks::check_can_deactivate(&state, user_id, false).await?;
    state.storage.deactivate_user(user_id).await?;
    state.tokens.forget_user(user_id, None);
    tracing::info!(%user_id, "deactivated account");
    plugin_hooks::deactivation_status_changed(&state, user_id, true, false).await;
    Ok(RumaResponse(deactivate_endpoint::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    )))
}
