//! The third-party event rules hook family, with Synapse's semantics:
//! plugins are asked in the operator's order, only if they registered the
//! callback. Checks stop at the first refusal; notifications (`on-*`) reach
//! every plugin and their failures are only logged. A failed check resolves
//! by the plugin's `on_error` policy.

use std::time::Instant;

pub use crate::bindings::exports::myelin::plugin::third_party_rules::{
    EventDecision, RulesCallback,
};
use crate::{
    PluginSet,
    bindings::myelin::plugin::types::{Event, Rejection, UserProfile},
    config::OnError,
    plugin::{Fault, Plugin},
    spam::{Verdict, failed_plugin, valid_errcode},
    stats::record,
};

/// The plugins' answer to a new event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAllowed {
    /// Allowed; `Some` carries the content (JSON text) that replaces the
    /// event's, after every plugin had its say.
    Allow(Option<String>),
    Deny {
        errcode: String,
        message: String,
    },
}

/// A plugin may change an event's content only.
fn valid_replacement(original: &Event, replacement: &Event) -> bool {
    replacement.event_type == original.event_type
        && replacement.room_id == original.room_id
        && replacement.sender == original.sender
        && replacement.state_key == original.state_key
        && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&replacement.content)
            .is_ok()
}

/// Asks, in order, each plugin that registered a yes/no callback until one
/// says no (or fails with `on_error: deny`); `true` when all agree.
macro_rules! all_agree {
    ($set:expr, $callback:expr, $method:ident($($arg:expr),*)) => {{
        let callback = $callback;
        let mut agreed = true;
        for plugin in $set.rule_plugins(callback) {
            let started = Instant::now();
            let answer = ask!(plugin, rules, $method($($arg),*));
            record(plugin, callback.into(), started, &answer, answer != Ok(false));
            match answer {
                Ok(true) => {}
                Err(_) if plugin.on_error == OnError::Allow => {}
                _ => {
                    agreed = false;
                    break;
                }
            }
        }
        agreed
    }};
}

/// Tells every plugin that registered a notification callback.
macro_rules! tell_all {
    ($set:expr, $callback:expr, $method:ident($($arg:expr),*)) => {
        tell_each!($set.rule_plugins($callback), rules, $callback, $method($($arg),*))
    };
}

/// The refusal a failed plugin causes, or `None` with `on_error: allow`.
fn on_fault(plugin: &Plugin) -> Option<Verdict> {
    (plugin.on_error == OnError::Deny).then(failed_plugin)
}

impl PluginSet {
    /// Whether any plugin registered this third-party rules callback.
    pub fn wants_rule(&self, callback: RulesCallback) -> bool {
        self.plugins
            .iter()
            .any(|p| p.registered.rules.contains(&callback))
    }

    fn rule_plugins(&self, callback: RulesCallback) -> impl Iterator<Item = &Plugin> {
        self.plugins
            .iter()
            .filter(move |p| p.registered.rules.contains(&callback))
    }

    /// `check_event_allowed` for an event about to be signed and stored.
    /// Each plugin sees the event as the previous ones left it.
    pub async fn check_event_allowed(&self, event: &Event) -> EventAllowed {
        let callback = RulesCallback::CheckEventAllowed;
        let mut current = event.clone();
        let mut replaced = false;
        for plugin in self.rule_plugins(callback) {
            let started = Instant::now();
            let answer =
                ask!(plugin, rules, call_check_event_allowed(&current)).and_then(|decision| {
                    match decision {
                        EventDecision::Replace(new) if !valid_replacement(&current, &new) => {
                            Err(Fault::Malformed)
                        }
                        EventDecision::Deny(Rejection { errcode, .. })
                            if !valid_errcode(&errcode) =>
                        {
                            Err(Fault::Malformed)
                        }
                        decision => Ok(decision),
                    }
                });
            let pass = !matches!(answer, Ok(EventDecision::Deny(_)));
            record(plugin, callback.into(), started, &answer, pass);
            match answer {
                Ok(EventDecision::Allow) => {}
                Ok(EventDecision::Replace(new)) => {
                    current.content = new.content;
                    replaced = true;
                }
                Ok(EventDecision::Deny(Rejection { errcode, message })) => {
                    return EventAllowed::Deny { errcode, message };
                }
                Err(_) => {
                    if let Some(Verdict::Reject { errcode, message }) = on_fault(plugin) {
                        return EventAllowed::Deny { errcode, message };
                    }
                }
            }
        }
        EventAllowed::Allow(replaced.then_some(current.content))
    }

