//! The call sites' side of the account validity, account data, presence
//! router and account-level third-party rules hook families: each helper
//! skips the work entirely when no plugin registered the callback, so the
//! paths they sit on (every authenticated request, every account data
//! write) cost nothing without such a plugin.

use myelin_plugin_api::{RulesCallback, UserProfile, ValidityCallback};
use serde_json::Value;

use super::error::{ApiResult, MatrixError};
use crate::{auth::tokens::Session, state::AppState, storage::Profile};

/// Synapse's error code for an expired account.
pub const EXPIRED_ACCOUNT: &str = "ORG_MATRIX_EXPIRED_ACCOUNT";

/// `is_user_expired`, asked on every authenticated request but logout:
/// 403 `ORG_MATRIX_EXPIRED_ACCOUNT` when a plugin says the account expired.
/// The access token stays valid, as in Synapse.
pub async fn refuse_expired(state: &AppState, session: &Session) -> ApiResult<()> {
    let plugins = state.plugins.current();
    if !plugins.wants_validity(ValidityCallback::IsUserExpired) {
        return Ok(());
    }
    match plugins.is_user_expired(session.user_id.as_str()).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(super::plugins::refusal(
            EXPIRED_ACCOUNT,
            "User account has expired",
        )),
        Err(_) => Err(super::plugins::failed_plugin()),
    }
}

/// Whether a request path is one an expired user may still use: logging
/// out (Synapse's `allow_expired`).
pub fn allowed_when_expired(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/_matrix/client/") else {
        return false;
    };
    let endpoint = rest.split_once('/').map_or("", |(_, endpoint)| endpoint);
    matches!(endpoint, "logout" | "logout/all")
}

/// `on_user_registration`, after a local user was created (every path:
/// `/register`, the shared-secret admin API, first logins through SSO, JWT
/// or a password provider). Awaited, as in Synapse; failures are only
/// logged.
pub async fn user_registered(state: &AppState, user_id: &str) {
    let plugins = state.plugins.current();
    if plugins.wants_validity(ValidityCallback::OnUserRegistration) {
        plugins.on_user_registration(user_id).await;
    }
}

/// `on_user_login`, after a successful `POST /login`: the login type the
/// client used and, for a login that went through single sign-on, the
/// identity provider's ID.
pub async fn user_logged_in(
    state: &AppState,
    user_id: &str,
    login_type: &str,
    auth_provider_id: Option<&str>,
) {
    let plugins = state.plugins.current();
    if plugins.wants_validity(ValidityCallback::OnUserLogin) {
        plugins
            .on_user_login(user_id, Some(login_type), auth_provider_id)
            .await;
    }
}

/// `on_account_data_updated`, in the background: the client that set the
/// data does not wait for plugins.
pub fn account_data_updated(
    state: &AppState,
    user_id: &str,
    room_id: Option<&str>,
    kind: &str,
    content: &Value,
) {
    let plugins = state.plugins.current();
    if !plugins.wants_account_data_updates() {
        return;
    }
    let (user_id, room_id, kind, content) = (
        user_id.to_owned(),
        room_id.map(str::to_owned),
        kind.to_owned(),
        content.to_string(),
    );
    tokio::spawn(async move {
        plugins
            .on_account_data_updated(&user_id, room_id.as_deref(), &kind, &content)
            .await;
    });
}

/// `on_profile_update`, after a local user's global profile changed.
/// `by_admin` is whether the requester is a server admin (Synapse's
/// meaning, even when admins change their own profile).
pub async fn profile_updated(
    state: &AppState,
    user_id: &str,
    profile: &Profile,
    by_admin: bool,
    deactivation: bool,
) {
    let plugins = state.plugins.current();
    if !plugins.wants_rule(RulesCallback::OnProfileUpdate) {
        return;
    }
    let profile = UserProfile {
        user_id: user_id.to_owned(),
        display_name: profile.displayname.clone(),
        avatar_url: profile.avatar_url.clone(),
    };
    plugins
        .on_profile_update(user_id, &profile, by_admin, deactivation)
        .await;
}

/// `check_can_deactivate_user`: 403 `M_FORBIDDEN` when a plugin refuses.
pub async fn check_can_deactivate(
    state: &AppState,
    user_id: &str,
    by_admin: bool,
) -> ApiResult<()> {
    let plugins = state.plugins.current();
    if plugins.wants_rule(RulesCallback::CheckCanDeactivateUser)
        && !plugins.check_can_deactivate_user(user_id, by_admin).await
    {
        return Err(MatrixError::forbidden(
            "Deactivation of this user is forbidden",
        ));
    }
    Ok(())
}

/// `on_user_deactivation_status_changed`, after a user was deactivated (or
/// reactivated).
pub async fn deactivation_status_changed(
    state: &AppState,
    user_id: &str,
    deactivated: bool,
    by_admin: bool,
) {
    let plugins = state.plugins.current();
    if plugins.wants_rule(RulesCallback::OnUserDeactivationStatusChanged) {
        plugins
            .on_user_deactivation_status_changed(user_id, deactivated, by_admin)
            .await;
    }
}

/// `check_can_shutdown_room`, before an admin deletes a room: 403
/// `M_FORBIDDEN` when a plugin refuses.
pub async fn check_can_shutdown_room(
    state: &AppState,
    requester: &str,
    room_id: &str,
) -> ApiResult<()> {
    let plugins = state.plugins.current();
    if plugins.wants_rule(RulesCallback::CheckCanShutdownRoom)
        && !plugins
            .check_can_shutdown_room(Some(requester), room_id)
            .await
    {
        return Err(MatrixError::forbidden("Shutdown of this room is forbidden"));
    }
    Ok(())
}

/// `on_add_user_third_party_identifier`, then the deprecated
/// `on_threepid_bind` (Synapse calls both), after an identifier was bound
/// to a local user.
pub async fn threepid_added(state: &AppState, user_id: &str, medium: &str, address: &str) {
    let plugins = state.plugins.current();
    if plugins.wants_rule(RulesCallback::OnAddUserThirdPartyIdentifier) {
        plugins
            .on_add_user_third_party_identifier(user_id, medium, address)
            .await;
    }
    if plugins.wants_rule(RulesCallback::OnThreepidBind) {
        plugins.on_threepid_bind(user_id, medium, address).await;
    }
}

/// `on_remove_user_third_party_identifier`, after an identifier was removed
/// from a local user.
pub async fn threepid_removed(state: &AppState, user_id: &str, medium: &str, address: &str) {
    let plugins = state.plugins.current();
    if plugins.wants_rule(RulesCallback::OnRemoveUserThirdPartyIdentifier) {
        plugins
            .on_remove_user_third_party_identifier(user_id, medium, address)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_logout_is_allowed_to_expired_users() {
        assert!(allowed_when_expired("/_matrix/client/v3/logout"));
        assert!(allowed_when_expired("/_matrix/client/r0/logout/all"));
        assert!(!allowed_when_expired("/_matrix/client/v3/sync"));
        assert!(!allowed_when_expired("/_matrix/client/v3/logout/other"));
        assert!(!allowed_when_expired("/_synapse/admin/v1/logout"));
    }
}
