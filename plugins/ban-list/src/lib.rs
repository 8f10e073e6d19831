//! Myelin's ban-list follower: enforces the `m.ban` rules of moderation
//! policy rooms (Mjolnir / Draupnir ban lists) on this server.
//!
//! Configuration:
//!
//! ```yaml
//! config:
//!   policy_rooms: ["!abcdef:example.org"]   # room IDs (not aliases)
//!   refresh_seconds: 5                       # optional: how long the rules
//!                                            # read are trusted (default 5)
//! grants:
//!   queries: true                            # required
//! ```
//!
//! The plugin reads the current `m.policy.rule.user`, `m.policy.rule.server`
//! and `m.policy.rule.room` state of each policy room (and the legacy
//! `m.room.rule.*` and `org.matrix.mjolnir.rule.*` types), keeps the rules
//! whose `recommendation` is `m.ban` (or the legacy `org.matrix.mjolnir.ban`)
//! and matches their `entity` as a glob (`*` any run of characters, `?` one
//! character; ASCII case ignored):
//!
//! - user rules against user IDs, server rules against the server name of
//!   user IDs (`@a:evil.example` is on `evil.example`);
//! - `check_event_for_spam`: events from banned users or users of banned
//!   servers are refused (`M_FORBIDDEN`, with the rule's reason), except
//!   state events in the policy rooms themselves, so a moderator can always
//!   lift a ban;
//! - `user_may_invite`: invites by or of a banned user or server, or to a
//!   banned room, are refused;
//! - `user_may_join_room`: banned users and servers may not join, and nobody
//!   may join a banned room.
//!
//! Rules with empty content (unset or redacted) are ignored. Each plugin
//! instance caches the rules it read for `refresh_seconds`, so a new or
//! lifted rule applies within that delay.
//!
//! Without the `queries` grant, `init` refuses the configuration (the server
//! does not start, a reload is refused). When the rooms cannot be read later
//! (a database error), the rules read last stay in force; an instance that
//! has never read them fails the call, which the plugin's `on_error` decides.

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::Rc,
    sync::OnceLock,
    time::{Duration, Instant},
};

use myelin_sdk::{
    Callback, Event, HostError, Plugin, SpamChecker, SpamVerdict, log, queries, serde_json::Value,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    policy_rooms: Vec<String>,
    #[serde(default = "default_refresh")]
    refresh_seconds: u64,
}

fn default_refresh() -> u64 {
    5
}

struct Settings {
    policy_rooms: Vec<String>,
    refresh: Duration,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn settings() -> &'static Settings {
    SETTINGS.get().expect("init ran before any callback")
}

/// The three kinds of entity a rule may name, with their event types.
const KINDS: [&str; 3] = ["user", "server", "room"];
/// Current and legacy prefixes of the rule event types, as Draupnir reads.
const PREFIXES: [&str; 3] = ["m.policy.rule", "m.room.rule", "org.matrix.mjolnir.rule"];
/// The recommendations meaning "ban".
const BAN: [&str; 2] = ["m.ban", "org.matrix.mjolnir.ban"];

struct Rule {
    entity: String,
    reason: String,
    policy_room: String,
}

/// The rules of one kind: literal entities looked up, globs tried in turn.
#[derive(Default)]
struct RuleSet {
    exact: HashMap<String, Rule>,
    globs: Vec<(Vec<char>, Rule)>,
}

impl RuleSet {
    fn add(&mut self, rule: Rule) {
        let pattern = rule.entity.to_ascii_lowercase();
        if pattern.contains(['*', '?']) {
            self.globs.push((pattern.chars().collect(), rule));
        } else {
            self.exact.entry(pattern).or_insert(rule);
        }
    }

    fn find(&self, subject: &str) -> Option<&Rule> {
        let subject = subject.to_ascii_lowercase();
        if let Some(rule) = self.exact.get(&subject) {
            return Some(rule);
        }
        if self.globs.is_empty() {
            return None;
        }
        let subject: Vec<char> = subject.chars().collect();
        self.globs
            .iter()
            .find(|(pattern, _)| glob(pattern, &subject))
            .map(|(_, rule)| rule)
    }

    fn len(&self) -> usize {
        self.exact.len() + self.globs.len()
    }
}

