//! Myelin's spam filter: what operators reach for first.
//!
//! Configuration (every key optional):
//!
//! ```yaml
//! config:
//!   banned_words: [viagra, "free crypto"]   # case-insensitive, in message
//!                                           # bodies, room names and topics
//!   banned_patterns: ['(?i)bit\.ly/\w+']    # regular expressions, same texts
//!   blocked_users: ["@spam*:example.org"]   # `*` wildcards, on senders,
//!                                           # inviters, invitees, joiners
//!   blocked_servers: ["evil.example", "*.evil.example"]
//!   invites_per_hour: 20                    # per inviter; needs the kv grant
//!   username_patterns: ['^admin', 'support'] # registrations refused
//!   errcode: M_FORBIDDEN                    # for refused events
//!   report:                                 # a notice per refusal
//!     room_id: "!moderation:example.org"
//!     sender: "@spam-filter:example.org"    # a local user joined there
//! ```
//!
//! Every refusal is logged with its reason (target `myelin::plugin`). With
//! `report`, each refusal is also reported as an `m.notice` in the room
//! `room_id`, sent by `sender` through the `actions` grant, which `report`
//! needs. The report is sent during the check, so the plugin's deadline
//! (`limits.timeout_ms`) must cover sending a message. Events of `sender`
//! in the report room are never refused (the reports name banned words),
//! and refusals of events in the report room itself are only logged:
//! sending there from a check that holds that room's lock would wait for
//! the lock until the deadline.

use std::{sync::OnceLock, time::SystemTime};

use myelin_sdk::{
    ActionError, Callback, Event, Plugin, RegistrationVerdict, SpamChecker, SpamVerdict, actions,
    kv, log, serde_json::json,
};
use regex::Regex;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    banned_words: Vec<String>,
    #[serde(default)]
    banned_patterns: Vec<String>,
    #[serde(default)]
    blocked_users: Vec<String>,
    #[serde(default)]
    blocked_servers: Vec<String>,
    invites_per_hour: Option<u32>,
    #[serde(default)]
    username_patterns: Vec<String>,
    errcode: Option<String>,
    report: Option<Report>,
}

/// Where refusals are reported.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    room_id: String,
    sender: String,
}

/// The configuration, compiled once per instance.
struct Filter {
    words: Vec<String>,
    patterns: Vec<Regex>,
    blocked_users: Vec<String>,
    blocked_servers: Vec<String>,
    invites_per_hour: Option<u32>,
    usernames: Vec<Regex>,
    errcode: String,
    report: Option<Report>,
}

static FILTER: OnceLock<Filter> = OnceLock::new();

fn compile(patterns: &[String], key: &str) -> Result<Vec<Regex>, String> {
    patterns
        .iter()
        .map(|p| Regex::new(p).map_err(|e| format!("{key}: {p:?} is not a valid pattern: {e}")))
        .collect()
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

impl Filter {
    fn blocked(&self, user_id: &str) -> Option<String> {
        if let Some(pattern) = self.blocked_users.iter().find(|p| glob(p, user_id)) {
            return Some(format!("{user_id} is blocked ({pattern})"));
        }
        let server = user_id.split_once(':').map(|(_, s)| s).unwrap_or_default();
        self.blocked_servers
            .iter()
            .find(|p| glob(p, server))
            .map(|pattern| format!("the server {server} is blocked ({pattern})"))
    }

    fn banned_text(&self, text: &str) -> Option<String> {
        let lower = text.to_lowercase();
        if let Some(word) = self.words.iter().find(|w| lower.contains(w.as_str())) {
            return Some(format!("contains the banned word {word:?}"));
        }
        self.patterns
            .iter()
            .find(|p| p.is_match(text))
            .map(|p| format!("matches the banned pattern {:?}", p.as_str()))
    }

    /// Refuses `what` (concerning `room`, if any) for `reason`: logged,
    /// and reported to the report room if there is one.
    fn refuse(&self, what: &str, room: Option<&str>, reason: String) -> SpamVerdict {
        log::warn(format!("refused {what}: {reason}"));
        self.report(what, room, &reason);
        SpamVerdict::reject(self.errcode.clone(), reason)
    }

    /// Sends a notice of a refusal into the report room.
    fn report(&self, what: &str, room: Option<&str>, reason: &str) {
        let Some(report) = &self.report else {
            return;
        };
        if room == Some(report.room_id.as_str()) {
            // The check may be holding the report room's lock (an event
            // sent there): a message sent now would wait for it.
            return;
        }
        let content = json!({
            "msgtype": "m.notice",
            "body": format!("Spam filter refused {what}: {reason}"),
        });
        if let Err(err) = actions::send_event(
            &report.sender,
            &report.room_id,
            "m.room.message",
            None,
            &content,
        ) {
            log::error(format!(
                "could not report to {} as {}: {err:?}",
                report.room_id, report.sender
            ));
        }
    }

    /// Whether `event` is one of the reports (or anything else the report
    /// sender says in the report room), which is never refused.
    fn is_report(&self, event: &Event) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| event.sender == r.sender && event.room_id == r.room_id)
    }
}

/// Checks the `report` section: the IDs' shape, and the `actions` grant
/// (asked by reading the sender's account data, which changes nothing).
fn check_report(report: &Report) -> Result<(), String> {
    if !report.room_id.starts_with('!') || !report.room_id.contains(':') {
        return Err(format!(
            "report.room_id: {:?} is not a room ID (`!opaque:server`; aliases are not accepted)",
            report.room_id
        ));
    }
    if !report.sender.starts_with('@') || !report.sender.contains(':') {
        return Err(format!(
            "report.sender: {:?} is not a user ID",
            report.sender
        ));
    }
    match actions::account_data(&report.sender, None, "org.myelin.spam_filter.probe") {
        Err(ActionError::NotGranted) => Err(
            "report: sending reports needs the `actions` grant (grants: {actions: true})"
                .to_owned(),
        ),
        // The server may not be running yet (the first load), or the user
        // may not exist yet: reports will say so when they fail.
        _ => Ok(()),
    }
}

