//! `oidc_providers`: single sign-on through OpenID Connect identity
//! providers, with Synapse's keys and meaning.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PkceMethod {
    /// PKCE when the provider's metadata says it supports S256.
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserProfileMethod {
    /// The userinfo endpoint only when the `openid` scope is not requested.
    #[default]
    Auto,
    UserinfoEndpoint,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OidcProviderConfig {
    /// As written; [`OidcProviderConfig::id`] is the identifier used inside.
    pub idp_id: String,
    pub idp_name: Option<String>,
    pub idp_icon: Option<String>,
    pub idp_brand: Option<String>,
    #[serde(default = "yes")]
    pub discover: bool,
    pub issuer: String,
    pub client_id: String,
    /// Never logged.
    pub client_secret: Option<String>,
    pub client_secret_path: Option<PathBuf>,
    /// Synapse's signed-JWT client authentication; refused with a message
    /// until it is supported.
    pub client_secret_jwt_key: Option<serde_yaml::Value>,
    #[serde(default)]
    pub client_auth_method: ClientAuthMethod,
    #[serde(default)]
    pub pkce_method: PkceMethod,
    #[serde(default = "openid_scope")]
    pub scopes: Vec<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    /// Allows an `http://` issuer and endpoints: for tests, never production.
    #[serde(default)]
    pub skip_verification: bool,
    #[serde(default)]
    pub user_profile_method: UserProfileMethod,
    #[serde(default)]
    pub allow_existing_users: bool,
    /// Whether users new to the server may be created through this provider.
    #[serde(default = "yes")]
    pub enable_registration: bool,
    #[serde(default)]
    pub user_mapping_provider: UserMappingProviderConfig,
    #[serde(default)]
    pub attribute_requirements: Vec<AttributeRequirement>,
    #[serde(default)]
    pub backchannel_logout_enabled: bool,
}

fn yes() -> bool {
    true
}

fn openid_scope() -> Vec<String> {
    vec!["openid".to_owned()]
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserMappingProviderConfig {
    #[serde(default)]
    pub config: MappingConfig,
}

/// The default mapping provider's settings: Jinja templates over the
/// provider's claims (`user`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MappingConfig {
    pub subject_claim: String,
    /// Overrides `subject_claim` when set (Synapse 1.75+).
    pub subject_template: Option<String>,
    pub localpart_template: String,
    pub display_name_template: Option<String>,
    pub email_template: Option<String>,
    /// Accepted for compatibility; avatars are not yet set from SSO.
    pub picture_claim: String,
    pub confirm_localpart: bool,
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            subject_claim: "sub".to_owned(),
            subject_template: None,
            localpart_template: "{{ user.preferred_username }}".to_owned(),
            display_name_template: None,
            email_template: None,
            picture_claim: "picture".to_owned(),
            confirm_localpart: false,
        }
    }
}

/// A claim that must have this value (or, for a list, contain it).
#[derive(Debug, Clone, Deserialize)]
pub struct AttributeRequirement {
    pub attribute: String,
    pub value: String,
}

impl OidcProviderConfig {
    /// The identifier in `GET /login`, the redirect path and the stored
    /// external IDs: Synapse prefixes `oidc-` (except for the legacy `oidc`)
    /// so that IDs from other SSO mechanisms cannot clash.
    pub fn id(&self) -> String {
        if self.idp_id == "oidc" {
            self.idp_id.clone()
        } else {
            format!("oidc-{}", self.idp_id)
        }
    }

    pub fn display_name(&self) -> &str {
        self.idp_name.as_deref().unwrap_or("OIDC")
    }

    /// The client secret, from the configuration or its file; `None` for
    /// `client_auth_method: none`.
    pub fn secret(&self) -> Result<Option<String>, ConfigError> {
        if self.client_auth_method == ClientAuthMethod::None {
            return Ok(None);
        }
        if let Some(secret) = &self.client_secret {
            return Ok(Some(secret.clone()));
        }
        let Some(path) = &self.client_secret_path else {
            return Ok(None);
        };
        std::fs::read_to_string(path)
            .map(|s| Some(s.trim().to_owned()))
            .map_err(|e| {
                ConfigError::new(
                    format!("oidc_providers.{}.client_secret_path", self.idp_id),
                    format!("cannot read {}: {e}", path.display()),
                    "Give a file the server's user can read, holding only the secret.",
                )
            })
    }

