//! What every handler may use, passed explicitly (no global service locator).

use std::sync::Arc;

use ruma::OwnedServerName;

use crate::{
    api::admin::register::Nonces,
    api::client::sync::SyncCaches,
    auth::{
        password::PasswordHasher, ratelimit::Ratelimiter, tokens::TokenCache, uia::UiaSessions,
    },
    config::Config,
    federation::signing_key::SigningKey,
    media::Media,
    push::PushRules,
    rooms::Rooms,
    storage::Storage,
    streams::Live,
};

/// The shared secret for admin registration; never printed.
pub struct RegistrationSecret(pub String);

impl std::fmt::Debug for RegistrationSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistrationSecret(..)")
    }
}

pub struct RateLimiters {
    pub login_address: Ratelimiter,
    pub login_account: Ratelimiter,
    pub login_failed_attempts: Ratelimiter,
    pub registration: Ratelimiter,
}

impl RateLimiters {
    pub fn from_config(config: &Config) -> Self {
        Self {
            login_address: Ratelimiter::new(config.rc_login.address),
            login_account: Ratelimiter::new(config.rc_login.account),
            login_failed_attempts: Ratelimiter::new(config.rc_login.failed_attempts),
            registration: Ratelimiter::new(config.rc_registration),
        }
    }
}

pub struct Services {
    pub config: Config,
    pub server_name: OwnedServerName,
    pub storage: Storage,
    pub tokens: TokenCache,
    pub passwords: PasswordHasher,
    pub uia: UiaSessions,
    pub rate_limits: RateLimiters,
    pub registration_secret: Option<RegistrationSecret>,
    pub registration_nonces: Nonces,
    pub signing_key: Arc<SigningKey>,
    pub rooms: Rooms,
    pub plugins: Arc<myelin_plugin_api::Plugins>,
    /// The `-c` files the server started from, re-read to reload plugins.
    pub config_files: Vec<std::path::PathBuf>,
    pub plugin_services: myelin_plugin_api::HostServices,
    pub live: Arc<Live>,
    pub push_rules: Arc<PushRules>,
    pub sync_caches: SyncCaches,
    /// Version 2 room deletions (`DELETE /_synapse/admin/v2/rooms/...`).
    pub room_deletions: crate::api::admin::rooms::RoomDeletions,
    /// The JWT verifier, when `jwt_config.enabled`.
    pub jwt: Option<crate::auth::jwt::JwtLogin>,
    /// Single sign-on, when `oidc_providers` lists any.
    pub oidc: Option<crate::auth::oidc::Oidc>,
    pub media: Media,
    pub identity: crate::identity::IdentityClient,
}

/// Cheap to clone: one `Arc` around the server's services.
#[derive(Clone)]
pub struct AppState(pub Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}