fn filter() -> &'static Filter {
    FILTER.get().expect("init ran before any callback")
}

struct SpamFilter;

impl Plugin for SpamFilter {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let config: Config = myelin_sdk::parse_config(config)?;
        if let Some(report) = &config.report {
            check_report(report)?;
        }
        let filter = Filter {
            words: config
                .banned_words
                .iter()
                .map(|w| w.to_lowercase())
                .collect(),
            patterns: compile(&config.banned_patterns, "banned_patterns")?,
            blocked_users: config.blocked_users,
            blocked_servers: config.blocked_servers,
            invites_per_hour: config.invites_per_hour,
            usernames: compile(&config.username_patterns, "username_patterns")?,
            errcode: config.errcode.unwrap_or_else(|| "M_FORBIDDEN".to_owned()),
            report: config.report,
        };
        FILTER.get_or_init(|| filter);
        Ok(vec![
            Callback::CheckEventForSpam,
            Callback::UserMayInvite,
            Callback::UserMayJoinRoom,
            Callback::UserMayCreateRoom,
            Callback::CheckRegistrationForSpam,
        ])
    }
}

impl SpamChecker for SpamFilter {
    fn check_event_for_spam(event: &Event) -> SpamVerdict {
        let filter = filter();
        if filter.is_report(event) {
            return SpamVerdict::NotSpam;
        }
        let what = format!(
            "an {} event from {} in {}",
            event.event_type, event.sender, event.room_id
        );
        let room = Some(event.room_id.as_str());
        if let Some(reason) = filter.blocked(&event.sender) {
            return filter.refuse(&what, room, reason);
        }
        let field = match event.event_type.as_str() {
            "m.room.message" => "body",
            "m.room.name" => "name",
            "m.room.topic" => "topic",
            _ => return SpamVerdict::NotSpam,
        };
        match event.content_json()[field]
            .as_str()
            .and_then(|text| filter.banned_text(text))
        {
            Some(reason) => filter.refuse(&what, room, format!("the {field} {reason}")),
            None => SpamVerdict::NotSpam,
        }
    }

    fn user_may_invite(inviter: &str, invitee: &str, room_id: &str) -> SpamVerdict {
        let filter = filter();
        // `room_id` is empty for the invites of `createRoom`.
        let (what, room) = match room_id {
            "" => (
                format!("the invite of {invitee} by {inviter} to a new room"),
                None,
            ),
            room => (
                format!("the invite of {invitee} by {inviter} to {room}"),
                Some(room),
            ),
        };
        if let Some(reason) = filter.blocked(inviter).or_else(|| filter.blocked(invitee)) {
            return filter.refuse(&what, room, reason);
        }
        let Some(limit) = filter.invites_per_hour else {
            return SpamVerdict::NotSpam;
        };
        let hour = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() / 3600)
            .unwrap_or_default();
        let key = format!("invites/{inviter}");
        // The count of this hour, stored as "hour:count".
        let sent = match kv::get(&key) {
            Ok(Some(value)) => String::from_utf8_lossy(&value)
                .split_once(':')
                .filter(|(h, _)| h.parse() == Ok(hour))
                .and_then(|(_, n)| n.parse::<u32>().ok())
                .unwrap_or(0),
            Ok(None) => 0,
            Err(err) => {
                log::error(format!(
                    "invite rate limit unavailable (grant kv?): {err:?}"
                ));
                return SpamVerdict::NotSpam;
            }
        };
        if sent >= limit {
            return filter.refuse(
                &what,
                room,
                format!("{inviter} has sent {sent} invites this hour"),
            );
        }
        if let Err(err) = kv::set(&key, format!("{hour}:{}", sent + 1).as_bytes()) {
            log::error(format!("could not count an invite: {err:?}"));
        }
        SpamVerdict::NotSpam
    }

    fn user_may_join_room(user_id: &str, room_id: &str, _is_invited: bool) -> SpamVerdict {
        let filter = filter();
        match filter.blocked(user_id) {
            Some(reason) => filter.refuse(
                &format!("the join of {user_id} to {room_id}"),
                Some(room_id),
                reason,
            ),
            None => SpamVerdict::NotSpam,
        }
    }

    fn user_may_create_room(user_id: &str, _request: &str) -> SpamVerdict {
        let filter = filter();
        match filter.blocked(user_id) {
            Some(reason) => filter.refuse(&format!("a room creation by {user_id}"), None, reason),
            None => SpamVerdict::NotSpam,
        }
    }

    fn check_registration_for_spam(
        _email: Option<&str>,
        username: Option<&str>,
        _request_info: &[(String, String)],
        _auth_provider_id: Option<&str>,
    ) -> RegistrationVerdict {
        let filter = filter();
        let Some(username) = username else {
            return RegistrationVerdict::Allow;
        };
        match filter.usernames.iter().find(|p| p.is_match(username)) {
            Some(pattern) => {
                let what = format!("the registration of {username:?}");
                let reason = format!("the username matches {:?}", pattern.as_str());
                log::warn(format!("refused {what}: {reason}"));
                filter.report(&what, None, &reason);
                RegistrationVerdict::forbidden(format!("the username {username:?} is not allowed"))
            }
            None => RegistrationVerdict::Allow,
        }
    }
}

myelin_sdk::export_plugin!(SpamFilter);