    /// Whether the profile comes from the userinfo endpoint rather than the
    /// ID token (Synapse's rule).
    pub fn uses_userinfo(&self) -> bool {
        self.user_profile_method == UserProfileMethod::UserinfoEndpoint
            || !self.scopes.iter().any(|s| s == "openid")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let key = |field: &str| format!("oidc_providers.{}.{field}", self.idp_id);
        let valid_id = |c: char| c.is_ascii_alphanumeric() || "._~-".contains(c);
        if self.idp_id.is_empty() || self.idp_id.len() > 250 || !self.idp_id.chars().all(valid_id) {
            return Err(ConfigError::new(
                "oidc_providers.idp_id",
                format!("`{}` is not a valid provider ID", self.idp_id),
                "Use 1 to 250 letters, digits and `._~-`, e.g. `idp_id: keycloak`.",
            ));
        }
        if let Some(icon) = &self.idp_icon
            && <&ruma::MxcUri>::from(icon.as_str()).validate().is_err()
        {
            return Err(ConfigError::new(
                key("idp_icon"),
                format!("`{icon}` is not an mxc:// URI"),
                "Upload the icon to the server and write its URI, e.g. `idp_icon: mxc://example.org/abc123`.",
            ));
        }
        if self.client_id.is_empty() {
            return Err(ConfigError::new(
                key("client_id"),
                "the client ID is empty",
                "Write the client ID the identity provider gave you.",
            ));
        }
        if self.client_secret_jwt_key.is_some() {
            return Err(ConfigError::new(
                key("client_secret_jwt_key"),
                "signed-JWT client authentication is not supported yet",
                "Use `client_secret` (or `client_secret_path`) with `client_auth_method: client_secret_basic` or `client_secret_post`.",
            ));
        }
        if self.client_secret.is_some() && self.client_secret_path.is_some() {
            return Err(ConfigError::new(
                key("client_secret"),
                "both `client_secret` and `client_secret_path` are set",
                "Keep one of them.",
            ));
        }
        if self.client_auth_method != ClientAuthMethod::None && self.secret()?.is_none() {
            return Err(ConfigError::new(
                key("client_secret"),
                "no client secret is configured",
                "Set `client_secret` or `client_secret_path`, or `client_auth_method: none` for a public client.",
            ));
        }
        let mut urls = vec![("issuer", Some(&self.issuer))];
        urls.extend([
            (
                "authorization_endpoint",
                self.authorization_endpoint.as_ref(),
            ),
            ("token_endpoint", self.token_endpoint.as_ref()),
            ("userinfo_endpoint", self.userinfo_endpoint.as_ref()),
            ("jwks_uri", self.jwks_uri.as_ref()),
        ]);
        for (field, url) in urls {
            let Some(url) = url else { continue };
            let scheme_ok = url.starts_with("https://")
                || (self.skip_verification && url.starts_with("http://"));
            if !scheme_ok || url.parse::<http::Uri>().is_err() {
                return Err(ConfigError::new(
                    key(field),
                    format!("`{url}` is not an https URL"),
                    "Write the provider's https URL, e.g. `https://login.example.org/realms/main` (plain http only with `skip_verification: true`, for tests).",
                ));
            }
        }
        if !self.discover {
            let missing = [
                (
                    "authorization_endpoint",
                    self.authorization_endpoint.is_none(),
                ),
                ("token_endpoint", self.token_endpoint.is_none()),
                ("jwks_uri", self.jwks_uri.is_none() && !self.uses_userinfo()),
                (
                    "userinfo_endpoint",
                    self.userinfo_endpoint.is_none() && self.uses_userinfo(),
                ),
            ];
            if let Some((field, _)) = missing.iter().find(|(_, missing)| *missing) {
                return Err(ConfigError::new(
                    key(field),
                    "required when `discover: false`",
                    "Write the endpoint's URL from the provider's documentation, or remove `discover: false`.",
                ));
            }
        }
        let mapping = &self.user_mapping_provider.config;
        if mapping.confirm_localpart {
            return Err(ConfigError::new(
                key("user_mapping_provider.config.confirm_localpart"),
                "the username picker is not supported yet",
                "Remove `confirm_localpart` (or set it to false).",
            ));
        }
        if self.backchannel_logout_enabled {
            return Err(ConfigError::new(
                key("backchannel_logout_enabled"),
                "back-channel logout is not supported yet",
                "Remove `backchannel_logout_enabled`.",
            ));
        }
        crate::auth::sso_mapping::MappingProvider::new(mapping).map_err(|problem| {
            ConfigError::new(
                key("user_mapping_provider.config"),
                problem,
                "Fix the Jinja template, e.g. `localpart_template: \"{{ user.preferred_username }}\"`.",
            )
        })?;
        Ok(())
    }
}

/// Checks every provider, and that their IDs are distinct.
pub(super) fn validate(providers: &[OidcProviderConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    for provider in providers {
        provider.validate()?;
        if !seen.insert(provider.id()) {
            return Err(ConfigError::new(
                "oidc_providers",
                format!("two providers have `idp_id: {}`", provider.idp_id),
                "Give each provider its own `idp_id`.",
            ));
        }
    }
    Ok(())
}
