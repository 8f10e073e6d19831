//! Account registration: `POST /register` and `GET /register/available`
//! ([spec](https://spec.matrix.org/latest/client-server-api/#account-registration-and-management)).
//!
//! Closed unless `enable_registration` is set. Open registration uses
//! user-interactive auth with `m.login.dummy`; guests need `allow_guest_access`.

use axum::extract::State;
use http::StatusCode;
use myelin_plugin_api::{AuthCallback, Registration};
use rand::Rng;
use ruma::api::{
    client::{
        account::{
            get_username_availability::v3 as availability,
            register::{RegistrationKind, v3 as register_endpoint},
        },
        uiaa::AuthType,
    },
    error::ErrorKind,
};
use serde_json::json;

use super::{
    session::{LoginOptions, parse_user_id, start_login_session},
    uia::{self, Subject},
};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{Ruma, RumaResponse},
    },
    auth::{password, username},
    state::AppState,
    storage::NewUser,
};

fn invalid_username(reason: &str) -> MatrixError {
    MatrixError::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, reason)
}

fn user_in_use() -> MatrixError {
    MatrixError::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::UserInUse,
        "User ID already taken.",
    )
}

fn registration_disabled() -> MatrixError {
    MatrixError::forbidden("Registration has been disabled")
}

/// A fresh all-digit localpart, the form Synapse reserves for generated IDs.
fn generated_localpart() -> String {
    rand::thread_rng()
        .gen_range(1_000_000_000u64..10_000_000_000)
        .to_string()
}

/// `POST /_matrix/client/v3/register`
pub async fn register(
    State(state): State<AppState>,
    req: Ruma<register_endpoint::Request>,
) -> ApiResult<RumaResponse<register_endpoint::Response>> {
    let ip = req.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    state
        .rate_limits
        .registration
        .check(&ip, true)
        .map_err(MatrixError::limit_exceeded)?;
    let body = &req.body;
    let guest = body.kind == RegistrationKind::Guest;
    let config = &state.config;

    if guest {
        if !config.allow_guest_access {
            return Err(MatrixError::new(
                StatusCode::FORBIDDEN,
                ErrorKind::GuestAccessForbidden,
                "Guest access is disabled",
            ));
        }
    } else if !config.enable_registration {
        return Err(registration_disabled());
    }

    // Checks that need no authentication come first, as in Synapse, so a
    // client learns of a taken name before it walks through the auth flow.
    let desired = match (&body.username, guest) {
        (Some(name), false) => {
            let localpart = name.clone();
            username::check_localpart(&localpart, state.server_name.as_str(), false)
                .map_err(|e| invalid_username(e.0))?;
            if state
                .storage
                .user(&format!("@{localpart}:{}", state.server_name))
                .await?
                .is_some()
            {
                return Err(user_in_use());
            }
            Some(localpart)
        }
        _ => None,
    };
    let password_hash = if guest {
        None
    } else {
        let password = body
            .password
            .as_deref()
            .ok_or_else(|| MatrixError::missing_param("Missing param: password"))?;
        password::check_policy(password, &config.password_config.policy).map_err(|reason| {
            MatrixError::new(StatusCode::BAD_REQUEST, ErrorKind::WeakPassword, reason)
        })?;
        Some(state.passwords.hash(password).await)
    };

    if !guest {
        uia::authenticate(
            &state,
            "POST /register",
            body.auth.as_ref(),
            &[&[AuthType::Dummy]],
            Subject::Registration,
        )
        .await?;
    }

    let (desired, display_name) = if guest {
        (desired, None)
    } else {
        from_plugins(&state, body, desired).await?
    };

    let shadow_banned = match state
        .plugins
        .current()
        .check_registration_for_spam(
            None,
            desired.as_deref(),
            &[(req.user_agent.clone().unwrap_or_default(), ip.clone())],
            None,
        )
        .await
    {
        Registration::Allow => false,
        Registration::ShadowBan => true,
        Registration::Deny { errcode, message } => {
            return Err(crate::api::plugins::refusal(&errcode, &message));
        }
    };

    // A generated ID may collide with an existing one: try a few.
    let mut user_id = None;
    for _ in 0..5 {
        let localpart = desired.clone().unwrap_or_else(generated_localpart);
        let candidate = format!("@{localpart}:{}", state.server_name);
        let created = state
            .storage
            .create_user(&NewUser {
                user_id: candidate.clone(),
                password_hash: password_hash.clone(),
                is_guest: guest,
                displayname: Some(display_name.clone().unwrap_or(localpart)),
                shadow_banned,
                ..NewUser::default()
            })
            .await?;
        if created {
            user_id = Some(candidate);
            break;
        }
        if desired.is_some() {
            return Err(user_in_use());
        }
    }
    let user_id = user_id.ok_or_else(MatrixError::internal)?;
    tracing::info!(%user_id, guest, "registered user");
    crate::api::plugin_hooks::user_registered(&state, &user_id).await;

    let mut response = register_endpoint::Response::new(parse_user_id(&user_id)?);
    if body.inhibit_login {
        return Ok(RumaResponse(response));
    }
    let login = start_login_session(
        &state,
        &user_id,
        LoginOptions {
            device_id: body.device_id.as_ref().map(|d| d.to_string()),
            display_name: body.initial_device_display_name.clone(),
            refresh_token: body.refresh_token,
            ip: req.client_ip.map(|ip| ip.to_string()),
        },
    )
    .await?;
    response.access_token = Some(login.access_token);
    response.device_id = Some(login.device_id.into());
    response.refresh_token = login.refresh_token;
    response.expires_in = login.expires_in;
    Ok(RumaResponse(response))
}

