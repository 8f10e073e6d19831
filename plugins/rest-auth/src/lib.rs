//! Myelin's password auth provider for external identity systems.
//!
//! * `m.login.password` is checked by an HTTP endpoint, with the protocol of
//!   matrix-synapse-rest-password-provider: `POST
//!   {endpoint}/_matrix-internal/identity/v1/check_credentials` with
//!   `{"user": {"id": "@alice:example.org", "password": "..."}}`, answered
//!   by `{"auth": {"success": true, "id": {"type": "localpart" | "mxid",
//!   "value": "..."}, "profile": {"display_name": "..."}}}` (or the older
//!   `"mxid": "@alice:example.org"`). A user the endpoint accepts is created
//!   on first login with the display name it gives. The request goes through
//!   the host's `http` grant: the endpoint's host must be in
//!   `allowed_hosts`.
//! * With `shared_secret`, the login type `com.devture.shared_secret_auth`
//!   (field `token`) as shared_secret_authenticator has it: the token is the
//!   hex HMAC-SHA512 of the full user ID under the shared secret.
//!
//! As with the REST provider, an endpoint that refuses, is down or answers
//! anything but a success leaves the login to the next plugin and then the
//! local database (it is logged); set `password_config.localdb_enabled:
//! false` to make the endpoint the only judge. A wrong shared-secret token
//! is denied outright.

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use myelin_sdk::{
    AuthCallback, AuthChecker, AuthRegistration, AuthResult, AuthenticatedUser, Callback,
    HttpRequest, PasswordAuthProvider, Plugin, http, log, login_field,
    serde_json::{self, Value, json},
};
use serde::Deserialize;
use sha2::Sha512;

/// `com.devture.shared_secret_auth`, shared_secret_authenticator's type.
const SHARED_SECRET_LOGIN: &str = "com.devture.shared_secret_auth";
const CHECK_PATH: &str = "/_matrix-internal/identity/v1/check_credentials";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The server's name, to qualify bare localparts (`alice`).
    server_name: String,
    /// Base URL of the credentials service; password login is only checked
    /// by it when set.
    endpoint: Option<String>,
    /// Enables the shared-secret login type.
    shared_secret: Option<String>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

fn config() -> &'static Config {
    CONFIG.get().expect("init runs before any callback")
}

struct RestAuth;

impl Plugin for RestAuth {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let parsed: Config = myelin_sdk::parse_config(config)?;
        if parsed.server_name.is_empty() {
            return Err("`server_name` is required".into());
        }
        if let Some(endpoint) = &parsed.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "`endpoint` must be an http(s) URL, not {endpoint:?}"
            ));
        }
        if parsed.shared_secret.as_deref() == Some("") {
            return Err("`shared_secret` must not be empty".into());
        }
        if parsed.endpoint.is_none() && parsed.shared_secret.is_none() {
            return Err("set `endpoint`, `shared_secret` or both".into());
        }
        CONFIG.get_or_init(|| parsed);
        // This plugin checks no spam.
        Ok(Vec::new())
    }
}

impl PasswordAuthProvider for RestAuth {
    fn register() -> AuthRegistration {
        let config = config();
        let mut auth_checkers = Vec::new();
        if config.endpoint.is_some() {
            auth_checkers.push(AuthChecker::new("m.login.password", &["password"]));
        }
        if config.shared_secret.is_some() {
            auth_checkers.push(AuthChecker::new(SHARED_SECRET_LOGIN, &["token"]));
        }
        AuthRegistration {
            auth_checkers,
            callbacks: Vec::<AuthCallback>::new(),
        }
    }

    fn check_auth(user: &str, login_type: &str, fields: &[(String, String)]) -> AuthResult {
        let user_id = qualify(user, &config().server_name);
        match (
            login_type,
            login_field(fields, "password"),
            login_field(fields, "token"),
        ) {
            ("m.login.password", Some(password), _) => check_with_endpoint(&user_id, password),
            (SHARED_SECRET_LOGIN, _, Some(token)) => check_shared_secret(&user_id, token),
            _ => AuthResult::NotHandled,
        }
    }
}

/// `@alice:server` from `alice` or `@Alice:server`.
fn qualify(user: &str, server_name: &str) -> String {
    let user = user.trim().to_lowercase();
    if user.starts_with('@') {
        user
    } else {
        format!("@{user}:{server_name}")
    }
}

fn check_with_endpoint(user_id: &str, password: &str) -> AuthResult {
    let Some(endpoint) = &config().endpoint else {
        return AuthResult::NotHandled;
    };
    let request = HttpRequest {
        method: "POST".to_owned(),
        url: format!("{}{CHECK_PATH}", endpoint.trim_end_matches('/')),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: Some(
            json!({ "user": { "id": user_id, "password": password } })
                .to_string()
                .into_bytes(),
        ),
    };
    let response = match http::fetch(&request) {
        Ok(response) if response.status == 200 => response,
        Ok(response) => {
            log::warn(format!(
                "the endpoint answered {} for {user_id}",
                response.status
            ));
            return AuthResult::NotHandled;
        }
        Err(err) => {
            log::warn(format!(
                "the endpoint could not be asked about {user_id}: {err:?}"
            ));
            return AuthResult::NotHandled;
        }
    };
    let Ok(answer) = serde_json::from_slice::<Value>(&response.body) else {
        log::warn(format!("the endpoint's answer for {user_id} is not JSON"));
        return AuthResult::NotHandled;
    };
    authenticated(user_id, &answer["auth"]).unwrap_or(AuthResult::NotHandled)
}

/// The user a successful answer names: `id` (a localpart or a Matrix ID),
/// the older `mxid`, or the user asked about.
fn authenticated(user_id: &str, auth: &Value) -> Option<AuthResult> {
    if auth["success"] != Value::Bool(true) {
        return None;
    }
    let server_name = &config().server_name;
    let vouched = match (auth["id"]["type"].as_str(), auth["id"]["value"].as_str()) {
        (Some("localpart"), Some(localpart)) => qualify(localpart, server_name),
        (Some("mxid"), Some(mxid)) => mxid.to_lowercase(),
        (Some(other), _) => {
            log::warn(format!(
                "the endpoint answered an id of unknown type {other:?}"
            ));
            return None;
        }
        (None, _) => auth["mxid"]
            .as_str()
            .map(str::to_lowercase)
            .unwrap_or_else(|| user_id.to_owned()),
    };
    let display_name = auth["profile"]["display_name"]
        .as_str()
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    Some(AuthResult::Authenticated(AuthenticatedUser {
        user_id: vouched,
        display_name,
    }))
}

fn check_shared_secret(user_id: &str, token: &str) -> AuthResult {
    let Some(secret) = &config().shared_secret else {
        return AuthResult::NotHandled;
    };
    let Ok(expected) = hex::decode(token.trim()) else {
        return AuthResult::Denied;
    };
    let mut mac = Hmac::<Sha512>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(user_id.as_bytes());
    // `verify_slice` compares in constant time.
    match mac.verify_slice(&expected) {
        Ok(()) => AuthResult::user(user_id),
        Err(_) => AuthResult::Denied,
    }
}

myelin_sdk::export_plugin!(RestAuth: PasswordAuthProvider);
