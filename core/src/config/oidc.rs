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
    /// RFC 7523 `client_assertion` signed with `client_secret_jwt_key`
    /// (Myelin's addition: Synapse sends that JWT as the client secret).
    PrivateKeyJwt,
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
    /// Synapse's signed-JWT client authentication: a JWT signed with this
    /// key is the client secret (Apple's scheme), or with
    /// `client_auth_method: private_key_jwt` the RFC 7523 client assertion.
    pub client_secret_jwt_key: Option<ClientSecretJwtKey>,
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
    /// Back-channel logout without checking that the logout token's `sub`
    /// is the user's external ID here.
    #[serde(default)]
    pub backchannel_logout_ignore_sub: bool,
}

/// `client_secret_jwt_key`: a PEM signing key, the JWT header (with `alg`)
/// and extra payload claims.
#[derive(Debug, Clone, Deserialize)]
pub struct ClientSecretJwtKey {
    /// Never logged.
    pub key: Option<String>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub jwt_header: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub jwt_payload: serde_json::Map<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

fn openid_scope() -> Vec<String> {
    vec!["openid".to_owned()]
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserMappingProviderConfig {
    /// A plugin (its name under `modules:`, the `.wasm` file's stem) that
    /// maps this provider's users; unset, or Synapse's default module, for
    /// the built-in templates below.
    pub module: Option<String>,
    /// The built-in provider's templates (a plugin gets its configuration
    /// from its own entry under `modules:`).
    #[serde(default)]
    pub config: MappingConfig,
}

/// Synapse's name for the built-in mapping provider.
const DEFAULT_MAPPING_MODULE: &str = "synapse.handlers.oidc.JinjaOidcMappingProvider";

impl UserMappingProviderConfig {
    /// The plugin that maps users, when it is not the built-in provider.
    pub fn plugin(&self) -> Option<&str> {
        self.module
            .as_deref()
            .filter(|module| *module != DEFAULT_MAPPING_MODULE)
    }
}

/// The default mapping provider's settings: Jinja templates over the
/// provider's claims (`user`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MappingConfig {
    pub subject_claim: String,
    /// Overrides `subject_claim` when set (Synapse 1.75+).
    pub subject_template: Option<String>,
    /// Unset (or rendering empty), the user picks a username.
    pub localpart_template: Option<String>,
    pub display_name_template: Option<String>,
    pub email_template: Option<String>,
    /// The claim with the URL of the user's picture, downloaded as their
    /// avatar on first login.
    pub picture_claim: String,
    /// Overrides `picture_claim` when set (Synapse 1.75+).
    pub picture_template: Option<String>,
    /// Show the username picker even when the template gives a localpart.
    pub confirm_localpart: bool,
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            subject_claim: "sub".to_owned(),
            subject_template: None,
            localpart_template: None,
            display_name_template: None,
            email_template: None,
            picture_claim: "picture".to_owned(),
            picture_template: None,
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
        if self.client_secret.is_some() && self.client_secret_path.is_some() {
            return Err(ConfigError::new(
                key("client_secret"),
                "both `client_secret` and `client_secret_path` are set",
                "Keep one of them.",
            ));
        }
        if let Some(jwt_key) = &self.client_secret_jwt_key {
            jwt_key.signing_key().map_err(|problem| {
                ConfigError::new(
                    key("client_secret_jwt_key"),
                    problem,
                    "Give `key` (or `key_file`) as a PEM private key and `jwt_header: {alg: ES256}` (or RS256, PS256, ES384, EdDSA…) matching it.",
                )
            })?;
        } else if self.client_auth_method == ClientAuthMethod::PrivateKeyJwt {
            return Err(ConfigError::new(
                key("client_auth_method"),
                "`private_key_jwt` needs `client_secret_jwt_key`",
                "Add `client_secret_jwt_key` with the key the provider knows (`key_file` and `jwt_header: {alg: …}`).",
            ));
        } else if self.client_auth_method != ClientAuthMethod::None && self.secret()?.is_none() {
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
        if self.user_mapping_provider.plugin().is_some() {
            return Ok(());
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

impl ClientSecretJwtKey {
    /// The PEM key (from `key` or `key_file`) as a signing key for the
    /// header's `alg`; `Err` says what is wrong.
    pub fn signing_key(
        &self,
    ) -> Result<(jsonwebtoken::Algorithm, jsonwebtoken::EncodingKey), String> {
        use jsonwebtoken::{Algorithm, EncodingKey};
        let pem = match (&self.key, &self.key_file) {
            (Some(key), None) => key.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            (Some(_), Some(_)) => return Err("both `key` and `key_file` are set".to_owned()),
            (None, None) => return Err("neither `key` nor `key_file` is set".to_owned()),
        };
        let alg = self
            .jwt_header
            .get("alg")
            .and_then(|a| a.as_str())
            .ok_or("`jwt_header` has no `alg`")?;
        let alg: Algorithm = alg
            .parse()
            .map_err(|_| format!("`{alg}` is not a JWS algorithm"))?;
        let pem = pem.as_bytes();
        let key = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                Ok(EncodingKey::from_secret(pem))
            }
            _ => return Err(format!("`{alg:?}` is not supported")),
        }
        .map_err(|e| format!("the key is not a PEM key for {alg:?}: {e}"))?;
        Ok((alg, key))
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
