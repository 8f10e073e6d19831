//! SSO mapping providers: an OIDC provider's `user_mapping_provider` names
//! one plugin, which alone maps that provider's users. A failed call fails
//! the login (whatever the plugin's `on_error`: there is no user to fall
//! back to).

use std::time::Instant;

pub use crate::bindings::exports::myelin::plugin::sso_mapping::UserAttributes;
use crate::{PluginSet, plugin::Plugin, stats::record};

/// The mapping callbacks, for the plugin's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SsoMappingCallback {
    GetRemoteUserId,
    MapUserAttributes,
    GetExtraAttributes,
}

/// Why mapping a user failed: the plugin's own message, or its fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingFailed {
    /// The plugin refused, with this message for the user.
    Refused(String),
    /// The plugin trapped, timed out or is not loaded.
    Failed(String),
}

impl PluginSet {
    /// The loaded plugin called `name` that maps SSO users, if any.
    pub fn sso_mapper(&self, name: &str) -> Option<&Plugin> {
        self.plugins
            .iter()
            .find(|p| &*p.name == name && p.registered.sso_mapping)
    }

    fn mapper_or_fail(&self, name: &str) -> Result<&Plugin, MappingFailed> {
        self.sso_mapper(name).ok_or_else(|| {
            MappingFailed::Failed(format!("the mapping plugin {name} is not loaded"))
        })
    }

    pub async fn sso_remote_user_id(
        &self,
        mapper: &str,
        userinfo: &str,
    ) -> Result<String, MappingFailed> {
        let plugin = self.mapper_or_fail(mapper)?;
        let started = Instant::now();
        let answer = ask!(plugin, sso_mapping, call_get_remote_user_id(userinfo));
        let hook = SsoMappingCallback::GetRemoteUserId.into();
        record(plugin, hook, started, &answer, matches!(answer, Ok(Ok(_))));
        flatten(plugin, answer)
    }

    pub async fn sso_map_user_attributes(
        &self,
        mapper: &str,
        userinfo: &str,
        token: &str,
        failures: u32,
    ) -> Result<UserAttributes, MappingFailed> {
        let plugin = self.mapper_or_fail(mapper)?;
        let started = Instant::now();
        let answer = ask!(
            plugin,
            sso_mapping,
            call_map_user_attributes(userinfo, token, failures)
        );
        let hook = SsoMappingCallback::MapUserAttributes.into();
        record(plugin, hook, started, &answer, matches!(answer, Ok(Ok(_))));
        flatten(plugin, answer)
    }

    /// The extra login-response fields, a JSON object; a failure or an
    /// answer that is not an object gives none (the login goes on).
    pub async fn sso_extra_attributes(
        &self,
        mapper: &str,
        userinfo: &str,
        token: &str,
    ) -> serde_json::Map<String, serde_json::Value> {
        let Ok(plugin) = self.mapper_or_fail(mapper) else {
            return Default::default();
        };
        let started = Instant::now();
        let answer = ask!(
            plugin,
            sso_mapping,
            call_get_extra_attributes(userinfo, token)
        );
        record(
            plugin,
            SsoMappingCallback::GetExtraAttributes.into(),
            started,
            &answer,
            true,
        );
        answer
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default()
    }
}

fn flatten<T>(
    plugin: &Plugin,
    answer: Result<Result<T, String>, crate::Fault>,
) -> Result<T, MappingFailed> {
    match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(MappingFailed::Refused(message)),
        Err(fault) => Err(MappingFailed::Failed(format!(
            "the mapping plugin {} failed ({})",
            plugin.name,
            fault.as_str()
        ))),
    }
}
