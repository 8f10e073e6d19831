//! The default SSO mapping provider (Synapse's `JinjaOidcMappingProvider`):
//! Jinja templates over the identity provider's claims, exposed to the
//! templates as `user`, give the remote subject, the localpart, the display
//! name, the e-mail address and the picture.

use minijinja::{Environment, context};
use serde_json::{Map, Value};

use crate::config::oidc::MappingConfig;

const SUBJECT: &str = "subject";
const LOCALPART: &str = "localpart";
const DISPLAY_NAME: &str = "display_name";
const EMAIL: &str = "email";
const PICTURE: &str = "picture";

pub struct MappingProvider {
    env: Environment<'static>,
    subject_claim: String,
    picture_claim: String,
    confirm_localpart: bool,
}

/// What the templates made of one login's claims.
#[derive(Debug, PartialEq, Eq)]
pub struct MappedUser {
    /// `None` when there is no `localpart_template` or it rendered empty:
    /// the user picks their username.
    pub localpart: Option<String>,
    /// Whether the user confirms (or changes) the localpart first.
    pub confirm_localpart: bool,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// The URL of the user's picture.
    pub picture: Option<String>,
}

impl MappingProvider {
    /// Compiles the templates; `Err` names the one that does not parse.
    pub fn new(config: &MappingConfig) -> Result<Self, String> {
        let mut env = Environment::new();
        env.add_filter("localpart_from_email", localpart_from_email);
        let templates = [
            (SUBJECT, config.subject_template.as_ref()),
            (LOCALPART, config.localpart_template.as_ref()),
            (DISPLAY_NAME, config.display_name_template.as_ref()),
            (EMAIL, config.email_template.as_ref()),
            (PICTURE, config.picture_template.as_ref()),
        ];
        for (name, source) in templates {
            if let Some(source) = source {
                env.add_template_owned(name, source.clone())
                    .map_err(|e| format!("the {name} template does not parse: {e}"))?;
            }
        }
        Ok(Self {
            env,
            subject_claim: config.subject_claim.clone(),
            picture_claim: config.picture_claim.clone(),
            confirm_localpart: config.confirm_localpart,
        })
    }

    /// The user's stable ID at the provider: `subject_template`, else the
    /// `subject_claim`, as a string (numbers are accepted, as some providers
    /// send them).
    pub fn remote_user_id(&self, claims: &Map<String, Value>) -> Result<String, String> {
        let subject = match self.render(SUBJECT, claims)? {
            Some(subject) => subject,
            None => match claims.get(&self.subject_claim) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            },
        };
        if subject.is_empty() {
            return Err(format!(
                "the identity provider did not send the `{}` claim",
                self.subject_claim
            ));
        }
        Ok(subject)
    }

    /// The attributes of the user, with `failures` appended to the
    /// localpart after that many attempts found it taken (Synapse's retry).
    pub fn map_user_attributes(
        &self,
        claims: &Map<String, Value>,
        failures: u32,
    ) -> Result<MappedUser, String> {
        let localpart = self
            .render(LOCALPART, claims)?
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut localpart = mxid_localpart(&l);
                if failures > 0 {
                    localpart.push_str(&failures.to_string());
                }
                localpart
            });
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let picture = match self.render(PICTURE, claims)? {
            Some(picture) => Some(picture),
            None => claims
                .get(&self.picture_claim)
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        Ok(MappedUser {
            localpart,
            confirm_localpart: self.confirm_localpart,
            display_name: non_empty(self.render(DISPLAY_NAME, claims)?),
            email: non_empty(self.render(EMAIL, claims)?),
            picture: non_empty(picture),
        })
    }

    fn render(&self, name: &str, claims: &Map<String, Value>) -> Result<Option<String>, String> {
        let Ok(template) = self.env.get_template(name) else {
            return Ok(None);
        };
        template
            .render(context! { user => claims })
            .map(|s| Some(s.trim().to_owned()))
            .map_err(|e| format!("the {name} template failed: {e}"))
    }
}

/// Synapse's filter: the part of an e-mail address before the `@`.
fn localpart_from_email(address: String) -> String {
    match address.rsplit_once('@') {
        Some((local, _)) => local.to_owned(),
        None => address,
    }
}

/// Synapse's `map_username_to_mxid_localpart`: lower case, and every byte
/// outside `[a-z0-9._-/]` (and a leading `_`) escaped as `=xx`, so that any
/// provider username gives a valid, distinct localpart.
pub fn mxid_localpart(username: &str) -> String {
    let mut out = String::with_capacity(username.len());
    for (i, byte) in username.to_lowercase().bytes().enumerate() {
        let allowed = byte.is_ascii_lowercase()
            || byte.is_ascii_digit()
            || b".-/".contains(&byte)
            || (byte == b'_' && i > 0);
        if allowed {
            out.push(byte as char);
        } else {
            out.push_str(&format!("={byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn templates_map_claims() {
        let config = MappingConfig {
            localpart_template: Some("{{ user.email | localpart_from_email }}".to_owned()),
            display_name_template: Some("{{ user.given_name }} {{ user.family_name }}".to_owned()),
            ..MappingConfig::default()
        };
        let provider = MappingProvider::new(&config).unwrap();
        let user = claims(json!({"sub": 42, "email": "Ann.Lee@example.org",
                                 "given_name": "Ann", "family_name": "Lee",
                                 "picture": "https://idp.example/ann.png"}));
        assert_eq!(provider.remote_user_id(&user).unwrap(), "42");
        assert_eq!(
            provider.map_user_attributes(&user, 2).unwrap(),
            MappedUser {
                localpart: Some("ann.lee2".to_owned()),
                confirm_localpart: false,
                display_name: Some("Ann Lee".to_owned()),
                email: None,
                picture: Some("https://idp.example/ann.png".to_owned()),
            }
        );
    }

    #[test]
    fn no_localpart_template_or_an_empty_one_leaves_the_choice_to_the_user() {
        let provider = MappingProvider::new(&MappingConfig::default()).unwrap();
        let user = claims(json!({"sub": "s", "preferred_username": "ann"}));
        assert_eq!(
            provider.map_user_attributes(&user, 0).unwrap().localpart,
            None
        );
        let config = MappingConfig {
            localpart_template: Some("{{ user.nickname }}".to_owned()),
            ..MappingConfig::default()
        };
        let provider = MappingProvider::new(&config).unwrap();
        assert_eq!(
            provider.map_user_attributes(&user, 0).unwrap().localpart,
            None
        );
    }

    #[test]
    fn localparts_are_escaped_as_synapse_does() {
        assert_eq!(mxid_localpart("Alice"), "alice");
        assert_eq!(mxid_localpart("a b=c"), "a=20b=3dc");
        assert_eq!(mxid_localpart("_x_y"), "=5fx_y");
        assert_eq!(mxid_localpart("é"), "=c3=a9");
    }

    #[test]
    fn a_broken_template_is_refused() {
        let config = MappingConfig {
            localpart_template: Some("{{ user.name".to_owned()),
            ..MappingConfig::default()
        };
        assert!(MappingProvider::new(&config).is_err());
    }
}