/// Glob-style matching as the Matrix appendix defines it: `*` matches any
/// run of characters (none included), `?` exactly one.
fn glob(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The last `*` seen and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            // Let that `*` take one more character.
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[derive(Default)]
struct Rules {
    users: RuleSet,
    servers: RuleSet,
    rooms: RuleSet,
}

impl Rules {
    fn set_mut(&mut self, kind: &str) -> &mut RuleSet {
        match kind {
            "user" => &mut self.users,
            "server" => &mut self.servers,
            _ => &mut self.rooms,
        }
    }

    /// Why `user_id` is banned, if a user rule or a server rule names them.
    fn user_ban(&self, user_id: &str) -> Option<String> {
        if let Some(rule) = self.users.find(user_id) {
            return Some(format!("{user_id} is banned {}", rule.because()));
        }
        let server = user_id.split_once(':').map(|(_, s)| s)?;
        self.servers
            .find(server)
            .map(|rule| format!("the server {server} is banned {}", rule.because()))
    }

    fn room_ban(&self, room_id: &str) -> Option<String> {
        if room_id.is_empty() {
            return None;
        }
        self.rooms
            .find(room_id)
            .map(|rule| format!("the room {room_id} is banned {}", rule.because()))
    }
}

impl Rule {
    fn because(&self) -> String {
        let entity = &self.entity;
        let room = &self.policy_room;
        format!("by the policy list {room} (rule {entity}): {}", self.reason)
    }
}

/// Reads every ban rule of the policy rooms.
fn read_rules(settings: &Settings) -> Result<Rules, HostError> {
    let mut rules = Rules::default();
    for room in &settings.policy_rooms {
        for kind in KINDS {
            for prefix in PREFIXES {
                for event in queries::room_state_events(room, &format!("{prefix}.{kind}"))? {
                    if let Some(rule) = parse_rule(&event) {
                        rules.set_mut(kind).add(rule);
                    }
                }
            }
        }
    }
    Ok(rules)
}

/// A rule event's ban, if it is one; unset and redacted rules (empty
/// content) and other recommendations give `None`.
fn parse_rule(event: &Event) -> Option<Rule> {
    let content = event.content_json();
    let entity = content["entity"].as_str().filter(|e| !e.is_empty())?;
    let recommendation = content["recommendation"].as_str()?;
    if !BAN.contains(&recommendation) {
        return None;
    }
    let reason = match &content["reason"] {
        Value::String(reason) if !reason.is_empty() => reason.clone(),
        _ => "no reason given".to_owned(),
    };
    Some(Rule {
        entity: entity.to_owned(),
        reason,
        policy_room: event.room_id.clone(),
    })
}

/// This instance's rules and when they were read.
struct Cache {
    read_at: Instant,
    rules: Rc<Rules>,
}

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

/// The rules in force: the cached ones while younger than
/// `refresh_seconds`, otherwise read again.
fn rules() -> Rc<Rules> {
    let settings = settings();
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(cached) = &*cache
            && cached.read_at.elapsed() < settings.refresh
        {
            return cached.rules.clone();
        }
        let now = Instant::now();
        match read_rules(settings) {
            Ok(rules) => {
                let rules = Rc::new(rules);
                *cache = Some(Cache {
                    read_at: now,
                    rules: rules.clone(),
                });
                rules
            }
            Err(err) => match &mut *cache {
                Some(cached) => {
                    log::warn(format!(
                        "cannot read the policy rooms ({err:?}); the rules read before stay in force"
                    ));
                    cached.read_at = now;
                    cached.rules.clone()
                }
                None => {
                    log::error(format!(
                        "cannot read the policy rooms ({err:?}); failing the call (on_error decides)"
                    ));
                    panic!("ban-list: cannot read the policy rooms: {err:?}");
                }
            },
        }
    })
}

fn refuse(what: &str, reason: String) -> SpamVerdict {
    log::info(format!("refused {what}: {reason}"));
    SpamVerdict::forbidden(reason)
}

struct BanList;

