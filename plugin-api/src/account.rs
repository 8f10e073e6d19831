//! The account validity and account data hook families, with Synapse's
//! semantics: `is_user_expired` takes the first plugin that knows; the
//! notifications reach every plugin that registered them, and their
//! failures are only logged.

use std::time::Instant;

pub use crate::bindings::exports::myelin::plugin::{
    account_data::DataCallback, account_validity::ValidityCallback,
};
use crate::{
    PluginSet, config::OnError, password_auth::PluginFailed, plugin::Plugin, stats::record,
};

impl PluginSet {
    pub fn wants_validity(&self, callback: ValidityCallback) -> bool {
        self.plugins
            .iter()
            .any(|p| p.registered.validity.contains(&callback))
    }

    fn validity_plugins(&self, callback: ValidityCallback) -> impl Iterator<Item = &Plugin> {
        self.plugins
            .iter()
            .filter(move |p| p.registered.validity.contains(&callback))
    }

    /// Whether the user's account has expired: the first plugin that
    /// answers decides. A plugin that fails with `on_error: deny` refuses
    /// the request (`Err`).
    pub async fn is_user_expired(&self, user_id: &str) -> Result<bool, PluginFailed> {
        let callback = ValidityCallback::IsUserExpired;
        for plugin in self.validity_plugins(callback) {
            let started = Instant::now();
            let answer = ask!(plugin, validity, call_is_user_expired(user_id));
            record(
                plugin,
                callback.into(),
                started,
                &answer,
                answer != Ok(Some(true)),
            );
            match answer {
                Ok(Some(expired)) => return Ok(expired),
                Ok(None) => {}
                Err(_) if plugin.on_error == OnError::Allow => {}
                Err(_) => return Err(PluginFailed),
            }
        }
        Ok(false)
    }

    pub async fn on_user_registration(&self, user_id: &str) {
        let callback = ValidityCallback::OnUserRegistration;
        tell_each!(
            self.validity_plugins(callback),
            validity,
            callback,
            call_on_user_registration(user_id)
        );
    }

    pub async fn on_user_login(
        &self,
        user_id: &str,
        auth_provider_type: Option<&str>,
        auth_provider_id: Option<&str>,
    ) {
        let callback = ValidityCallback::OnUserLogin;
        tell_each!(
            self.validity_plugins(callback),
            validity,
            callback,
            call_on_user_login(user_id, auth_provider_type, auth_provider_id)
        );
    }

    pub fn wants_account_data_updates(&self) -> bool {
        self.plugins.iter().any(|p| {
            p.registered
                .account_data
                .contains(&DataCallback::OnAccountDataUpdated)
        })
    }

    /// After a user's account data changed (`content` is JSON).
    pub async fn on_account_data_updated(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        data_type: &str,
        content: &str,
    ) {
        let callback = DataCallback::OnAccountDataUpdated;
        tell_each!(
            self.plugins
                .iter()
                .filter(|p| p.registered.account_data.contains(&callback)),
            account_data,
            callback,
            call_on_account_data_updated(user_id, room_id, data_type, content)
        );
    }
}
