//! An SSO mapping plugin (see "SSO mapping plugins" in `docs/sso.md`): a
//! user signs in only if the identity provider puts them in one of the
//! allowed groups, and their Matrix localpart is the part of their e-mail
//! address before the `@`.
//!
//! Configuration (its entry under `modules:`):
//!
//! ```yaml
//! config:
//!   allowed_groups: [staff]      # required
//!   groups_claim: groups         # the default
//! ```
//!
//! A localpart that is taken gets a number (`alice`, then `alice1`,
//! `alice2`, ...): the server asks again with `failures` one higher. The
//! client's login response carries the user's groups in
//! `org.example.groups`.

use std::sync::OnceLock;

use myelin_sdk::{
    Callback, Plugin, SsoMappingProvider, UserAttributes,
    serde_json::{Map, Value},
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    allowed_groups: Vec<String>,
    #[serde(default = "default_groups_claim")]
    groups_claim: String,
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct GroupsMapping;

impl Plugin for GroupsMapping {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let config: Config = myelin_sdk::parse_config(config)?;
        if config.allowed_groups.is_empty() {
            return Err("`allowed_groups` must name at least one group".to_owned());
        }
        CONFIG.get_or_init(|| config);
        Ok(Vec::new())
    }
}

fn claims(userinfo: &str) -> Result<Map<String, Value>, String> {
    myelin_sdk::parse_config(userinfo)
}

/// `alice.smith` from `Alice.Smith@example.org`, keeping only what a Matrix
/// localpart allows.
fn localpart_from_email(email: &str) -> Option<String> {
    let local = email.split('@').next()?.to_lowercase();
    let localpart: String = local
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-/".contains(*c))
        .collect();
    (!localpart.is_empty()).then_some(localpart)
}

/// The groups the identity provider lists for the user.
fn groups<'a>(claims: &'a Map<String, Value>, config: &Config) -> Vec<&'a str> {
    match claims.get(&config.groups_claim) {
        Some(Value::Array(groups)) => groups.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(group)) => vec![group.as_str()],
        _ => Vec::new(),
    }
}

impl SsoMappingProvider for GroupsMapping {
    fn register() -> bool {
        true
    }

    fn get_remote_user_id(userinfo: &str) -> Result<String, String> {
        match claims(userinfo)?.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => Ok(sub.clone()),
            _ => Err("the identity provider did not send a subject".to_owned()),
        }
    }

    fn get_extra_attributes(userinfo: &str, _token: &str) -> String {
        let (Some(config), Ok(claims)) = (CONFIG.get(), claims(userinfo)) else {
            return "{}".to_owned();
        };
        myelin_sdk::serde_json::json!({ "org.example.groups": groups(&claims, config) }).to_string()
    }

    fn map_user_attributes(
        userinfo: &str,
        _token: &str,
        failures: u32,
    ) -> Result<UserAttributes, String> {
        let config = CONFIG.get().ok_or("not configured")?;
        let claims = claims(userinfo)?;
        let groups = groups(&claims, config);
        if !groups
            .iter()
            .any(|g| config.allowed_groups.iter().any(|a| a == g))
        {
            return Err("Your account is not in a group allowed on this server.".to_owned());
        }
        let email = claims.get("email").and_then(Value::as_str);
        let localpart = email
            .and_then(localpart_from_email)
            .map(|l| match failures {
                0 => l,
                n => format!("{l}{n}"),
            });
        Ok(UserAttributes {
            localpart,
            display_name: claims
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            emails: email.map(str::to_owned).into_iter().collect(),
            picture: None,
            confirm_localpart: false,
        })
    }
}

myelin_sdk::export_plugin!(GroupsMapping: SsoMappingProvider);
