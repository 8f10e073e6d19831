//! `GET|POST /_synapse/admin/v1/register`: shared-secret registration,
//! exactly as Synapse's admin API: a single-use nonce, then an HMAC-SHA1 over
//! `nonce\0username\0password\0admin|notadmin[\0user_type]`.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use axum::{Json as JsonResponse, extract::State};
use http::StatusCode;
use parking_lot::Mutex;
use rand::RngCore;
use ruma::api::error::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::{
    api::{
        client::session::{LoginOptions, start_login_session},
        error::{ApiResult, MatrixError},
        json::Json,
    },
    auth::{shared_secret::registration_mac, username},
    logging::REGISTRATION_DEBUG_TARGET,
    state::AppState,
    storage::NewUser,
};

/// Synapse's nonce lifetime.
const NONCE_LIFETIME: Duration = Duration::from_secs(60);

/// User types Synapse accepts (`synapse.api.constants.UserTypes`).
pub const USER_TYPES: &[&str] = &["support", "bot"];

/// Outstanding nonces; each is good for one attempt within its lifetime.
#[derive(Default)]
pub struct Nonces(Mutex<HashMap<String, Instant>>);

impl Nonces {
    fn issue(&self) -> String {
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        let nonce = hex::encode(bytes);
        let mut nonces = self.0.lock();
        nonces.retain(|_, issued| issued.elapsed() < NONCE_LIFETIME);
        nonces.insert(nonce.clone(), Instant::now());
        nonce
    }

    /// Consumes the nonce; true if it was issued and has not expired.
    fn take(&self, nonce: &str) -> bool {
        self.0
            .lock()
            .remove(nonce)
            .is_some_and(|issued| issued.elapsed() < NONCE_LIFETIME)
    }
}

fn secret(state: &AppState) -> ApiResult<&str> {
    state
        .registration_secret
        .as_ref()
        .map(|s| s.0.as_str())
        .ok_or_else(|| {
            MatrixError::unknown(
                StatusCode::BAD_REQUEST,
                "Shared secret registration is not enabled",
            )
        })
}

pub async fn get_nonce(State(state): State<AppState>) -> ApiResult<JsonResponse<Value>> {
    secret(&state)?;
    Ok(JsonResponse(
        json!({ "nonce": state.registration_nonces.issue() }),
    ))
}

#[derive(Deserialize)]
pub struct SharedSecretRegistration {
    nonce: Option<String>,
    username: Option<Value>,
    password: Option<Value>,
    #[serde(default)]
    admin: bool,
    displayname: Option<String>,
    user_type: Option<String>,
    mac: Option<String>,
}

fn string_field(value: Option<Value>, name: &str) -> ApiResult<String> {
    match value {
        Some(Value::String(s)) if !s.contains('\0') && s.len() <= 512 => Ok(s),
        Some(Value::String(_)) => Err(MatrixError::unknown(
            StatusCode::BAD_REQUEST,
            format!("Invalid {name}"),
        )),
        _ => Err(MatrixError::bad_json(format!("{name} must be specified"))),
    }
}

pub async fn register_with_shared_secret(
    State(state): State<AppState>,
    Json(body): Json<SharedSecretRegistration>,
) -> ApiResult<JsonResponse<Value>> {
    let secret = secret(&state)?;
    let nonce = body
        .nonce
        .ok_or_else(|| MatrixError::bad_json("nonce must be specified"))?;
    if !state.registration_nonces.take(&nonce) {
        return Err(MatrixError::unknown(
            StatusCode::BAD_REQUEST,
            "unrecognised nonce",
        ));
    }
    let username = string_field(body.username, "username")?;
    let password = string_field(body.password, "password")?;
    if let Some(user_type) = &body.user_type
        && !USER_TYPES.contains(&user_type.as_str())
    {
        return Err(MatrixError::unknown(
            StatusCode::BAD_REQUEST,
            "Invalid user type",
        ));
    }
    let received = body
        .mac
        .ok_or_else(|| MatrixError::bad_json("mac must be specified"))?;

    let expected = registration_mac(
        secret,
        &nonce,
        &username,
        &password,
        body.admin,
        body.user_type.as_deref(),
    );
    if !bool::from(
        expected
            .as_bytes()
            .ct_eq(received.to_ascii_lowercase().as_bytes()),
    ) {
        // Secret material: this target is off unless the operator names it.
        tracing::debug!(
            target: REGISTRATION_DEBUG_TARGET,
            received_mac = %received,
            expected_mac = %expected,
            nonce = %nonce,
            username = %username,
            password = %password,
            admin = body.admin,
            user_type = ?body.user_type,
            "HMAC incorrect"
        );
        return Err(MatrixError::forbidden("HMAC incorrect"));
    }

    let localpart = username;
    username::check_localpart(&localpart, state.server_name.as_str(), false)
        .map_err(|e| MatrixError::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, e.0))?;
    let user_id = format!("@{localpart}:{}", state.server_name);
    let hash = state.passwords.hash(&password).await;
    let created = state
        .storage
        .create_user(&NewUser {
            user_id: user_id.clone(),
            password_hash: Some(hash),
            is_admin: body.admin,
            user_type: body.user_type.clone(),
            displayname: Some(body.displayname.unwrap_or_else(|| localpart.clone())),
            ..NewUser::default()
        })
        .await?;
    if !created {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UserInUse,
            "User ID already taken.",
        ));
    }
    tracing::info!(%user_id, admin = body.admin, "registered user with the shared secret");
    crate::api::plugin_hooks::user_registered(&state, &user_id).await;
    let login = start_login_session(&state, &user_id, LoginOptions::default()).await?;
    Ok(JsonResponse(json!({
        "user_id": user_id,
        "home_server": state.server_name,
        "access_token": login.access_token,
        "device_id": login.device_id,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_and_expire_after_a_minute() {
        let nonces = Nonces::default();
        let fresh = nonces.issue();
        assert!(nonces.take(&fresh));
        assert!(!nonces.take(&fresh), "a nonce is used once");
        assert!(!nonces.take("never-issued"));

        let stale = nonces.issue();
        let issued = Instant::now()
            .checked_sub(NONCE_LIFETIME + Duration::from_secs(1))
            .expect("the clock is past one minute");
        nonces.0.lock().insert(stale.clone(), issued);
        assert!(!nonces.take(&stale), "a nonce older than 60 s is refused");
    }
}
