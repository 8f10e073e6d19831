//! The password auth provider hook family, with Synapse's ordering: for a
//! login type, the plugins that registered a checker for it are asked in the
//! operator's order until one answers; `on_logged_out` reaches every plugin;
//! the registration callbacks take the first answer. A failed call resolves
//! by the plugin's `on_error` policy.

use std::{collections::HashSet, time::Instant};

use crate::{
    PluginSet,
    bindings::exports::myelin::plugin::password_auth::{
        self as wit, AuthCallback, AuthResult, AuthenticatedUser,
    },
    config::OnError,
    plugin::LoadError,
    stats::{Hook, record},
};

/// What a plugin registered through `password-auth`.
#[derive(Debug, Clone, Default)]
pub struct AuthRegistration {
    /// Login types and the fields each needs, in the plugin's order.
    pub checkers: Vec<(String, Vec<String>)>,
    pub callbacks: HashSet<AuthCallback>,
}

impl AuthRegistration {
    pub(crate) fn from_wit(registration: wit::AuthRegistration) -> Result<Self, String> {
        let mut checkers: Vec<(String, Vec<String>)> = Vec::new();
        for checker in registration.auth_checkers {
            if checker.login_type.is_empty() {
                return Err("it registered an auth checker with an empty login type".into());
            }
            if checkers.iter().any(|(t, _)| *t == checker.login_type) {
                return Err(format!(
                    "it registered two auth checkers for {}",
                    checker.login_type
                ));
            }
            checkers.push((checker.login_type, checker.fields));
        }
        Ok(Self {
            checkers,
            callbacks: registration.callbacks.into_iter().collect(),
        })
    }

    fn fields(&self, login_type: &str) -> Option<&[String]> {
        self.checkers
            .iter()
            .find(|(t, _)| t == login_type)
            .map(|(_, fields)| fields.as_slice())
    }
}

/// The answer of the plugins to a credentials check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No plugin handled it (or none registered the login type).
    NotHandled,
    /// A plugin refused the credentials, or failed with `on_error: deny`.
    Denied,
    /// A plugin vouched for this user.
    Authenticated {
        user_id: String,
        /// For the user's profile if this login creates them.
        display_name: Option<String>,
    },
}

/// A plugin failed with `on_error: deny`: the action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginFailed;

fn outcome(answer: AuthResult) -> AuthOutcome {
    match answer {
        AuthResult::NotHandled => AuthOutcome::NotHandled,
        AuthResult::Denied => AuthOutcome::Denied,
        AuthResult::Authenticated(AuthenticatedUser {
            user_id,
            display_name,
        }) => AuthOutcome::Authenticated {
            user_id,
            display_name,
        },
    }
}

