//! The spam-checker hook family, with Synapse's ordering: plugins are asked
//! in the operator's order, only if they registered the callback, and the
//! first answer that is not "allow" decides; later plugins are not asked.
//! A failed call resolves by the plugin's `on_error` policy.

use std::time::Instant;

use crate::{
    PluginSet,
    bindings::myelin::plugin::types::{
        Callback, Event, RegistrationVerdict, Rejection, SpamVerdict, UserProfile,
    },
    config::OnError,
    plugin::{Fault, Plugin},
    stats::{Outcome, callback_name},
};

/// The outcome of a spam check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Reject { errcode: String, message: String },
}

/// The outcome of a registration check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Allow,
    Deny { errcode: String, message: String },
    ShadowBan,
}

/// What a refused call looks like to the user when the plugin failed.
pub(crate) fn failed_plugin() -> Verdict {
    Verdict::Reject {
        errcode: "M_FORBIDDEN".to_owned(),
        message: "This request was refused because a server plugin failed".to_owned(),
    }
}

/// Matrix error codes are upper case with underscores (`M_FORBIDDEN`, or a
/// namespaced `COM_EXAMPLE_CODE`); anything else is a malformed answer.
pub(crate) fn valid_errcode(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 255
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn verdict(answer: SpamVerdict) -> Result<Verdict, Fault> {
    match answer {
        SpamVerdict::NotSpam => Ok(Verdict::Allow),
        SpamVerdict::Reject(Rejection { errcode, message }) if valid_errcode(&errcode) => {
            Ok(Verdict::Reject { errcode, message })
        }
        SpamVerdict::Reject(_) => Err(Fault::Malformed),
    }
}

/// Asks, in order, each plugin that registered `$callback`, until one
/// refuses; a failure resolves by that plugin's `on_error`.
macro_rules! first_refusal {
    ($set:expr, $callback:expr, $method:ident($($arg:expr),*)) => {{
        let mut outcome = Verdict::Allow;
        for plugin in $set.plugins.iter() {
            if !plugin.implements($callback) {
                continue;
            }
            let started = Instant::now();
            let answer = ask!(plugin, spam, $method($($arg),*)).and_then(verdict);
            plugin.stats.record($callback, match &answer {
                Ok(Verdict::Allow) => Outcome::Pass,
                Ok(_) => Outcome::Refuse,
                Err(fault) => Outcome::Fault(*fault),
            }, started.elapsed());
            match answer {
                Ok(Verdict::Allow) => continue,
                Ok(refusal) => {
                    outcome = refusal;
                    break;
                }
                Err(fault) => {
                    if let Some(refusal) = on_fault(plugin, $callback, fault) {
                        outcome = refusal;
                        break;
                    }
                }
            }
        }
        outcome
    }};
}

/// Logs a failed call; with `on_error: deny` it becomes a refusal.
fn on_fault(plugin: &Plugin, callback: Callback, fault: Fault) -> Option<Verdict> {
    plugin
        .stats
        .record_error(format!("{}: {}", callback_name(callback), fault.as_str()));
    tracing::warn!(plugin = &*plugin.name, ?callback, fault = fault.as_str(), on_error = ?plugin.on_error, "plugin failed");
    (plugin.on_error == OnError::Deny).then(failed_plugin)
}

impl PluginSet {
    pub async fn check_event_for_spam(&self, event: &Event) -> Verdict {
        first_refusal!(
            self,
            Callback::CheckEventForSpam,
            call_check_event_for_spam(event)
        )
    }

    pub async fn user_may_join_room(
        &self,
        user_id: &str,
        room_id: &str,
        is_invited: bool,
    ) -> Verdict {
        first_refusal!(
            self,
            Callback::UserMayJoinRoom,
            call_user_may_join_room(user_id, room_id, is_invited)
        )
    }

    pub async fn user_may_invite(&self, inviter: &str, invitee: &str, room_id: &str) -> Verdict {
        first_refusal!(
            self,
            Callback::UserMayInvite,
            call_user_may_invite(inviter, invitee, room_id)
        )
    }

    pub async fn user_may_send_threepid_invite(
        &self,
        inviter: &str,
        medium: &str,
        address: &str,
        room_id: &str,
    ) -> Verdict {
        first_refusal!(
            self,
            Callback::UserMaySendThreepidInvite,
            call_user_may_send_threepid_invite(inviter, medium, address, room_id)
        )
    }

    pub async fn user_may_create_room(&self, user_id: &str, request: &str) -> Verdict {
        first_refusal!(
            self,
            Callback::UserMayCreateRoom,
            call_user_may_create_room(user_id, request)
        )
    }

    pub async fn user_may_create_room_alias(&self, user_id: &str, alias: &str) -> Verdict {
        first_refusal!(
            self,
            Callback::UserMayCreateRoomAlias,
            call_user_may_create_room_alias(user_id, alias)
        )
    }

    pub async fn user_may_publish_room(&self, user_id: &str, room_id: &str) -> Verdict {
        first_refusal!(
            self,
            Callback::UserMayPublishRoom,
            call_user_may_publish_room(user_id, room_id)
        )
    }

    /// An uploaded file: its first bytes (at most 1 MiB), its content type
    /// and total length.
    pub async fn check_media_file_for_spam(
        &self,
        prefix: &[u8],
        content_type: Option<&str>,
        length: u64,
    ) -> Verdict {
        first_refusal!(
            self,
            Callback::CheckMediaFileForSpam,
            call_check_media_file_for_spam(prefix, content_type, length)
        )
    }

    /// Whether to leave the user out of user directory results. A failed
    /// plugin with `on_error: deny` hides the user.
    pub async fn check_username_for_spam(&self, profile: &UserProfile) -> bool {
        for plugin in self.plugins.iter() {
            if !plugin.implements(Callback::CheckUsernameForSpam) {
                continue;
            }
            let started = Instant::now();
            let answer = ask!(plugin, spam, call_check_username_for_spam(profile));
            let outcome = match &answer {
                Ok(false) => Outcome::Pass,
                Ok(true) => Outcome::Refuse,
                Err(fault) => Outcome::Fault(*fault),
            };
            plugin
                .stats
                .record(Callback::CheckUsernameForSpam, outcome, started.elapsed());
            match answer {
                Ok(false) => continue,
                Ok(true) => return true,
                Err(fault) => {
                    if on_fault(plugin, Callback::CheckUsernameForSpam, fault).is_some() {
                        return true;
                    }
                }
            }
        }
        false
    }

    pub async fn check_registration_for_spam(
        &self,
        email: Option<&str>,
        username: Option<&str>,
        request_info: &[(String, String)],
        auth_provider_id: Option<&str>,
    ) -> Registration {
        for plugin in self.plugins.iter() {
            let callback = Callback::CheckRegistrationForSpam;
            if !plugin.implements(callback) {
                continue;
            }
            let started = Instant::now();
            let answer = ask!(
                plugin,
                spam,
                call_check_registration_for_spam(email, username, request_info, auth_provider_id)
            );
            let outcome = match &answer {
                Ok(RegistrationVerdict::Allow) => Outcome::Pass,
                Ok(RegistrationVerdict::Deny(r)) if !valid_errcode(&r.errcode) => {
                    Outcome::Fault(Fault::Malformed)
                }
                Ok(_) => Outcome::Refuse,
                Err(fault) => Outcome::Fault(*fault),
            };
            plugin.stats.record(callback, outcome, started.elapsed());
            let fault = match answer {
                Ok(RegistrationVerdict::Allow) => continue,
                Ok(RegistrationVerdict::ShadowBan) => return Registration::ShadowBan,
                Ok(RegistrationVerdict::Deny(Rejection { errcode, message }))
                    if valid_errcode(&errcode) =>
                {
                    return Registration::Deny { errcode, message };
                }
                Ok(RegistrationVerdict::Deny(_)) => Fault::Malformed,
                Err(fault) => fault,
            };
            if let Some(Verdict::Reject { errcode, message }) = on_fault(plugin, callback, fault) {
                return Registration::Deny { errcode, message };
            }
        }
        Registration::Allow
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
        let event = Event {
            event_id: String::new(),
            room_id: String::new(),
            sender: String::new(),
            event_type: String::new(),
            state_key: None,
            origin_server_ts: 0,
            content: "{}".into(),
            unsigned: None,
        };
        is_send(&set.check_event_for_spam(&event));
        is_send(&set.check_registration_for_spam(None, None, &[], None));
        is_send(&set.check_media_file_for_spam(&[], None, 0));
    }

    #[test]
    fn errcodes_are_checked() {
        assert!(valid_errcode("M_FORBIDDEN"));
        assert!(!valid_errcode("m_forbidden"));
        assert!(!valid_errcode(""));
    }
}
