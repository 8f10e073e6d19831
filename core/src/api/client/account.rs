//! The user's own account: `GET /account/whoami`, `POST /account/password`,
//! `POST /account/deactivate`, and the deactivation the admin API shares.

use axum::extract::State;
use http::StatusCode;
use ruma::{
    RoomId, UserId,
    api::{
        client::{
            account::{
                ThirdPartyIdRemovalStatus, change_password::v3 as change_password_endpoint,
                deactivate::v3 as deactivate_endpoint, whoami::v3 as whoami_endpoint,
            },
            uiaa::AuthType,
        },
        error::ErrorKind,
    },
};

use super::{
    membership::change_membership,
    profile, threepids,
    uia::{self, Subject},
};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        plugin_hooks,
        ruma::{Ruma, RumaResponse},
    },
    auth::password,
    state::AppState,
    storage::Profile,
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
    // The user's own request: not by an admin.
    deactivate_account(&state, &session.user_id, false, req.body.erase).await?;
    Ok(RumaResponse(deactivate_endpoint::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    )))
}

/// Deactivates a local account, for the user's own request and for the
/// admin API alike, in Synapse's order: the third-party rules plugins are
/// asked (`check_can_deactivate_user`; 403 `M_FORBIDDEN` and nothing
/// changes when one refuses), the user's third-party identifiers are
/// removed (`on_remove_user_third_party_identifier` for each), the account
/// is marked deactivated and its devices and tokens deleted, with `erase`
/// the display name and avatar are cleared (`on_profile_update` with
/// `deactivation`), the plugins are told
/// (`on_user_deactivation_status_changed`), and the user leaves every room
/// they are joined to, invited to or knocking on.
pub(crate) async fn deactivate_account(
    state: &AppState,
    user: &UserId,
    by_admin: bool,
    erase: bool,
) -> ApiResult<()> {
    let user_id = user.as_str();
    plugin_hooks::check_can_deactivate(state, user_id, by_admin).await?;
    for threepid in state.storage.user_threepids(user_id).await? {
        threepids::unbind(state, user_id, &threepid.medium, &threepid.address).await?;
    }
    state.storage.deactivate_user(user_id).await?;
    state.tokens.forget_user(user_id, None);
    if erase {
        profile::save_profile(
            state,
            user,
            &Profile::default(),
            &["displayname", "avatar_url"],
            Some(by_admin),
            true,
        )
        .await?;
    }
    tracing::info!(%user_id, by_admin, erase, "deactivated account");
    plugin_hooks::deactivation_status_changed(state, user_id, true, by_admin).await;
    for membership in ["join", "invite", "knock"] {
        for room_id in state
            .storage
            .rooms_with_membership(user_id, membership)
            .await?
        {
            let Ok(room_id) = RoomId::parse(&room_id) else {
                continue;
            };
            if let Err(err) =
                change_membership(state, &room_id, user, user, "leave", None, None).await
            {
                tracing::warn!(%user_id, %room_id, error = ?err, "a deactivated user could not leave a room");
            }
        }
    }
    Ok(())
}
