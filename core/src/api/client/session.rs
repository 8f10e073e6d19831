//! Session management: `GET/POST /login`, `POST /refresh`, `POST /logout`,
//! `POST /logout/all` ([spec](https://spec.matrix.org/latest/client-server-api/#client-authentication)).

use std::time::Duration;

use axum::extract::State;
use http::StatusCode;
use ruma::{
    OwnedUserId,
    api::client::{
        session::{
            get_login_types::v3::{
                self as login_types, IdentityProvider, LoginType, PasswordLoginType, SsoLoginType,
                TokenLoginType,
            },
            login::v3::{self as login_endpoint, DiscoveryInfo, LoginInfo, Password},
            logout::v3 as logout_endpoint,
            logout_all::v3 as logout_all_endpoint,
            refresh_token::v3 as refresh_endpoint,
        },
        uiaa::{MatrixUserIdentifier, UserIdentifier},
    },
};

use myelin_plugin_api::{AuthCallback, AuthOutcome};

use super::auth_providers::{self, PASSWORD};
use crate::{
    api::{
        error::{ApiResult, MatrixError},
        ruma::{self as extract, Ruma, RumaResponse},
    },
    auth::{jwt, password, tokens},
    state::AppState,
    storage::{UserRecord, now_ms},
};

/// `GET /_matrix/client/v3/login`
pub async fn get_login_types(
    State(state): State<AppState>,
    _req: Ruma<login_types::Request>,
) -> ApiResult<RumaResponse<login_types::Response>> {
    let plugins = state.plugins.current();
    let mut flows = Vec::new();
    if auth_providers::password_offered(&state, &plugins) {
        flows.push(LoginType::Password(PasswordLoginType::new()));
    }
    if state.jwt.is_some() {
        flows.push(
            LoginType::new(jwt::LOGIN_TYPE, Default::default())
                .map_err(|_| MatrixError::internal())?,
        );
    }
    for login_type in auth_providers::custom_login_types(&plugins) {
        flows.push(
            LoginType::new(&login_type, Default::default()).map_err(|_| MatrixError::internal())?,
        );
    }
    if let Some(oidc) = &state.oidc {
        let mut sso = SsoLoginType::new();
        sso.identity_providers = oidc
            .providers
            .iter()
            .map(|p| {
                let mut idp =
                    IdentityProvider::new(p.id.clone(), p.config.display_name().to_owned());
                idp.icon = p.config.idp_icon.as_deref().map(Into::into);
                idp.brand = p.config.idp_brand.as_deref().map(Into::into);
                idp
            })
            .collect();
        flows.push(LoginType::Sso(sso));
        flows.push(LoginType::Token(TokenLoginType::new()));
    }
    Ok(RumaResponse(login_types::Response::new(flows)))
}

/// The same answer for an unknown user and a wrong password.
fn invalid_credentials() -> MatrixError {
    MatrixError::forbidden("Invalid username or password")
}

