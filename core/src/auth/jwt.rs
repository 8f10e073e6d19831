//! JSON Web Token login (`org.matrix.login.jwt`, Synapse's non-standard
//! login type): the token's signature, `exp`, `nbf`, `iss` and `aud` are
//! checked with `jsonwebtoken`; a configured claim names the user.

use std::{collections::HashSet, str::FromStr};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::{Map, Value};

use crate::config::jwt::JwtConfig;

/// The login type clients send and `GET /login` lists.
pub const LOGIN_TYPE: &str = "org.matrix.login.jwt";

pub struct JwtLogin {
    key: DecodingKey,
    validation: Validation,
    subject_claim: String,
    display_name_claim: Option<String>,
}

/// Who a valid token names.
#[derive(Debug)]
pub struct JwtIdentity {
    pub localpart: String,
    pub display_name: Option<String>,
}

impl JwtLogin {
    /// The verifier for an enabled `jwt_config`; `Err` says what is wrong.
    pub fn from_config(config: &JwtConfig) -> Result<Self, String> {
        let secret = config.secret.as_deref().ok_or("`secret` is required")?;
        let name = config
            .algorithm
            .as_deref()
            .ok_or("`algorithm` is required")?;
        let algorithm =
            Algorithm::from_str(name).map_err(|_| format!("unknown algorithm `{name}`"))?;
        let pem = secret.as_bytes();
        let key = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                Ok(DecodingKey::from_secret(pem))
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            _ => return Err(format!("algorithm `{name}` is not supported")),
        }
        .map_err(|e| format!("`secret` is not a public key for {name}: {e}"))?;

        let mut validation = Validation::new(algorithm);
        // `exp` and `nbf` are checked when present, not required (Synapse).
        validation.required_spec_claims = HashSet::new();
        validation.validate_nbf = true;
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        if let Some(audiences) = &config.audiences {
            validation.set_audience(audiences);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        Ok(Self {
            key,
            validation,
            subject_claim: config.subject_claim.clone(),
            display_name_claim: config.display_name_claim.clone(),
        })
    }

    /// The identity in a valid token; `Err` with the reason otherwise.
    pub fn verify(&self, token: &str) -> Result<JwtIdentity, String> {
        let claims = decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| e.to_string())?
            .claims;
        let localpart = claims
            .get(&self.subject_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the `{}` claim is missing", self.subject_claim))?
            .to_owned();
        let display_name = self
            .display_name_claim
            .as_ref()
            .and_then(|claim| claims.get(claim))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(JwtIdentity {
            localpart,
            display_name,
        })
    }
}
