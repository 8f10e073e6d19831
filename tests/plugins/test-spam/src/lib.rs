//! A configurable spam checker for the plugin host's tests.
//!
//! Configuration (every key optional):
//!
//! ```json
//! {
//!   "banned_words": ["spam"],
//!   "errcode": "M_FORBIDDEN",
//!   "deny_room_creators": ["@mallory:myelin.test"],
//!   "deny_invites_from": ["@mallory:myelin.test"],
//!   "deny_joins_to": ["!room:myelin.test"],
//!   "reject_config": false
//! }
//! ```
//!
//! * `check-event-for-spam`: rejects an event whose `body` contains a banned
//!   word (case-insensitively), with `errcode` and a message naming the
//!   word, and logs a line.
//! * `user-may-create-room` / `user-may-invite` / `user-may-join-room`:
//!   `M_FORBIDDEN` for the listed creators / inviters / rooms.
//! * `check-username-for-spam`: hides users whose ID contains `spammer`.
//! * `check-registration-for-spam`: denies usernames starting with `bad`
//!   (`M_FORBIDDEN`), shadow-bans those starting with `shadow`.
//! * `check-media-file-for-spam`: rejects an upload whose first bytes
//!   contain a banned word (ASCII case-insensitively), with `errcode`.
//! * `init` fails when `reject_config` is true or the JSON is invalid.

use std::cell::RefCell;

use myelin_sdk::{
    Callback, Event, Plugin, RegistrationVerdict, SpamChecker, SpamVerdict, UserProfile, log,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Config {
    banned_words: Vec<String>,
    errcode: String,
    deny_room_creators: Vec<String>,
    deny_invites_from: Vec<String>,
    deny_joins_to: Vec<String>,
    reject_config: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            banned_words: Vec::new(),
            errcode: "M_FORBIDDEN".to_owned(),
            deny_room_creators: Vec::new(),
            deny_invites_from: Vec::new(),
            deny_joins_to: Vec::new(),
            reject_config: false,
        }
    }
}

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::default();
}

fn with_config<R>(f: impl FnOnce(&Config) -> R) -> R {
    CONFIG.with(|config| f(&config.borrow()))
}

struct TestSpam;

impl Plugin for TestSpam {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let config: Config = myelin_sdk::parse_config(config)?;
        if config.reject_config {
            return Err("reject_config is set".to_owned());
        }
        log::debug(format!("test-spam configured: {config:?}"));
        CONFIG.with(|cell| *cell.borrow_mut() = config);
        Ok(vec![
            Callback::CheckEventForSpam,
            Callback::UserMayCreateRoom,
            Callback::UserMayInvite,
            Callback::UserMayJoinRoom,
            Callback::CheckUsernameForSpam,
            Callback::CheckRegistrationForSpam,
            Callback::CheckMediaFileForSpam,
        ])
    }
}

impl SpamChecker for TestSpam {
    fn check_event_for_spam(event: &Event) -> SpamVerdict {
        let content = event.content_json();
        let Some(body) = content["body"].as_str() else {
            return SpamVerdict::NotSpam;
        };
        let body = body.to_lowercase();
        with_config(|config| {
            let Some(word) = config
                .banned_words
                .iter()
                .find(|word| body.contains(&word.to_lowercase()))
            else {
                return SpamVerdict::NotSpam;
            };
            log::info(format!(
                "rejecting {} from {} in {}: banned word {word:?}",
                event.event_id, event.sender, event.room_id
            ));
            SpamVerdict::reject(
                &config.errcode,
                format!("message contains the banned word {word:?}"),
            )
        })
    }

    fn user_may_create_room(user_id: &str, _request: &str) -> SpamVerdict {
        with_config(|config| {
            if config.deny_room_creators.iter().any(|u| u == user_id) {
                SpamVerdict::forbidden(format!("{user_id} may not create rooms"))
            } else {
                SpamVerdict::NotSpam
            }
        })
    }