/// `POST /_matrix/client/v3/login`
pub async fn login(
    State(state): State<AppState>,
    req: Ruma<login_endpoint::Request>,
) -> ApiResult<axum::response::Response> {
    let ip = req.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    state
        .rate_limits
        .login_address
        .check(&ip, true)
        .map_err(MatrixError::limit_exceeded)?;

    let body = req.body;
    let request_info = (req.user_agent.clone(), ip.clone());
    let plugins = state.plugins.current();
    // How the single sign-on went, for an SSO login.
    let mut sso = None;
    let user = match &body.login_info {
        LoginInfo::Password(credentials) => {
            password_login(&state, credentials, &body.login_info.data(), request_info).await?
        }
        info if info.login_type() == jwt::LOGIN_TYPE && state.jwt.is_some() => {
            jwt_login(&state, &info.data(), &req.user_agent, &ip).await?
        }
        LoginInfo::Token(login_token) if state.oidc.is_some() => {
            let (user, redeemed) = token_login(&state, &login_token.token).await?;
            sso = Some(redeemed);
            user
        }
        info if plugins.login_type_fields(info.login_type()).is_some() => {
            plugin_login(&state, info.login_type(), &info.data(), request_info).await?
        }
        _ => {
            return Err(MatrixError::unknown(
                StatusCode::BAD_REQUEST,
                "Unknown login type",
            ));
        }
    };
    if user.deactivated {
        return Err(MatrixError::new(
            StatusCode::FORBIDDEN,
            ruma::api::error::ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ));
    }

    let login = start_login_session(
        &state,
        &user.user_id,
        LoginOptions {
            device_id: body.device_id.map(|d| d.to_string()),
            display_name: body.initial_device_display_name,
            refresh_token: body.refresh_token,
            ip: req.client_ip.map(|ip| ip.to_string()),
        },
    )
    .await?;
    // `on_user_login` names the identity provider of an SSO login.
    let auth_provider_id = sso.as_ref().map(|s| s.idp_id.clone());
    let (provider_session, extra_attributes) = match sso {
        Some(sso) => (sso.provider_session, sso.extra_attributes),
        None => (None, Default::default()),
    };
    if let Some(session) = provider_session {
        state
            .storage
            .record_device_auth_provider(
                &user.user_id,
                &login.device_id,
                &session.idp_id,
                &session.session_id,
            )
            .await?;
    }
    crate::api::plugin_hooks::user_logged_in(
        &state,
        &user.user_id,
        body.login_info.login_type(),
        auth_provider_id.as_deref(),
    )
    .await;
    let mut response = login_endpoint::Response::new(
        parse_user_id(&user.user_id)?,
        login.access_token,
        login.device_id.into(),
    );
    response.refresh_token = login.refresh_token;
    response.expires_in = login.expires_in;
    if let Some(base_url) = &state.config.public_baseurl {
        response.well_known = Some(DiscoveryInfo::new(login_endpoint::HomeserverInfo::new(
            base_url.clone(),
        )));
    }
    Ok(with_extra_attributes(response, extra_attributes))
}

/// The login response, with a mapping plugin's extra fields (Synapse's
/// `get_extra_attributes`) where the spec's own fields leave room.
fn with_extra_attributes(
    response: login_endpoint::Response,
    extra: serde_json::Map<String, serde_json::Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use ruma::api::OutgoingResponse;
    if extra.is_empty() {
        return RumaResponse(response).into_response();
    }
    let body = response
        .try_into_http_response::<Vec<u8>>()
        .ok()
        .and_then(|http| serde_json::from_slice::<serde_json::Value>(http.body()).ok());
    let Some(serde_json::Value::Object(mut body)) = body else {
        return MatrixError::internal().into_response();
    };
    for (key, value) in extra {
        body.entry(key).or_insert(value);
    }
    axum::Json(serde_json::Value::Object(body)).into_response()
}

/// `m.login.password`, with Synapse's order: the plugins that check
/// passwords first, in order, then (unless `localdb_enabled: false`) the
/// local database. A user a plugin vouches for is created if new.
async fn password_login(
    state: &AppState,
    credentials: &Password,
    data: &serde_json::Map<String, serde_json::Value>,
    request_info: (Option<String>, String),
) -> ApiResult<UserRecord> {
    let plugins = state.plugins.current();
    if !auth_providers::password_offered(state, &plugins) {
        return Err(MatrixError::unknown(
            StatusCode::BAD_REQUEST,
            "Password login has been disabled.",
        ));
    }
    #[allow(deprecated)] // the legacy `user` field is still sent by old clients
    let named = match (&credentials.identifier, &credentials.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (Some(identifier), _) => {
            return threepid_login(state, identifier, &credentials.password, data, request_info)
                .await;
        }
        (None, Some(user)) => user.clone(),
        (None, None) => return Err(MatrixError::missing_param("Missing identifier")),
    };
    let user_id = qualify(&named, state);

    state
        .rate_limits
        .login_account
        .check(&user_id, true)
        .map_err(MatrixError::limit_exceeded)?;
    state
        .rate_limits
        .login_failed_attempts
        .check(&user_id, false)
        .map_err(MatrixError::limit_exceeded)?;

    match auth_providers::check(&plugins, named.trim(), PASSWORD, data).await? {
        AuthOutcome::Authenticated {
            user_id,
            display_name,
        } => {
            return auth_providers::provision_user(state, &user_id, display_name, request_info)
                .await;
        }
        AuthOutcome::Denied => {
            state.rate_limits.login_failed_attempts.record(&user_id);
            return Err(invalid_credentials());
        }
        AuthOutcome::NotHandled if !state.config.password_config.localdb_enabled => {
            state.rate_limits.login_failed_attempts.record(&user_id);
            return Err(invalid_credentials());
        }
        AuthOutcome::NotHandled => {}
    }

    let user = state.storage.user(&user_id).await?;
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let verified = state.passwords.verify(&credentials.password, stored).await;

    let user = match (user, &verified) {
        (Some(user), password::Verified::Yes | password::Verified::YesRehash(_)) => user,
        _ => {
            state.rate_limits.login_failed_attempts.record(&user_id);
            return Err(invalid_credentials());
        }
    };
    if let password::Verified::YesRehash(new_hash) = verified {
        state
            .storage
            .set_password_hash(&user.user_id, &new_hash)
            .await?;
        tracing::info!(user_id = %user.user_id, "rehashed a bcrypt password with argon2id");
    }
    Ok(user)
}