impl PluginSet {
    /// Checks that plugins registering the same login type name the same
    /// fields, as Synapse refuses to start otherwise.
    pub(crate) fn check_auth_checkers(&self) -> Result<(), LoadError> {
        for (i, plugin) in self.plugins.iter().enumerate() {
            for (login_type, fields) in &plugin.auth.checkers {
                for earlier in &self.plugins[..i] {
                    if let Some(other) = earlier.auth.fields(login_type)
                        && other != fields.as_slice()
                    {
                        return Err(LoadError {
                            path: plugin.path.clone(),
                            problem: format!(
                                "it registers {login_type} with fields {fields:?}, but {} registers it with {other:?}",
                                earlier.name
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The login types plugins check, each once with its fields, in the
    /// order plugins are listed.
    pub fn login_types(&self) -> Vec<(&str, &[String])> {
        let mut types: Vec<(&str, &[String])> = Vec::new();
        for plugin in &self.plugins {
            for (login_type, fields) in &plugin.auth.checkers {
                if !types.iter().any(|(t, _)| t == login_type) {
                    types.push((login_type, fields));
                }
            }
        }
        types
    }

    /// The fields plugins need for `login_type`, if any plugin checks it.
    pub fn login_type_fields(&self, login_type: &str) -> Option<&[String]> {
        self.plugins.iter().find_map(|p| p.auth.fields(login_type))
    }

    /// Whether any plugin registered this password-auth callback.
    pub fn wants_auth(&self, callback: AuthCallback) -> bool {
        self.plugins
            .iter()
            .any(|p| p.auth.callbacks.contains(&callback))
    }

    /// A login of `login_type`: each plugin that checks that type is asked
    /// in order until one answers other than `not-handled`. `fields` are the
    /// registered fields with the values the client sent.
    pub async fn check_auth(
        &self,
        user: &str,
        login_type: &str,
        fields: &[(String, String)],
    ) -> AuthOutcome {
        for plugin in &self.plugins {
            if plugin.auth.fields(login_type).is_none() {
                continue;
            }
            let started = Instant::now();
            let answer = ask!(plugin, auth, call_check_auth(user, login_type, fields));
            let authenticated = matches!(answer, Ok(AuthResult::Authenticated(_)));
            record(plugin, Hook::CheckAuth, started, &answer, authenticated);
            match answer.map(outcome) {
                Ok(AuthOutcome::NotHandled) => continue,
                Ok(decided) => return decided,
                Err(_) if plugin.on_error == OnError::Allow => continue,
                Err(_) => return AuthOutcome::Denied,
            }
        }
        AuthOutcome::NotHandled
    }

    /// A password login naming a third-party identifier.
    pub async fn check_threepid_auth(
        &self,
        medium: &str,
        address: &str,
        password: &str,
    ) -> AuthOutcome {
        let callback = AuthCallback::CheckThreepidAuth;
        for plugin in &self.plugins {
            if !plugin.auth.callbacks.contains(&callback) {
                continue;
            }
            let started = Instant::now();
            let answer = ask!(
                plugin,
                auth,
                call_check_threepid_auth(medium, address, password)
            );
            let authenticated = matches!(answer, Ok(AuthResult::Authenticated(_)));
            record(plugin, callback.into(), started, &answer, authenticated);
            match answer.map(outcome) {
                Ok(AuthOutcome::NotHandled) => continue,
                Ok(decided) => return decided,
                Err(_) if plugin.on_error == OnError::Allow => continue,
                Err(_) => return AuthOutcome::Denied,
            }
        }
        AuthOutcome::NotHandled
    }

    /// Tells every plugin that asked about a logout; failures are logged.
    pub async fn on_logged_out(&self, user_id: &str, device_id: Option<&str>, access_token: &str) {
        let callback = AuthCallback::OnLoggedOut;
        for plugin in &self.plugins {
            if !plugin.auth.callbacks.contains(&callback) {
                continue;
            }
            let started = Instant::now();
            let answer = ask!(
                plugin,
                auth,
                call_on_logged_out(user_id, device_id, access_token)
            );
            record(plugin, callback.into(), started, &answer, true);
        }
    }

    /// The localpart plugins force for a new user: the first answer wins.
    pub async fn get_username_for_registration(
        &self,
        uia_results: &str,
        params: &str,
    ) -> Result<Option<String>, PluginFailed> {
        self.first_registration_answer(
            AuthCallback::GetUsernameForRegistration,
            uia_results,
            params,
        )
        .await
    }

    /// The display name plugins give a new user: the first answer wins.
    pub async fn get_displayname_for_registration(
        &self,
        uia_results: &str,
        params: &str,
    ) -> Result<Option<String>, PluginFailed> {
        self.first_registration_answer(
            AuthCallback::GetDisplaynameForRegistration,
            uia_results,
            params,
        )
        .await
    }

    /// Asks the plugins implementing one of the two registration callbacks
    /// in order; the first `Some` wins, a failure with `on_error: deny`
    /// fails the registration.
    async fn first_registration_answer(
        &self,
        callback: AuthCallback,
        uia_results: &str,
        params: &str,
    ) -> Result<Option<String>, PluginFailed> {
        for plugin in &self.plugins {
            if !plugin.auth.callbacks.contains(&callback) {
                continue;
            }
            let started = Instant::now();
            let answer = if callback == AuthCallback::GetUsernameForRegistration {
                ask!(
                    plugin,
                    auth,
                    call_get_username_for_registration(uia_results, params)
                )
            } else {
                ask!(
                    plugin,
                    auth,
                    call_get_displayname_for_registration(uia_results, params)
                )
            };
            record(plugin, callback.into(), started, &answer, true);
            match answer {
                Ok(Some(name)) => return Ok(Some(name)),
                Ok(None) => continue,
                Err(_) if plugin.on_error == OnError::Allow => continue,
                Err(_) => return Err(PluginFailed),
            }
        }
        Ok(None)
    }

    /// Whether a third-party identifier may be bound: the first `false`
    /// (or a failure with `on_error: deny`) refuses.
    pub async fn is_threepid_allowed(
        &self,
        medium: &str,
        address: &str,
        registration: bool,
    ) -> bool {
        let callback = AuthCallback::IsThreepidAllowed;
        for plugin in &self.plugins {
            if !plugin.auth.callbacks.contains(&callback) {
                continue;
            }
            let started = Instant::now();
            let answer = ask!(
                plugin,
                auth,
                call_is_threepid_allowed(medium, address, registration)
            );
            record(
                plugin,
                callback.into(),
                started,
                &answer,
                answer != Ok(false),
            );
            match answer {
                Ok(true) => continue,
                Ok(false) => return false,
                Err(_) if plugin.on_error == OnError::Allow => continue,
                Err(_) => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hook futures run on tokio's multi-threaded runtime.
    #[test]
    fn hook_futures_are_send() {
        fn is_send<T: Send>(_: &T) {}
        let set = PluginSet::default();
        is_send(&set.check_auth("alice", "m.login.password", &[]));
        is_send(&set.on_logged_out("@a:b", None, "token"));
        is_send(&set.get_username_for_registration("{}", "{}"));
    }

    #[test]
    fn a_plugin_registers_each_login_type_once() {
        let checker = |t: &str| wit::AuthChecker {
            login_type: t.to_owned(),
            fields: vec!["password".to_owned()],
        };
        let twice = wit::AuthRegistration {
            auth_checkers: vec![checker("m.login.password"), checker("m.login.password")],
            callbacks: Vec::new(),
        };
        assert!(AuthRegistration::from_wit(twice).is_err());
        let once = wit::AuthRegistration {
            auth_checkers: vec![checker("m.login.password")],
            callbacks: vec![AuthCallback::OnLoggedOut],
        };
        let registration = AuthRegistration::from_wit(once).unwrap();
        assert_eq!(
            registration.fields("m.login.password"),
            Some(&["password".to_owned()][..])
        );
    }
}
