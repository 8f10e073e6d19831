//! Exercises the third-party rules callbacks and the `actions` grant, keyed
//! on the body of `m.room.message` events:
//!
//! * `check_event_allowed`: `deny me` is refused (`M_RULES_DENIED`); a body
//!   containing `[shout]` is replaced by its upper-case form; `change type`
//!   answers with a replacement of another type (a plugin fault).
//! * `on_new_event`: `trap after` traps, `loop after` loops; `echo` makes
//!   the plugin answer in the room, as the sender, with `echo: <body>`
//!   (through `actions::send_event`); `join for <user> <room>` makes the
//!   plugin try to join `<user>` to `<room>` and report the error code it
//!   got in the room as an `m.notice` and in the log (`join result:
//!   <errcode or ok>`).
//!   `notice me` sends the sender a server notice.
//! * `on_create_room`: a room named `forbidden` is refused
//!   (`M_RULES_NO_ROOM`); any other gets the topic `set by rules`.
//! * `check_visibility_can_be_modified`: publishing is refused.
//!
//! Configuration (for `bench/rules-overhead.sh`): `{"replace_all": true}`
//! replaces every message's body by its upper-case form;
//! `{"register": ["on_new_event", ...]}` registers only the callbacks named
//! (default: all four).

use std::sync::OnceLock;

use myelin_sdk::{
    ActionError, Callback, Event, EventDecision, Plugin, Rejection, RulesCallback, ThirdPartyRules,
    actions, log,
    serde_json::{self, json},
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    replace_all: bool,
    register: Option<Vec<String>>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

const ALL: [(&str, RulesCallback); 4] = [
    ("check_event_allowed", RulesCallback::CheckEventAllowed),
    ("on_new_event", RulesCallback::OnNewEvent),
    ("on_create_room", RulesCallback::OnCreateRoom),
    (
        "check_visibility_can_be_modified",
        RulesCallback::CheckVisibilityCanBeModified,
    ),
];

struct TestRules;

impl Plugin for TestRules {
    fn init(config: &str) -> Result<Vec<Callback>, String> {
        let config: Config = myelin_sdk::parse_config(config)?;
        if let Some(names) = &config.register
            && let Some(unknown) = names.iter().find(|n| !ALL.iter().any(|(a, _)| a == n))
        {
            return Err(format!("unknown callback {unknown}"));
        }
        CONFIG.get_or_init(|| config);
        Ok(Vec::new())
    }
}

fn body(event: &Event) -> Option<String> {
    if event.event_type != "m.room.message" {
        return None;
    }
    event.content_json()["body"].as_str().map(str::to_owned)
}

fn errcode(err: ActionError) -> String {
    match err {
        ActionError::NotGranted => "not-granted".to_owned(),
        ActionError::Refused(Rejection { errcode, .. }) => errcode,
        ActionError::Failed(why) => format!("failed: {why}"),
    }
}

impl ThirdPartyRules for TestRules {
    fn register() -> Vec<RulesCallback> {
        let wanted = CONFIG.get().and_then(|c| c.register.as_ref());
        ALL.iter()
            .filter(|(name, _)| wanted.is_none_or(|w| w.iter().any(|n| n == name)))
            .map(|(_, callback)| *callback)
            .collect()
    }

    fn check_event_allowed(event: &Event) -> EventDecision {
        if CONFIG.get().is_some_and(|c| c.replace_all)
            && let Some(body) = body(event)
        {
            let mut content = event.content_json();
            content["body"] = body.to_uppercase().into();
            return EventDecision::replace_content(event, &content);
        }
        match body(event).as_deref() {
            Some("deny me") => {
                EventDecision::Deny(Rejection::new("M_RULES_DENIED", "the rules say no"))
            }
            Some("change type") => EventDecision::Replace(Event {
                event_type: "m.room.name".to_owned(),
                ..event.clone()
            }),
            Some(body) if body.contains("[shout]") => {
                let mut content = event.content_json();
                content["body"] = body.replace("[shout]", "").trim().to_uppercase().into();
                EventDecision::replace_content(event, &content)
            }
            _ => EventDecision::Allow,
        }
    }

    fn on_new_event(event: &Event) {
        let Some(body) = body(event) else { return };
        match body.as_str() {
            "trap after" => panic!("asked to trap"),
            "loop after" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "notice me" => {
                let notice = json!({ "msgtype": "m.notice", "body": "you asked" });
                if let Err(err) = actions::send_server_notice(&event.sender, &notice) {
                    log::info(format!("notice result: {}", errcode(err)));
                }
            }
            "echo" => {
                let _ = actions::send_event(
                    &event.sender,
                    &event.room_id,
                    "m.room.message",
                    None,
                    &json!({ "msgtype": "m.notice", "body": format!("echo: {body}") }),
                );
            }
            _ => {
                if let Some(rest) = body.strip_prefix("join for ") {
                    let mut parts = rest.split_whitespace();
                    let (Some(user), Some(room)) = (parts.next(), parts.next()) else {
                        return;
                    };
                    let result =
                        match actions::update_room_membership(user, user, room, "join", None) {
                            Ok(_) => "ok".to_owned(),
                            Err(err) => errcode(err),
                        };
                    log::info(format!("join result: {result}"));
                    let _ = actions::send_event(
                        &event.sender,
                        &event.room_id,
                        "m.room.message",
                        None,
                        &json!({ "msgtype": "m.notice", "body": format!("join result: {result}") }),
                    );
                }
            }
        }
    }

    fn on_create_room(
        _requester: &str,
        request: &str,
        _is_requester_admin: bool,
    ) -> Result<Option<String>, Rejection> {
        let mut request: serde_json::Value = serde_json::from_str(request)
            .map_err(|e| Rejection::new("M_BAD_JSON", e.to_string()))?;
        if request["name"] == "forbidden" {
            return Err(Rejection::new("M_RULES_NO_ROOM", "no rooms by that name"));
        }
        request["topic"] = "set by rules".into();
        Ok(Some(request.to_string()))
    }

    fn check_visibility_can_be_modified(_room_id: &str, _new_visibility: &str) -> bool {
        false
    }
}

myelin_sdk::export_plugin!(TestRules: ThirdPartyRules);