/// A password login naming a third-party identifier, in Synapse's order:
/// the plugins (`check_3pid_auth`) first; if none vouches for the user, the
/// identifiers bound on this server (`user_threepids`) name the user, whose
/// password is then checked as for `m.id.user`.
async fn threepid_login(
    state: &AppState,
    identifier: &UserIdentifier,
    password: &str,
    data: &serde_json::Map<String, serde_json::Value>,
    request_info: (Option<String>, String),
) -> ApiResult<UserRecord> {
    let Some((medium, address)) = identifier.as_third_party_id() else {
        return Err(invalid_credentials());
    };
    let address = match medium.as_str() {
        "email" => address.trim().to_lowercase(),
        _ => address.to_owned(),
    };
    state
        .rate_limits
        .login_account
        .check(&address, true)
        .map_err(MatrixError::limit_exceeded)?;
    let outcome = state
        .plugins
        .current()
        .check_threepid_auth(medium.as_str(), &address, password)
        .await;
    if let AuthOutcome::Authenticated {
        user_id,
        display_name,
    } = outcome
    {
        return auth_providers::provision_user(state, &user_id, display_name, request_info).await;
    }
    let Some(user_id) = state
        .storage
        .user_by_threepid(medium.as_str(), &address)
        .await?
    else {
        return Err(invalid_credentials());
    };
    let credentials = Password::new(
        UserIdentifier::Matrix(MatrixUserIdentifier::new(user_id)),
        password.to_owned(),
    );
    Box::pin(password_login(state, &credentials, data, request_info)).await
}

/// A login type a plugin registered: its checkers are asked in order, and
/// the user the first one vouches for is logged in (created if new).
async fn plugin_login(
    state: &AppState,
    login_type: &str,
    data: &serde_json::Map<String, serde_json::Value>,
    request_info: (Option<String>, String),
) -> ApiResult<UserRecord> {
    let named = auth_providers::named_user(data)
        .ok_or_else(|| MatrixError::missing_param("Missing identifier"))?;
    let user_id = qualify(&named, state);
    state
        .rate_limits
        .login_account
        .check(&user_id, true)
        .map_err(MatrixError::limit_exceeded)?;
    state
        .rate_limits
        .login_failed_attempts
        .check(&user_id, false)
        .map_err(MatrixError::limit_exceeded)?;
    let plugins = state.plugins.current();
    match auth_providers::check(&plugins, named.trim(), login_type, data).await? {
        AuthOutcome::Authenticated {
            user_id,
            display_name,
        } => auth_providers::provision_user(state, &user_id, display_name, request_info).await,
        AuthOutcome::NotHandled | AuthOutcome::Denied => {
            state.rate_limits.login_failed_attempts.record(&user_id);
            Err(invalid_credentials())
        }
    }
}