impl Plugin for BanList {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let config: Config = myelin_sdk::parse_config(config)?;
        if config.policy_rooms.is_empty() {
            return Err("`policy_rooms` lists no room".into());
        }
        if let Some(room) = config
            .policy_rooms
            .iter()
            .find(|r| !r.starts_with('!') || !r.contains(':'))
        {
            return Err(format!(
                "`policy_rooms`: {room:?} is not a room ID (`!opaque:server`; aliases are not resolved)"
            ));
        }
        let settings = SETTINGS.get_or_init(|| Settings {
            policy_rooms: config.policy_rooms,
            refresh: Duration::from_secs(config.refresh_seconds),
        });
        // Read the rules now: this checks the grant, and warms the cache.
        let now = Instant::now();
        match read_rules(settings) {
            Ok(rules) => {
                log::debug(format!(
                    "following {} policy room(s): {} user, {} server and {} room ban(s)",
                    settings.policy_rooms.len(),
                    rules.users.len(),
                    rules.servers.len(),
                    rules.rooms.len()
                ));
                CACHE.with(|cache| {
                    *cache.borrow_mut() = Some(Cache {
                        read_at: now,
                        rules: Rc::new(rules),
                    })
                });
            }
            Err(HostError::NotGranted) => {
                return Err(
                    "the ban list reads the policy rooms through the `queries` grant: add `grants: {queries: true}`"
                        .into(),
                );
            }
            Err(err) => log::warn(format!(
                "cannot read the policy rooms yet ({err:?}); trying again at the first check"
            )),
        }
        for room in &settings.policy_rooms {
            if let Ok(None) = queries::room_state(room, "m.room.create", "") {
                log::warn(format!(
                    "the policy room {room} is not known to this server; its rules apply once it is"
                ));
            }
        }
        Ok(vec![
            Callback::CheckEventForSpam,
            Callback::UserMayInvite,
            Callback::UserMayJoinRoom,
        ])
    }
}

impl SpamChecker for BanList {
    fn check_event_for_spam(event: &Event) -> SpamVerdict {
        // Rules are state in the policy rooms: never block them, so a ban
        // can always be lifted.
        if event.state_key.is_some() && settings().policy_rooms.contains(&event.room_id) {
            return SpamVerdict::NotSpam;
        }
        match rules().user_ban(&event.sender) {
            Some(reason) => refuse(
                &format!("event {} from {}", event.event_id, event.sender),
                reason,
            ),
            None => SpamVerdict::NotSpam,
        }
    }

    fn user_may_invite(inviter: &str, invitee: &str, room_id: &str) -> SpamVerdict {
        let rules = rules();
        let reason = rules
            .user_ban(inviter)
            .or_else(|| rules.user_ban(invitee))
            .or_else(|| rules.room_ban(room_id));
        match reason {
            Some(reason) => refuse(
                &format!("the invite of {invitee} by {inviter} to {room_id}"),
                reason,
            ),
            None => SpamVerdict::NotSpam,
        }
    }

    fn user_may_join_room(user_id: &str, room_id: &str, _is_invited: bool) -> SpamVerdict {
        let rules = rules();
        match rules.user_ban(user_id).or_else(|| rules.room_ban(room_id)) {
            Some(reason) => refuse(&format!("the join of {user_id} to {room_id}"), reason),
            None => SpamVerdict::NotSpam,
        }
    }
}

myelin_sdk::export_plugin!(BanList);

#[cfg(test)]
mod tests {
    use super::glob;

    fn matches(pattern: &str, text: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        glob(&p, &t)
    }

    #[test]
    fn globs() {
        assert!(matches("@spammer:example.org", "@spammer:example.org"));
        assert!(!matches("@spammer:example.org", "@spammer2:example.org"));
        assert!(matches("@spam*:example.org", "@spam:example.org"));
        assert!(matches("@spam*:example.org", "@spammer:example.org"));
        assert!(!matches("@spam*:example.org", "@spammer:example.com"));
        assert!(matches("*.evil.example", "a.b.evil.example"));
        assert!(!matches("*.evil.example", "evil.example"));
        assert!(matches("@bot?:x", "@bot1:x"));
        assert!(!matches("@bot?:x", "@bot:x"));
        assert!(!matches("@bot?:x", "@bot12:x"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXXbYYbZc"));
        assert!(!matches("a*b*c", "aXXbYYbZ"));
        assert!(matches("é?", "éü"));
    }
}
