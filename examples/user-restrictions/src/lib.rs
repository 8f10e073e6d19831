//! A port of Synapse's `synapse-user-restrictions` module: rules of regular
//! expressions on user IDs allow or deny users to invite others and to
//! create rooms.
//!
//! Configuration (its entry under `modules:`; the keys are the module's):
//!
//! ```yaml
//! config:
//!   rules:                                # required; earlier rules win
//!     - match: "@admin.*:example.org"     # must match the whole user ID
//!       allow: [invite, create_room]
//!     - match: "@assistant.*:example.org"
//!       allow: [invite]
//!   default_deny: [invite, create_room]   # when no rule decides; default []
//! ```
//!
//! For a permission sought by a user, the rules are tried in order: the
//! first whose `match` matches the whole user ID and whose `allow` or `deny`
//! names the permission decides (`allow` first, if a rule names it in both).
//! When none decides, the permission is denied if `default_deny` names it
//! and allowed otherwise. The permissions are `invite` (asked of the
//! inviter, by `user-may-invite`) and `create_room` (`user-may-create-room`).
//!
//! As in Synapse, server admins are never asked about: their invites and
//! room creations skip the spam checkers.
//!
//! A configuration that does not parse — a bad regular expression, an
//! unknown permission, a missing `rules` — is refused by `init` with a
//! message naming the place, and the server does not start.

use std::sync::OnceLock;

use myelin_sdk::{Callback, Plugin, SpamChecker, SpamVerdict, log, serde_json::Value};
use regex::Regex;
use serde::Deserialize;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Permission {
    Invite,
    CreateRoom,
}

impl Permission {
    const ALL: [(&'static str, Permission); 2] = [
        ("create_room", Permission::CreateRoom),
        ("invite", Permission::Invite),
    ];

    fn parse(name: &str, place: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, permission)| *permission)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "{place}: {name:?} is not a permission recognised by the user restrictions \
                     plugin; try one of: {}",
                    known.join(", ")
                )
            })
    }

    fn name(self) -> &'static str {
        match self {
            Permission::Invite => "invite",
            Permission::CreateRoom => "create_room",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    rules: Vec<RawRule>,
    #[serde(default)]
    default_deny: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    pattern: String,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

struct Rule {
    /// The `match` pattern, anchored at both ends: it must match the whole
    /// user ID, as Python's `re.fullmatch` does.
    pattern: Regex,
    allow: Vec<Permission>,
    deny: Vec<Permission>,
}

struct Config {
    rules: Vec<Rule>,
    default_deny: Vec<Permission>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

fn permissions(names: &[String], place: &str) -> Result<Vec<Permission>, String> {
    names
        .iter()
        .map(|name| Permission::parse(name, place))
        .collect()
}

fn parse(config: &str) -> Result<Config, String> {
    // `null` (no `config:` at all) is a configuration without `rules`.
    let value: Value = myelin_sdk::parse_config(config)?;
    if value.is_null() {
        return Err("invalid configuration: the `rules` list is required".to_owned());
    }
    let raw: RawConfig = myelin_sdk::parse_config(config)?;
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (index, rule) in raw.rules.into_iter().enumerate() {
        let place = format!("rules[{index}]");
        let invalid = |err: regex::Error| {
            format!(
                "{place}.match: {:?} is not a valid regular expression: {err}",
                rule.pattern
            )
        };
        // Checked alone first, so that the anchoring cannot change what an
        // unbalanced pattern means.
        Regex::new(&rule.pattern).map_err(invalid)?;
        let pattern = Regex::new(&format!(r"\A(?:{})\z", rule.pattern)).map_err(invalid)?;
        rules.push(Rule {
            pattern,
            allow: permissions(&rule.allow, &format!("{place}.allow"))?,
            deny: permissions(&rule.deny, &format!("{place}.deny"))?,
        });
    }
    Ok(Config {
        rules,
        default_deny: permissions(&raw.default_deny.unwrap_or_default(), "default_deny")?,
    })
}

impl Config {
    /// Whether the rules let `user_id` use `permission`.
    fn allows(&self, user_id: &str, permission: Permission) -> bool {
        for rule in &self.rules {
            if !rule.pattern.is_match(user_id) {
                continue;
            }
            if rule.allow.contains(&permission) {
                return true;
            }
            if rule.deny.contains(&permission) {
                return false;
            }
        }
        !self.default_deny.contains(&permission)
    }

    fn check(&self, user_id: &str, permission: Permission, message: &str) -> SpamVerdict {
        if self.allows(user_id, permission) {
            return SpamVerdict::NotSpam;
        }
        log::info(format!(
            "refused {user_id} the permission {}",
            permission.name()
        ));
        SpamVerdict::forbidden(message)
    }
}

fn config() -> &'static Config {
    CONFIG.get().expect("init ran before any callback")
}

struct UserRestrictions;

impl Plugin for UserRestrictions {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let config = parse(config)?;
        CONFIG.get_or_init(|| config);
        Ok(vec![Callback::UserMayInvite, Callback::UserMayCreateRoom])
    }
}

impl SpamChecker for UserRestrictions {
    fn user_may_invite(inviter: &str, _invitee: &str, _room_id: &str) -> SpamVerdict {
        config().check(
            inviter,
            Permission::Invite,
            "You are not permitted to invite users",
        )
    }

    fn user_may_create_room(user_id: &str, _request: &str) -> SpamVerdict {
        config().check(
            user_id,
            Permission::CreateRoom,
            "You are not permitted to create rooms",
        )
    }
}

myelin_sdk::export_plugin!(UserRestrictions);
