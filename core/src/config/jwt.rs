//! `jwt_config`: logging in with a JSON Web Token (`org.matrix.login.jwt`),
//! Synapse's keys and meaning.

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct JwtConfig {
    pub enabled: bool,
    /// The shared secret (HS*) or the issuer's public key in PEM (RS*, PS*,
    /// ES*, EdDSA). Never logged.
    pub secret: Option<String>,
    pub algorithm: Option<String>,
    /// The claim holding the user's localpart.
    pub subject_claim: String,
    /// The claim holding the display name a user gets when first created.
    pub display_name_claim: Option<String>,
    /// When set, `iss` is required and must match.
    pub issuer: Option<String>,
    /// When set, `aud` is required and must name one of these; when not,
    /// a token carrying `aud` is refused.
    pub audiences: Option<Vec<String>>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            secret: None,
            algorithm: None,
            subject_claim: "sub".to_owned(),
            display_name_claim: None,
            issuer: None,
            audiences: None,
        }
    }
}

impl JwtConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        crate::auth::jwt::JwtLogin::from_config(self)
            .map(|_| ())
            .map_err(|problem| {
                ConfigError::new(
                    "jwt_config",
                    problem,
                    "Set `secret` (a shared secret for HS256/384/512, else the issuer's public key in PEM) and `algorithm`, e.g. `jwt_config: {enabled: true, secret: \"...\", algorithm: HS256}`.",
                )
            })
    }
}