/// `org.matrix.login.jwt`: the user a valid token names, created on first
/// login (as Synapse does) with the token's display name if it carries one.
/// An invalid token gets 403 `M_FORBIDDEN`.
async fn jwt_login(
    state: &AppState,
    data: &serde_json::Map<String, serde_json::Value>,
    user_agent: &Option<String>,
    ip: &str,
) -> ApiResult<UserRecord> {
    let verifier = state.jwt.as_ref().ok_or_else(MatrixError::internal)?;
    let token = data
        .get("token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| MatrixError::forbidden("Token field for JWT is missing"))?;
    let identity = verifier.verify(token).map_err(|reason| {
        tracing::info!(%reason, "refused a JWT login");
        MatrixError::forbidden(format!("JWT validation failed: {reason}"))
    })?;
    let user_id = format!("@{}:{}", identity.localpart, state.server_name);
    if let Some(user) = state.storage.user(&user_id).await? {
        return Ok(user);
    }
    auth_providers::register_on_first_login(
        state,
        &identity.localpart,
        identity.display_name,
        (user_agent.clone(), ip.to_owned()),
        None,
    )
    .await
}

/// `m.login.token`: a `loginToken` single sign-on handed to the client,
/// good for one login within its lifetime; otherwise 403 `M_FORBIDDEN`.
/// With the identity provider's session, for back-channel logout.
async fn token_login(
    state: &AppState,
    token: &str,
) -> ApiResult<(UserRecord, crate::auth::oidc::SsoLogin)> {
    let login = state
        .oidc
        .as_ref()
        .and_then(|oidc| oidc.redeem_login_token(token))
        .ok_or_else(|| MatrixError::forbidden("Invalid login token"))?;
    let user = state
        .storage
        .user(&login.user_id)
        .await?
        .ok_or_else(|| MatrixError::forbidden("Invalid login token"))?;
    Ok((user, login.sso))
}

/// `@alice:server` from `alice`, `@alice:server` or `@Alice:server`.
fn qualify(named: &str, state: &AppState) -> String {
    let named = named.trim();
    if named.starts_with('@') {
        named.to_lowercase()
    } else {
        format!("@{}:{}", named.to_lowercase(), state.server_name)
    }
}

pub fn parse_user_id(user_id: &str) -> ApiResult<OwnedUserId> {
    OwnedUserId::try_from(user_id).map_err(|_| MatrixError::internal())
}

/// How a new login session is set up.
#[derive(Default)]
pub struct LoginOptions {
    pub device_id: Option<String>,
    pub display_name: Option<String>,
    pub refresh_token: bool,
    pub ip: Option<String>,
}

/// The tokens of a new login session.
pub struct LoginSession {
    pub device_id: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<Duration>,
}

/// Creates (or re-uses) the device and issues its tokens. Any token the
/// device had before is revoked, as the spec asks for a re-used device ID;
/// its encryption keys stay, so a client that logs in again keeps its
/// identity.
pub async fn start_login_session(
    state: &AppState,
    user_id: &str,
    options: LoginOptions,
) -> ApiResult<LoginSession> {
    let device_id = options.device_id.unwrap_or_else(tokens::new_device_id);
    let existing = state.storage.device(user_id, &device_id).await?.is_some();
    if existing {
        state
            .storage
            .revoke_device_tokens(user_id, &device_id)
            .await?;
        state.tokens.forget_device(user_id, &device_id);
    }
    state
        .storage
        .upsert_device(
            user_id,
            &device_id,
            options.display_name.as_deref(),
            options.ip.as_deref(),
        )
        .await?;
    if !existing {
        super::devices::announce_device_change(state, user_id).await?;
    }
    issue_tokens(state, user_id, &device_id, options.refresh_token, None).await
}

/// Issues an access token (and a refresh token if asked) for an existing device.
async fn issue_tokens(
    state: &AppState,
    user_id: &str,
    device_id: &str,
    with_refresh: bool,
    session_end_ts: Option<i64>,
) -> ApiResult<LoginSession> {
    let config = &state.config;
    let now = now_ms();
    let session_end_ts = session_end_ts.or_else(|| {
        config
            .session_lifetime
            .map(|d| now + d.0.as_millis() as i64)
    });
    let lifetime = if with_refresh {
        Some(config.refreshable_access_token_lifetime.0)
    } else {
        config.nonrefreshable_access_token_lifetime.map(|d| d.0)
    };
    let mut expires_ts = lifetime.map(|d| now + d.as_millis() as i64);
    if let Some(end) = session_end_ts {
        expires_ts = Some(expires_ts.map_or(end, |ts| ts.min(end)));
    }

    let refresh_token = with_refresh.then(tokens::new_refresh_token);
    let refresh_hash = refresh_token.as_deref().map(tokens::hash_token);
    if let Some(hash) = &refresh_hash {
        let refresh_expires = config
            .refresh_token_lifetime
            .map(|d| now + d.0.as_millis() as i64);
        state
            .storage
            .insert_refresh_token(hash, user_id, device_id, refresh_expires, session_end_ts)
            .await?;
    }
    let access_token = tokens::new_access_token();
    state
        .storage
        .insert_access_token(
            &tokens::hash_token(&access_token),
            user_id,
            device_id,
            expires_ts,
            refresh_hash.as_deref(),
        )
        .await?;
    Ok(LoginSession {
        device_id: device_id.to_owned(),
        access_token,
        refresh_token,
        expires_in: expires_ts.map(|ts| Duration::from_millis((ts - now).max(0) as u64)),
    })
}

/// `POST /_matrix/client/v3/refresh`
pub async fn refresh(
    State(state): State<AppState>,
    req: Ruma<refresh_endpoint::Request>,
) -> ApiResult<RumaResponse<refresh_endpoint::Response>> {
    let hash = tokens::hash_token(&req.body.refresh_token);
    let record = state
        .storage
        .take_refresh_token(&hash)
        .await?
        .ok_or_else(|| MatrixError::unknown_token(false))?;
    state
        .tokens
        .forget_device(&record.user_id, &record.device_id);
    let now = now_ms();
    if record.expires_ts.is_some_and(|ts| ts <= now)
        || record.session_end_ts.is_some_and(|ts| ts <= now)
    {
        return Err(MatrixError::unknown_token(false));
    }
    let login = issue_tokens(
        &state,
        &record.user_id,
        &record.device_id,
        true,
        record.session_end_ts,
    )
    .await?;
    let mut response = refresh_endpoint::Response::new(login.access_token);
    response.refresh_token = login.refresh_token;
    response.expires_in_ms = login.expires_in;
    Ok(RumaResponse(response))
}

/// `POST /_matrix/client/v3/logout`: ends this session and deletes its device.
pub async fn logout(
    State(state): State<AppState>,
    parts: http::request::Parts,
    req: Ruma<logout_endpoint::Request>,
) -> ApiResult<RumaResponse<logout_endpoint::Response>> {
    let session = req.session();
    let user_id = session.user_id.as_str();
    state
        .storage
        .delete_devices(user_id, &[session.device_id.to_string()])
        .await?;
    state
        .tokens
        .forget_device(user_id, session.device_id.as_str());
    super::devices::announce_device_change(&state, user_id).await?;
    let token = extract::access_token(&parts).unwrap_or_default();
    tell_logged_out(&state, user_id, &[(session.device_id.to_string(), token)]);
    Ok(RumaResponse(logout_endpoint::Response::new()))
}

/// `POST /_matrix/client/v3/logout/all`: ends every session of the user.
pub async fn logout_all(
    State(state): State<AppState>,
    parts: http::request::Parts,
    req: Ruma<logout_all_endpoint::Request>,
) -> ApiResult<RumaResponse<logout_all_endpoint::Response>> {
    let session = req.session();
    let user_id = session.user_id.as_str();
    let devices = state.storage.other_device_ids(user_id, None).await?;
    state.storage.delete_devices(user_id, &devices).await?;
    state.tokens.forget_user(user_id, None);
    super::devices::announce_device_change(&state, user_id).await?;
    // Tokens are stored hashed: only the one of this request is known.
    let token = extract::access_token(&parts).unwrap_or_default();
    let ended: Vec<(String, &str)> = devices
        .into_iter()
        .map(|device| {
            let token = if device == session.device_id.as_str() {
                token
            } else {
                ""
            };
            (device, token)
        })
        .collect();
    tell_logged_out(&state, user_id, &ended);
    Ok(RumaResponse(logout_all_endpoint::Response::new()))
}

/// Tells password auth provider plugins about ended sessions, after the
/// response: their failures are only logged, and a slow plugin does not
/// hold up the logout.
pub(super) fn tell_logged_out(state: &AppState, user_id: &str, ended: &[(String, &str)]) {
    let plugins = state.plugins.current();
    if !plugins.wants_auth(AuthCallback::OnLoggedOut) {
        return;
    }
    let user_id = user_id.to_owned();
    let ended: Vec<(String, String)> = ended
        .iter()
        .map(|(device, token)| (device.clone(), (*token).to_owned()))
        .collect();
    tokio::spawn(async move {
        for (device_id, token) in ended {
            plugins
                .on_logged_out(&user_id, Some(&device_id), &token)
                .await;
        }
    });
}