/// The localpart and display name password auth provider plugins choose for
/// a new user (`get_username_for_registration`,
/// `get_displayname_for_registration`), asked once user-interactive auth is
/// complete; a forced localpart is checked like a requested one.
async fn from_plugins(
    state: &AppState,
    body: &register_endpoint::Request,
    desired: Option<String>,
) -> ApiResult<(Option<String>, Option<String>)> {
    let plugins = state.plugins.current();
    let wants_username = plugins.wants_auth(AuthCallback::GetUsernameForRegistration);
    let wants_displayname = plugins.wants_auth(AuthCallback::GetDisplaynameForRegistration);
    if !wants_username && !wants_displayname {
        return Ok((desired, None));
    }
    // Only the dummy stage exists for registration here.
    let uia_results = json!({ "m.login.dummy": true }).to_string();
    let params = json!({
        "username": body.username,
        "device_id": body.device_id,
        "initial_device_display_name": body.initial_device_display_name,
        "inhibit_login": body.inhibit_login,
        "refresh_token": body.refresh_token,
    })
    .to_string();
    let failed =
        |_| MatrixError::forbidden("This request was refused because a server plugin failed");
    let mut desired = desired;
    if let Some(forced) = plugins
        .get_username_for_registration(&uia_results, &params)
        .await
        .map_err(failed)?
    {
        let localpart = forced.to_lowercase();
        username::check_localpart(&localpart, state.server_name.as_str(), false)
            .map_err(|e| invalid_username(e.0))?;
        if state
            .storage
            .user(&format!("@{localpart}:{}", state.server_name))
            .await?
            .is_some()
        {
            return Err(user_in_use());
        }
        desired = Some(localpart);
    }
    let display_name = plugins
        .get_displayname_for_registration(&uia_results, &params)
        .await
        .map_err(failed)?;
    Ok((desired, display_name))
}

/// `GET /_matrix/client/v3/register/available`
pub async fn get_username_availability(
    State(state): State<AppState>,
    req: Ruma<availability::Request>,
) -> ApiResult<RumaResponse<availability::Response>> {
    if !state.config.enable_registration {
        return Err(registration_disabled());
    }
    let localpart = req.body.username;
    username::check_localpart(&localpart, state.server_name.as_str(), false)
        .map_err(|e| invalid_username(e.0))?;
    if state
        .storage
        .user(&format!("@{localpart}:{}", state.server_name))
        .await?
        .is_some()
    {
        return Err(user_in_use());
    }
    Ok(RumaResponse(availability::Response::new(true)))
}