    /// `on_create_room`: the (maybe rewritten) `createRoom` request, as JSON
    /// text, or the refusal.
    pub async fn on_create_room(
        &self,
        requester: &str,
        request: String,
        is_requester_admin: bool,
    ) -> Result<String, Verdict> {
        let callback = RulesCallback::OnCreateRoom;
        let mut request = request;
        for plugin in self.rule_plugins(callback) {
            let started = Instant::now();
            let answer = ask!(
                plugin,
                rules,
                call_on_create_room(requester, &request, is_requester_admin)
            )
            .and_then(|answer| match answer {
                Ok(Some(new))
                    if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&new)
                        .is_err() =>
                {
                    Err(Fault::Malformed)
                }
                Err(Rejection { errcode, .. }) if !valid_errcode(&errcode) => Err(Fault::Malformed),
                answer => Ok(answer),
            });
            record(
                plugin,
                callback.into(),
                started,
                &answer,
                matches!(answer, Ok(Ok(_))),
            );
            match answer {
                Ok(Ok(Some(new))) => request = new,
                Ok(Ok(None)) => {}
                Ok(Err(Rejection { errcode, message })) => {
                    return Err(Verdict::Reject { errcode, message });
                }
                Err(_) => {
                    if let Some(refusal) = on_fault(plugin) {
                        return Err(refusal);
                    }
                }
            }
        }
        Ok(request)
    }

    pub async fn check_threepid_can_be_invited(
        &self,
        medium: &str,
        address: &str,
        room_id: &str,
    ) -> bool {
        all_agree!(
            self,
            RulesCallback::CheckThreepidCanBeInvited,
            call_check_threepid_can_be_invited(medium, address, room_id)
        )
    }

    /// `new_visibility` is `public` or `private`.
    pub async fn check_visibility_can_be_modified(
        &self,
        room_id: &str,
        new_visibility: &str,
    ) -> bool {
        all_agree!(
            self,
            RulesCallback::CheckVisibilityCanBeModified,
            call_check_visibility_can_be_modified(room_id, new_visibility)
        )
    }

    pub async fn check_can_shutdown_room(&self, user_id: Option<&str>, room_id: &str) -> bool {
        all_agree!(
            self,
            RulesCallback::CheckCanShutdownRoom,
            call_check_can_shutdown_room(user_id, room_id)
        )
    }

    pub async fn check_can_deactivate_user(&self, user_id: &str, by_admin: bool) -> bool {
        all_agree!(
            self,
            RulesCallback::CheckCanDeactivateUser,
            call_check_can_deactivate_user(user_id, by_admin)
        )
    }

    /// `on_new_event`, after the event is stored. Callers run it in the
    /// background so the sender never waits for it.
    pub async fn on_new_event(&self, event: &Event) {
        tell_all!(self, RulesCallback::OnNewEvent, call_on_new_event(event))
    }

    pub async fn on_profile_update(
        &self,
        user_id: &str,
        profile: &UserProfile,
        by_admin: bool,
        deactivation: bool,
    ) {
        tell_all!(
            self,
            RulesCallback::OnProfileUpdate,
            call_on_profile_update(user_id, profile, by_admin, deactivation)
        )
    }

    pub async fn on_user_deactivation_status_changed(
        &self,
        user_id: &str,
        deactivated: bool,
        by_admin: bool,
    ) {
        tell_all!(
            self,
            RulesCallback::OnUserDeactivationStatusChanged,
            call_on_user_deactivation_status_changed(user_id, deactivated, by_admin)
        )
    }

    pub async fn on_threepid_bind(&self, user_id: &str, medium: &str, address: &str) {
        tell_all!(
            self,
            RulesCallback::OnThreepidBind,
            call_on_threepid_bind(user_id, medium, address)
        )
    }

    pub async fn on_add_user_third_party_identifier(
        &self,
        user_id: &str,
        medium: &str,
        address: &str,
    ) {
        tell_all!(
            self,
            RulesCallback::OnAddUserThirdPartyIdentifier,
            call_on_add_user_third_party_identifier(user_id, medium, address)
        )
    }

    pub async fn on_remove_user_third_party_identifier(
        &self,
        user_id: &str,
        medium: &str,
        address: &str,
    ) {
        tell_all!(
            self,
            RulesCallback::OnRemoveUserThirdPartyIdentifier,
            call_on_remove_user_third_party_identifier(user_id, medium, address)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(content: &str) -> Event {
        Event {
            event_id: "$a".into(),
            room_id: "!r:hs".into(),
            sender: "@u:hs".into(),
            event_type: "m.room.message".into(),
            state_key: None,
            origin_server_ts: 1,
            content: content.into(),
            unsigned: None,
        }
    }

    #[test]
    fn a_replacement_may_change_only_the_content() {
        let original = event("{}");
        assert!(valid_replacement(&original, &event(r#"{"body":"x"}"#)));
        assert!(
            !valid_replacement(&original, &event("[1]")),
            "not an object"
        );
        let mut other_type = event("{}");
        other_type.event_type = "m.room.name".into();
        assert!(!valid_replacement(&original, &other_type));
        let mut other_sender = event("{}");
        other_sender.sender = "@admin:hs".into();
        assert!(!valid_replacement(&original, &other_sender));
        let mut now_state = event("{}");
        now_state.state_key = Some(String::new());
        assert!(!valid_replacement(&original, &now_state));
    }

    #[test]
    fn rule_futures_are_send() {
        fn is_send<T: Send>(_: &T) {}
        let set = PluginSet::default();
        is_send(&set.check_event_allowed(&event("{}")));
        is_send(&set.on_new_event(&event("{}")));
        is_send(&set.check_can_deactivate_user("@u:hs", false));
    }
}