    fn user_may_invite(inviter: &str, _invitee: &str, _room_id: &str) -> SpamVerdict {
        with_config(|config| {
            if config.deny_invites_from.iter().any(|u| u == inviter) {
                SpamVerdict::forbidden(format!("{inviter} may not invite"))
            } else {
                SpamVerdict::NotSpam
            }
        })
    }

    fn user_may_join_room(_user_id: &str, room_id: &str, _is_invited: bool) -> SpamVerdict {
        with_config(|config| {
            if config.deny_joins_to.iter().any(|r| r == room_id) {
                SpamVerdict::forbidden(format!("{room_id} may not be joined"))
            } else {
                SpamVerdict::NotSpam
            }
        })
    }

    fn check_username_for_spam(profile: &UserProfile) -> bool {
        profile.user_id.contains("spammer")
    }

    fn check_registration_for_spam(
        _email: Option<&str>,
        username: Option<&str>,
        _request_info: &[(String, String)],
        _auth_provider_id: Option<&str>,
    ) -> RegistrationVerdict {
        match username {
            Some(name) if name.starts_with("bad") => {
                RegistrationVerdict::forbidden(format!("the username {name:?} is not allowed"))
            }
            Some(name) if name.starts_with("shadow") => RegistrationVerdict::ShadowBan,
            _ => RegistrationVerdict::Allow,
        }
    }

    fn check_media_file_for_spam(
        prefix: &[u8],
        content_type: Option<&str>,
        length: u64,
    ) -> SpamVerdict {
        let text = prefix.to_ascii_lowercase();
        with_config(|config| {
            let Some(word) = config.banned_words.iter().find(|word| {
                let word = word.to_ascii_lowercase();
                !word.is_empty() && text.windows(word.len()).any(|w| w == word.as_bytes())
            }) else {
                return SpamVerdict::NotSpam;
            };
            log::info(format!(
                "rejecting a {length}-byte {} upload: banned word {word:?}",
                content_type.unwrap_or("untyped")
            ));
            SpamVerdict::reject(
                &config.errcode,
                format!("file contains the banned word {word:?}"),
            )
        })
    }
}

myelin_sdk::export_plugin!(TestSpam);

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: &str) -> Event {
        Event {
            event_id: "$e".into(),
            room_id: "!r:myelin.test".into(),
            sender: "@alice:myelin.test".into(),
            event_type: "m.room.message".into(),
            state_key: None,
            origin_server_ts: 0,
            content: myelin_sdk::serde_json::json!({ "msgtype": "m.text", "body": body })
                .to_string(),
            unsigned: None,
        }
    }

    #[test]
    fn checks() {
        assert_eq!(
            TestSpam::init(r#"{"reject_config": true}"#),
            Err("reject_config is set".to_owned())
        );
        assert!(TestSpam::init("{").is_err());
        TestSpam::init(r#"{"banned_words": ["spam"], "errcode": "M_SPAM"}"#).unwrap();
        assert_eq!(
            TestSpam::check_event_for_spam(&event("Buy SPAM now")),
            SpamVerdict::reject("M_SPAM", "message contains the banned word \"spam\"")
        );
        assert_eq!(
            TestSpam::check_event_for_spam(&event("hello")),
            SpamVerdict::NotSpam
        );
        assert_eq!(
            TestSpam::check_registration_for_spam(None, Some("shadowy"), &[], None),
            RegistrationVerdict::ShadowBan
        );
        assert_eq!(
            TestSpam::check_media_file_for_spam(b"all about SPAM", Some("text/plain"), 14),
            SpamVerdict::reject("M_SPAM", "file contains the banned word \"spam\"")
        );
        assert_eq!(
            TestSpam::check_media_file_for_spam(b"\x89PNG", Some("image/png"), 4),
            SpamVerdict::NotSpam
        );
    }
}
